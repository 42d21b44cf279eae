/* Loom pages: behaviour of the generated record pages (CSP-safe, no inline scripts).
 *  - form[data-form-state]: after each change, POST the form to its _form_state URL and show/hide,
 *    require and lock fields exactly as the server will enforce them.
 *  - [data-picker-search]: Enter searches instead of submitting the form.
 *  - [data-apply-columns]: the list's column chooser rewrites ?cols=.
 *  - textarea[data-mention-source]: the comment box's @ picker (colleagues who can read the record).
 *  - [data-file-field]: attachment/image widgets upload each chosen file to the JSON API.
 *  - htmx: a 2xx with HX-Redirect navigates; toasts come from loom.js.
 */
(function () {
  "use strict";
  var doc = document;

  function csrf() { return doc.body && doc.body.getAttribute("data-csrf") || ""; }

  // ---- live form state -------------------------------------------------------
  var timers = new WeakMap();
  var seq = new WeakMap();
  function applyState(form, state) {
    var fields = (state && state.fields) || {};
    Object.keys(fields).forEach(function (name) {
      var st = fields[name];
      var box = form.querySelector('[data-field="' + CSS.escape(name) + '"]');
      if (!box) return;
      box.hidden = !st.visible;
      box.classList.toggle("required", !!st.required);
      var lab = box.querySelector(".field-label");
      if (lab) lab.classList.toggle("required", !!st.required);
      box.querySelectorAll("input, select, textarea").forEach(function (inp) {
        if (inp.type === "hidden" || inp.hasAttribute("data-picker-search")) return;
        if (st.required) inp.setAttribute("aria-required", "true"); else inp.removeAttribute("aria-required");
        if (inp.tagName === "SELECT" || inp.type === "checkbox" || inp.type === "radio") {
          inp.disabled = false; // submit its value; server decides read-only
          inp.toggleAttribute("aria-readonly", !!st.readonly);
        } else {
          inp.readOnly = !!st.readonly;
        }
      });
    });
    var secs = (state && state.sections) || {};
    Object.keys(secs).forEach(function (id) {
      form.querySelectorAll('[data-section="' + CSS.escape(id) + '"]').forEach(function (s) { s.hidden = !secs[id]; });
    });
    form.setAttribute("data-state-ready", String((seq.get(form) || 0)));
  }
  function refreshState(form) {
    var url = form.getAttribute("data-form-state");
    if (!url) return;
    var n = (seq.get(form) || 0) + 1;
    seq.set(form, n);
    var body = new FormData(form);
    fetch(url, { method: "POST", body: body, credentials: "same-origin",
                 headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (state) { if (seq.get(form) === n) applyState(form, state); })
      .catch(function (err) { if (window.console) console.warn("Loom form state:", err); });
  }
  function schedule(form, delay) {
    clearTimeout(timers.get(form));
    timers.set(form, setTimeout(function () { refreshState(form); }, delay));
  }
  doc.addEventListener("change", function (e) {
    var form = e.target.closest && e.target.closest("form[data-form-state]");
    if (form && !e.target.hasAttribute("data-picker-search")) schedule(form, 30);
  });
  doc.addEventListener("input", function (e) {
    var form = e.target.closest && e.target.closest("form[data-form-state]");
    if (form && !e.target.hasAttribute("data-picker-search")) schedule(form, 350);
  });
  // a htmx swap inside the form (cascade/link options) changes values too
  doc.addEventListener("htmx:afterSwap", function (e) {
    var form = e.target && e.target.closest && e.target.closest("form[data-form-state]");
    if (form) schedule(form, 30);
  });

  // ---- pickers ---------------------------------------------------------------
  doc.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && e.target.hasAttribute && e.target.hasAttribute("data-picker-search")) {
      e.preventDefault();
      if (window.htmx) window.htmx.trigger(e.target, "search");
    }
  });

  // ---- saving: disable the button while the page posts -------------------------
  doc.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches("form.record-form")) return;
    var btn = form.querySelector("button[type=submit]");
    if (btn) { btn.classList.add("htmx-request"); btn.setAttribute("aria-busy", "true"); }
  });

  // ---- list: column chooser ----------------------------------------------------
  doc.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("[data-apply-columns]");
    if (!btn) return;
    var box = btn.closest(".column-chooser");
    var cols = Array.prototype.slice.call(box.querySelectorAll(".col-choice:checked")).map(function (c) { return c.value; });
    var url = new URL(window.location.href);
    url.searchParams.set("cols", cols.join(","));
    url.searchParams.delete("page");
    window.location.assign(url.toString());
  });

  // ---- child tables: add / remove rows --------------------------------------------
  doc.addEventListener("click", function (e) {
    var add = e.target.closest && e.target.closest("[data-add-row]");
    if (add) {
      var box = doc.querySelector('[data-child-editor="' + CSS.escape(add.getAttribute("data-add-row")) + '"]');
      var tpl = box && box.querySelector("template");
      if (!tpl) return;
      var n = parseInt(add.getAttribute("data-next-index") || "0", 10);
      add.setAttribute("data-next-index", String(n + 1));
      var html = tpl.innerHTML.replace(/__i__/g, String(n));
      var tbody = box.querySelector("tbody");
      var holder = doc.createElement("tbody");
      holder.innerHTML = html;
      var row = holder.querySelector("tr");
      tbody.appendChild(row);
      var first = row.querySelector("input:not([type=hidden]), select");
      if (first) first.focus();
      return;
    }
    var rm = e.target.closest && e.target.closest("[data-remove-row]");
    if (rm) {
      var tr = rm.closest("tr");
      var form = tr.closest("form");
      tr.remove();
      if (form && form.hasAttribute("data-form-state")) schedule(form, 30);
    }
  });

  // ---- attachment / image fields: upload on choose, list, remove ------------------------
  // Each chosen file goes to the JSON API at once (XHR for progress, cookie + CSRF header);
  // the hidden input keeps the ids the record save sends.  Errors show under the field.
  function fileIds(box) {
    var input = box.querySelector("[data-file-value]");
    try { return JSON.parse(input.value || "[]"); } catch (err) { return []; }
  }
  function setFileIds(box, ids) {
    var input = box.querySelector("[data-file-value]");
    input.value = JSON.stringify(ids);
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }
  function fileError(box, message) {
    var field = box.closest(".field");
    var err = field && field.querySelector(".field-error");
    if (err) err.textContent = message || "";
    if (field) field.classList.toggle("has-error", !!message);
    var input = box.querySelector("[data-file-input]");
    if (input) { if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid"); }
  }
  function fileItem(box, file) {
    var li = box.querySelector("template").content.firstElementChild.cloneNode(true);
    li.setAttribute("data-file-id", String(file.id));
    var link = li.querySelector(".file-name");
    link.textContent = file.name;
    link.href = file.url + "?download=1";
    li.querySelector(".file-size").textContent = humanSize(file.size);
    var rm = li.querySelector("[data-file-remove]");
    rm.setAttribute("aria-label", box.getAttribute("data-text-remove") + " " + file.name);
    var img = li.querySelector(".file-thumb");
    if (img) {
      if (/^image\/(png|jpeg|gif|webp)$/.test(file.content_type)) { img.src = file.url; img.alt = file.name; img.hidden = false; }
      else img.hidden = true;
    }
    return li;
  }
  function humanSize(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1).replace(/\.0$/, "") + "MB";
    if (n >= 1024) return (n / 1024).toFixed(1).replace(/\.0$/, "") + "KB";
    return n + "B";
  }
  function uploadOne(box, file) {
    return new Promise(function (resolve) {
      var bar = box.querySelector(".file-progress");
      var progress = bar.querySelector("progress");
      var label = bar.querySelector(".file-progress-text");
      bar.hidden = false;
      progress.value = 0;
      label.textContent = box.getAttribute("data-text-uploading") + " " + file.name;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", box.getAttribute("data-upload-url"));
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) progress.value = Math.round(100 * e.loaded / e.total); };
      xhr.onload = function () {
        bar.hidden = true;
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if (xhr.status === 201 && body) { resolve({ file: body }); return; }
        var msg = body && body.errors && body.errors[0] && body.errors[0].message;
        resolve({ error: msg || box.getAttribute("data-text-failed") });
      };
      xhr.onerror = function () { bar.hidden = true; resolve({ error: box.getAttribute("data-text-failed") }); };
      var data = new FormData();
      data.append("file", file, file.name);
      xhr.send(data);
    });
  }
  doc.addEventListener("change", function (e) {
    var input = e.target;
    if (!input.matches || !input.matches("[data-file-input]")) return;
    e.stopPropagation();
    var box = input.closest("[data-file-field]");
    var files = Array.prototype.slice.call(input.files || []);
    input.value = "";
    if (!files.length) return;
    var max = parseInt(box.getAttribute("data-max-files") || "1", 10);
    var list = box.querySelector(".file-list");
    fileError(box, "");
    var chain = Promise.resolve();
    files.forEach(function (file) {
      chain = chain.then(function () {
        if (max > 1 && fileIds(box).length >= max) { fileError(box, box.getAttribute("data-text-too-many")); return; }
        return uploadOne(box, file).then(function (res) {
          if (res.error) { fileError(box, res.error); return; }
          var ids = max > 1 ? fileIds(box) : [];
          if (max <= 1) list.innerHTML = "";
          ids.push(res.file.id);
          list.appendChild(fileItem(box, res.file));
          setFileIds(box, ids);
        });
      });
    });
  }, true);
  doc.addEventListener("click", function (e) {
    var rm = e.target.closest && e.target.closest("[data-file-remove]");
    if (!rm) return;
    var box = rm.closest("[data-file-field]");
    var li = rm.closest("[data-file-id]");
    var id = li && parseInt(li.getAttribute("data-file-id"), 10);
    if (!box || !li) return;
    var next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    setFileIds(box, fileIds(box).filter(function (x) { return x !== id; }));
    fileError(box, "");
    var focus = next && next.querySelector("[data-file-remove]") || box.querySelector("[data-file-input]");
    if (focus) focus.focus();
  });

  // ---- task inbox: remove a handled task ----------------------------------------
  doc.addEventListener("loom:task-done", function (e) {
    var id = e.detail && (e.detail.value || e.detail.id);
    var li = id && doc.getElementById("task-" + id);
    if (li) setTimeout(function () { li.remove(); }, 0);
  });

  // ---- comments: the @ picker ------------------------------------------------------
  // textarea[data-mention-source]: typing "@abc" lists colleagues who can read the record
  // (GET <source>?q=abc -> {"items": [{username, label}]}); Up/Down choose, Enter/Tab pick,
  // Esc closes; the pick inserts "@username ".  Ctrl/Cmd+Enter posts the comment.
  var mention = { box: null, items: [], active: -1, start: -1, seq: 0, timer: 0 };
  var MENTION_AT = /(^|[^\p{L}\p{N}_.@])@([\p{L}\p{N}_.\-@]{0,64})$/u;
  function mentionList(box) { return doc.getElementById(box.getAttribute("aria-controls")); }
  function closeMentions() {
    var box = mention.box;
    if (!box) return;
    var list = mentionList(box);
    if (list) { list.hidden = true; list.textContent = ""; }
    box.removeAttribute("aria-activedescendant");
    mention.items = []; mention.active = -1;
  }
  function markActive(i) {
    var list = mentionList(mention.box);
    mention.active = i;
    Array.prototype.forEach.call(list.children, function (li, n) { li.setAttribute("aria-selected", n === i ? "true" : "false"); });
    if (i >= 0) mention.box.setAttribute("aria-activedescendant", list.children[i].id);
  }
  function showMentions(box, items) {
    var list = mentionList(box);
    if (!list) return;
    list.textContent = "";
    mention.items = items;
    if (!items.length) {
      var none = doc.createElement("li");
      none.className = "mention-none";
      none.setAttribute("role", "option");
      none.setAttribute("aria-disabled", "true");
      none.id = list.id + "-none";
      none.textContent = box.getAttribute("data-mention-empty") || "—";
      list.appendChild(none);
      list.hidden = false;
      mention.active = -1;
      return;
    }
    items.forEach(function (it, i) {
      var li = doc.createElement("li");
      li.id = list.id + "-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("data-username", it.username);
      li.textContent = it.label;
      li.addEventListener("mousedown", function (e) { e.preventDefault(); pickMention(i); });
      list.appendChild(li);
    });
    list.hidden = false;
    markActive(0);
  }
  function pickMention(i) {
    var box = mention.box, it = mention.items[i];
    if (!box || !it) return;
    var before = box.value.slice(0, mention.start), after = box.value.slice(box.selectionStart);
    var insert = "@" + it.username + " ";
    box.value = before + insert + after;
    var caret = before.length + insert.length;
    box.setSelectionRange(caret, caret);
    closeMentions();
    box.focus();
  }
  function lookupMentions(box) {
    var upto = box.value.slice(0, box.selectionStart);
    var m = MENTION_AT.exec(upto);
    if (!m) { closeMentions(); return; }
    mention.box = box;
    mention.start = upto.length - m[2].length - 1;
    var n = ++mention.seq;
    var url = box.getAttribute("data-mention-source") + "?q=" + encodeURIComponent(m[2]);
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) { if (n === mention.seq) showMentions(box, (data && data.items) || []); })
      .catch(function (err) { if (window.console) console.warn("Loom mentions:", err); });
  }
  doc.addEventListener("input", function (e) {
    var box = e.target;
    if (!box.matches || !box.matches("textarea[data-mention-source]")) return;
    clearTimeout(mention.timer);
    mention.timer = setTimeout(function () { lookupMentions(box); }, 150);
  });
  doc.addEventListener("keydown", function (e) {
    var box = e.target;
    if (!box.matches || !box.matches("textarea[data-mention-source]")) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && box.form) { e.preventDefault(); closeMentions(); box.form.requestSubmit(); return; }
    var list = mentionList(box);
    if (!list || list.hidden || mention.box !== box) return;
    var count = mention.items.length;
    if (e.key === "Escape") { e.preventDefault(); closeMentions(); }
    else if (e.key === "ArrowDown" && count) { e.preventDefault(); markActive((mention.active + 1) % count); }
    else if (e.key === "ArrowUp" && count) { e.preventDefault(); markActive((mention.active - 1 + count) % count); }
    else if ((e.key === "Enter" || e.key === "Tab") && mention.active >= 0) { e.preventDefault(); pickMention(mention.active); }
  });
  doc.addEventListener("focusout", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-mention-source]")) setTimeout(closeMentions, 150);
  });
  // after a post with a problem, put the cursor back in the box
  doc.addEventListener("htmx:afterSettle", function () {
    var box = doc.querySelector("textarea[data-mention-source][aria-invalid=true]");
    if (box) box.focus();
  });

  // ---- dashboards' filters and the list's page size reload the page ----------------
  doc.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("form.dashboard-filters select, select.auto-submit")) e.target.form.submit();
  });
})();
