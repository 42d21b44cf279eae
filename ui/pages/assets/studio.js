/* Studio glue: LoomEditor + the studio endpoints (lint, completion, preview, plan, publish). */
(function () {
  "use strict";
  function boot() {
    var host = document.getElementById("studio-editor");
    if (!host || !window.LoomEditor) return;
    var base = host.getAttribute("data-base");
    var file = host.getAttribute("data-file");
    var S = JSON.parse(document.getElementById("studio-strings").textContent || "{}");
    var csrf = document.body.getAttribute("data-csrf") || "";
    function post(path, body) {
      return fetch(base + path, { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
    }
    function json(path, body) {
      return post(path, body).then(function (r) {
        return r.json().catch(function () { throw new Error("HTTP " + r.status); });
      });
    }
    var diags = document.getElementById("studio-diags");
    var count = document.getElementById("studio-count");
    var others = document.getElementById("studio-others");
    function show(list, res) {
      diags.innerHTML = "";
      if (!list.length) {
        var ok = document.createElement("li"); ok.className = "ok"; ok.textContent = S.no_problems || "OK"; diags.appendChild(ok);
      }
      list.forEach(function (d) {
        var li = document.createElement("li");
        li.className = d.severity || "error";
        li.setAttribute("data-line", d.line);
        li.textContent = file + ":" + d.line + ":" + d.col + ": " + d.message;
        diags.appendChild(li);
      });
      count.textContent = String(list.length);
      count.className = "badge " + (list.length ? "badge-danger" : "badge-success");
      others.textContent = res && res.other_count ? (res.other_count + " × " + (res.others || []).slice(0, 3).join(" | ")) : "";
      host.setAttribute("data-lint-count", String(list.length));
    }
    var editor = window.LoomEditor.create(host, {
      doc: JSON.parse(document.getElementById("studio-doc").textContent || '""'),
      lint: function (text) {
        return json("/_lint", { file: file, text: text }).then(function (res) {
          var list = res.problems || [];
          show(list, res);
          return list;
        }).catch(function () { return []; });
      },
      completions: function (ctx) {
        return json("/_complete", { file: file, path: ctx.path, before: ctx.before, word: ctx.word })
          .then(function (items) { return items && items.length ? items : null; })
          .catch(function () { return null; });
      },
      onSave: function () { doPlan(); },
    });
    window.studioEditor = editor;

    var result = document.getElementById("studio-result");
    var planBox = document.getElementById("studio-plan");
    function message(text, tone) {
      result.innerHTML = "";
      var div = document.createElement("div");
      div.className = "alert alert-" + (tone || "success");
      div.setAttribute("role", tone === "danger" ? "alert" : "status");
      var body = document.createElement("div"); body.className = "alert-body pre-line"; body.textContent = text;
      div.appendChild(body);
      result.appendChild(div);
    }
    function doPlan() {
      planBox.hidden = true;
      return json("/_plan", { file: file, text: editor.getValue() }).then(function (res) {
        if (!res.ok) { message((res.problems || []).join("\n"), "danger"); return; }
        result.innerHTML = "";
        planBox.textContent = (res.lines || []).join("\n");
        planBox.hidden = false;
      });
    }
    var planBtn = document.getElementById("studio-plan-btn");
    if (planBtn) planBtn.addEventListener("click", doPlan);
    var previewBtn = document.getElementById("studio-preview-btn");
    if (previewBtn) previewBtn.addEventListener("click", function () {
      var pane = document.getElementById("studio-preview");
      previewBtn.classList.add("htmx-request");
      post("/_preview", { file: file, text: editor.getValue() }).then(function (r) { return r.text(); }).then(function (html) {
        pane.innerHTML = html;
        pane.setAttribute("data-previewed", String(Date.now()));
        pane.scrollIntoView({ block: "nearest" });
      }).finally(function () { previewBtn.classList.remove("htmx-request"); });
    });
    var publishBtn = document.getElementById("studio-publish-btn");
    if (publishBtn) publishBtn.addEventListener("click", function () {
      var go = window.Loom ? window.Loom.confirm(S.publish_confirm || "Publish?") : Promise.resolve(window.confirm(S.publish_confirm));
      go.then(function (ok) {
        if (!ok) return;
        publishBtn.classList.add("htmx-request");
        json("/_publish", { file: file, text: editor.getValue() }).then(function (res) {
          if (!res.ok) { message((res.problems || []).join("\n"), "danger"); return; }
          document.getElementById("studio-version").textContent = res.version;
          if (res.app_yaml) editor.setValue(res.app_yaml);
          message(res.message + "\n" + (res.lines || []).join("\n"), "success");
          if (window.Loom) window.Loom.toast(res.message, { tone: "success" });
        }).finally(function () { publishBtn.classList.remove("htmx-request"); });
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot); else boot();
})();
