/* Export links ([data-export]): the file is fetched, not navigated to, so the
 * button can show a spinner (and a status line) while the server prepares a
 * large export, then the browser saves it; a failure becomes a toast.
 * Without JS the link still downloads the file (it is a plain <a download>). */
(function () {
  "use strict";
  function filename(resp, fallback) {
    var cd = resp.headers.get("content-disposition") || "";
    var m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
    return m ? decodeURIComponent(m[1]) : fallback;
  }
  function status(text) {
    var s = document.getElementById("export-status");
    if (!s) {
      s = document.createElement("p");
      s.id = "export-status";
      s.className = "sr-only";
      s.setAttribute("role", "status");
      document.body.appendChild(s);
    }
    s.textContent = text || "";
  }
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[data-export]");
    if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || !window.fetch) return;
    e.preventDefault();
    if (a.getAttribute("aria-busy") === "true") return;
    a.setAttribute("aria-busy", "true");
    a.classList.add("htmx-request");          /* the buttons' shared in-progress spinner (loom.css) */
    status(a.getAttribute("data-export-busy"));
    fetch(a.href, { credentials: "same-origin" }).then(function (resp) {
      if (!resp.ok) throw new Error(String(resp.status));
      return resp.blob().then(function (blob) {
        var url = URL.createObjectURL(blob);
        var tmp = document.createElement("a");
        tmp.href = url;
        tmp.download = filename(resp, "export");
        document.body.appendChild(tmp);
        tmp.click();
        tmp.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      });
    }).catch(function () {
      var msg = a.getAttribute("data-export-failed") || "Export failed";
      if (window.Loom && window.Loom.toast) window.Loom.toast(msg, { tone: "danger" }); else window.alert(msg);
    }).then(function () {
      a.removeAttribute("aria-busy");
      a.classList.remove("htmx-request");
      status("");
    });
  });
})();
