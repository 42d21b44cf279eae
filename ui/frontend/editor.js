// Loom studio YAML editor: CodeMirror 6 + YAML language + lint + autocomplete,
// bundled by build.mjs (esbuild) into ui/static/vendor/codemirror-yaml.js,
// which exposes one global: window.LoomEditor.
//
//   const ed = LoomEditor.create(parentEl, {
//     doc: "text",                       // initial text
//     onChange(text) {},                 // after every user edit (debounce yourself if needed)
//     lint: async (text) => [            // optional; called ~400 ms after edits stop
//       {line: 2, col: 3, endLine, endCol, message: "…", severity: "error"|"warning"|"info"}],
//     completions: (ctx) => [...],       // optional; see completionSource() below
//     onSave(text) {},                   // optional; Ctrl/Cmd-S
//     readOnly: false,
//   });
//   ed.getValue(); ed.setValue(text); ed.setDiagnostics(list); ed.focus(); ed.destroy();
//
// line/col are 1-based. col omitted = whole line. setValue() does not call onChange.

import { EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, highlightSpecialChars } from "@codemirror/view";
import { EditorState, Annotation, Compartment } from "@codemirror/state";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { indentOnInput, syntaxHighlighting, defaultHighlightStyle, bracketMatching,
  foldGutter, foldKeymap, indentUnit } from "@codemirror/language";
import { searchKeymap, highlightSelectionMatches } from "@codemirror/search";
import { autocompletion, completionKeymap, closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
import { linter, lintGutter, lintKeymap, setDiagnostics, forceLinting } from "@codemirror/lint";
import { yaml } from "@codemirror/lang-yaml";

const External = Annotation.define();

function clamp(n, lo, hi) { return Math.max(lo, Math.min(hi, n)); }

// Loom diagnostics ({line, col, endLine, endCol, message, severity}) -> CodeMirror ranges.
function toCM(doc, list) {
  const out = [];
  for (const d of list || []) {
    if (!d || d.message == null) continue;
    const lineNo = clamp(parseInt(d.line, 10) || 1, 1, doc.lines);
    const line = doc.line(lineNo);
    let from, to;
    if (d.col != null && d.col !== "") {
      from = line.from + clamp((parseInt(d.col, 10) || 1) - 1, 0, line.length);
      if (d.endLine != null || d.endCol != null) {
        const el = doc.line(clamp(parseInt(d.endLine, 10) || lineNo, lineNo, doc.lines));
        to = el.from + clamp((parseInt(d.endCol, 10) || el.length + 1) - 1, 0, el.length);
      } else {
        // underline the token starting at col
        const rest = line.text.slice(from - line.from);
        const m = /^[^\s:]+/.exec(rest);
        to = from + (m ? m[0].length : 0);
      }
    } else {
      const indent = /^\s*/.exec(line.text)[0].length;
      from = line.from + indent;
      to = line.to;
    }
    if (to < from) to = from;
    let sev = String(d.severity || "error").toLowerCase();
    if (sev === "warn") sev = "warning";
    if (!["error", "warning", "info", "hint"].includes(sev)) sev = "error";
    out.push({ from, to, severity: sev, message: String(d.message), source: d.source || undefined });
  }
  return out;
}

// YAML key path at the cursor, from indentation: ["forms", "order", "fields"].
function yamlPath(doc, pos) {
  const line = doc.lineAt(pos);
  let indent = /^\s*/.exec(line.text)[0].length;
  const path = [];
  for (let n = line.number - 1; n >= 1 && indent > 0; n--) {
    const t = doc.line(n).text;
    if (!t.trim() || /^\s*#/.test(t)) continue;
    const ind = /^\s*/.exec(t)[0].length;
    if (ind < indent) {
      const m = /^\s*(?:-\s+)?([^\s:#][^:#]*?)\s*:(\s|$)/.exec(t);
      if (m) path.unshift(m[1].replace(/^["']|["']$/g, ""));
      else if (/^\s*-\s*$/.test(t) || /^\s*-\s/.test(t)) path.unshift("-");
      indent = ind;
    }
  }
  return path;
}

// Wrap the caller's completions(ctx) into a CodeMirror completion source.
// ctx = {text, pos, line, col, lineText, before, word, path, explicit, cm}
// It may return (sync or async): null, an array of strings or
// {label, type, detail, info, apply}, or a CodeMirror CompletionResult {from, options}.
function completionSource(fn) {
  return async (context) => {
    const word = context.matchBefore(/[\w\-.$\u4e00-\u9fff]*/);
    const doc = context.state.doc;
    const line = doc.lineAt(context.pos);
    const ctx = {
      text: doc.toString(),
      pos: context.pos,
      line: line.number,
      col: context.pos - line.from + 1,
      lineText: line.text,
      before: line.text.slice(0, context.pos - line.from),
      word: word ? word.text : "",
      path: yamlPath(doc, context.pos),
      explicit: context.explicit,
      cm: context,
    };
    if (!context.explicit && (!word || word.from === word.to) && !/:\s*$|-\s*$/.test(ctx.before)) return null;
    let res = await fn(ctx);
    if (!res) return null;
    if (Array.isArray(res)) {
      const options = res.map((o) => (typeof o === "string" ? { label: o } : o));
      if (!options.length) return null;
      return { from: word ? word.from : context.pos, options, validFor: /^[\w\-.$\u4e00-\u9fff]*$/ };
    }
    return res;
  };
}

const loomTheme = EditorView.theme({
  "&": { height: "100%", fontSize: "13px", backgroundColor: "#fff" },
  ".cm-scroller": { fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "Noto Sans Mono CJK SC", monospace', lineHeight: "1.55" },
  "&.cm-focused": { outline: "2px solid #1f6feb", outlineOffset: "-2px" },
  ".cm-gutters": { backgroundColor: "#f6f7f9", color: "#6b7280", borderRight: "1px solid #e5e7eb" },
  ".cm-activeLine": { backgroundColor: "#f3f6fc" },
  ".cm-activeLineGutter": { backgroundColor: "#e8eefb" },
  ".cm-tooltip": { fontFamily: "inherit" },
});

function create(parent, opts = {}) {
  if (typeof parent === "string") parent = document.querySelector(parent);
  if (!parent) throw new Error("LoomEditor.create: parent element not found");
  const readOnly = new Compartment();
  const extensions = [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    foldGutter(),
    drawSelection(),
    EditorState.allowMultipleSelections.of(true),
    indentOnInput(),
    indentUnit.of("  "),
    EditorState.tabSize.of(2),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    bracketMatching(),
    closeBrackets(),
    highlightActiveLine(),
    highlightSelectionMatches(),
    EditorView.lineWrapping,
    yaml(),
    loomTheme,
    lintGutter(),
    readOnly.of([EditorState.readOnly.of(!!opts.readOnly), EditorView.editable.of(!opts.readOnly)]),
    keymap.of([
      ...(opts.onSave ? [{ key: "Mod-s", preventDefault: true, run: (v) => { opts.onSave(v.state.doc.toString()); return true; } }] : []),
      ...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap, ...historyKeymap,
      ...foldKeymap, ...completionKeymap, ...lintKeymap, indentWithTab,
    ]),
    EditorView.updateListener.of((u) => {
      if (!u.docChanged || !opts.onChange) return;
      if (u.transactions.some((t) => t.annotation(External))) return;
      opts.onChange(u.state.doc.toString());
    }),
  ];
  if (opts.lint) {
    extensions.push(linter(async (view) => {
      const text = view.state.doc.toString();
      try {
        const list = await opts.lint(text);
        // the doc may have changed while we waited; positions are clamped in toCM
        return toCM(view.state.doc, list);
      } catch (e) {
        console.error("LoomEditor lint failed", e);
        return [];
      }
    }, { delay: opts.lintDelay ?? 400 }));
  }
  extensions.push(autocompletion({
    override: opts.completions ? [completionSource(opts.completions)] : undefined,
    activateOnTyping: true,
  }));

  const view = new EditorView({
    state: EditorState.create({ doc: opts.doc || "", extensions }),
    parent,
  });
  parent.classList.add("loom-editor-mounted");

  return {
    view,
    getValue: () => view.state.doc.toString(),
    setValue(text) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: String(text ?? "") },
        annotations: External.of(true),
      });
    },
    setDiagnostics(list) {
      view.dispatch(setDiagnostics(view.state, toCM(view.state.doc, list)));
    },
    relint() { forceLinting(view); },
    setReadOnly(ro) {
      view.dispatch({ effects: readOnly.reconfigure([EditorState.readOnly.of(!!ro), EditorView.editable.of(!ro)]) });
    },
    focus() { view.focus(); },
    destroy() { view.destroy(); parent.classList.remove("loom-editor-mounted"); },
  };
}

window.LoomEditor = { create, version: "1" };
