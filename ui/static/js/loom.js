/* Loom browser helpers. Plain ES2019, no build step. Load after htmx.min.js and
 * (on pages with charts) echarts.min.js + china.js:
 *
 *   <script src="/static/vendor/htmx.min.js" defer></script>
 *   <script src="/static/vendor/echarts.min.js" defer></script>   (only where charts are)
 *   <script src="/static/vendor/china.js" defer></script>         (only where the China map is)
 *   <script src="/static/js/loom.js" defer></script>
 *
 * Hooks (see docs/frontend.md):
 *   [data-confirm="问题?"]         confirm dialog before a link / submit / htmx request
 *   [data-echarts]                 chart; option JSON in a child <script type="application/json">
 *   [data-drill="/r/x?p={name}&s={series}"]  click on a chart item navigates there
 *   [data-refresh-seconds="30"]    re-fetch the element periodically (hx-get / data-refresh-url)
 *   .nav-toggle / [role=tablist] / [data-modal-open] / [data-modal-close] / .toast-region
 * Public API: window.Loom = { toast, confirm, bootCharts, charts, t }
 */
(function () {
  "use strict";
  var doc = document;
  var root = doc.documentElement;

  // ---------- i18n (zh-CN first; English when <html lang="en…">) ----------
  var STRINGS = {
    zh: { ok: "确定", cancel: "取消", confirm: "请确认", close: "关闭", error: "操作失败", network: "网络连接失败，请稍后重试",
      timeout: "请求超时，请稍后重试", server: "服务器出错了，请稍后重试或联系管理员", forbidden: "没有权限执行此操作",
      notFound: "请求的内容不存在", invalid: "请检查填写的内容", chartError: "图表加载失败", httpStatus: "HTTP 状态 " },
    en: { ok: "OK", cancel: "Cancel", confirm: "Please confirm", close: "Close", error: "Request failed",
      network: "Network error, please try again", timeout: "The request timed out, please try again",
      server: "Server error, please try again or contact your administrator", forbidden: "You are not allowed to do this",
      notFound: "Not found", invalid: "Please check your input", chartError: "Chart failed to load", httpStatus: "HTTP status " },
  };
  function lang() { return /^en/i.test(root.lang || "") ? "en" : "zh"; }
  function t(key) { return STRINGS[lang()][key] || STRINGS.zh[key] || key; }

  function el(tag, attrs, children) {
    var e = doc.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? doc.createTextNode(c) : c); });
    return e;
  }
  function onReady(fn) {
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  // ---------- toasts ----------
  function toastRegion() {
    var r = doc.querySelector(".toast-region");
    if (!r) {
      r = el("div", { class: "toast-region", "aria-live": "polite", "aria-atomic": "false" });
      doc.body.appendChild(r);
    }
    return r;
  }
  /** Loom.toast(message | {title, message, items[]}, {tone: info|success|warning|danger, timeout: ms (0 = sticky)}) */
  function toast(msg, opts) {
    opts = opts || {};
    var tone = opts.tone || "info";
    var m = typeof msg === "string" ? { message: msg } : (msg || {});
    var body = el("div", { class: "toast-body" });
    if (m.title) body.appendChild(el("div", { class: "toast-title", text: m.title }));
    if (m.message) body.appendChild(el("div", { text: m.message }));
    if (m.items && m.items.length) {
      var ul = el("ul");
      m.items.slice(0, 8).forEach(function (it) { ul.appendChild(el("li", { text: it })); });
      body.appendChild(ul);
    }
    var box = el("div", { class: "toast toast-" + tone, role: tone === "danger" ? "alert" : "status" }, [body]);
    var close = el("button", { type: "button", class: "toast-close", "aria-label": t("close"), text: "×" });
    box.appendChild(close);
    function dismiss() {
      if (!box.isConnected) return;
      box.classList.add("leaving");
      setTimeout(function () { box.remove(); }, 220);
    }
    close.addEventListener("click", dismiss);
    toastRegion().appendChild(box);
    var timeout = opts.timeout != null ? opts.timeout : (tone === "danger" ? 8000 : 4000);
    if (timeout > 0) setTimeout(dismiss, timeout);
    return { el: box, dismiss: dismiss };
  }

  // ---------- server error -> human message (never a stack trace) ----------
  var TRACE_RE = /Traceback \(most recent call last\)|^\s*File ".*", line \d+|\bat [\w$.<>]+ \(.*:\d+:\d+\)|Exception in ASGI|sqlalchemy\.exc\./m;
  function clean(s, max) {
    s = String(s == null ? "" : s).replace(/\s+/g, " ").trim();
    if (!s || TRACE_RE.test(s)) return "";
    return s.length > (max || 300) ? s.slice(0, (max || 300) - 1) + "…" : s;
  }
  function statusMessage(status) {
    if (status === 401 || status === 403) return t("forbidden");
    if (status === 404) return t("notFound");
    if (status === 400 || status === 409 || status === 422) return t("invalid");
    if (status >= 500) return t("server");
    return t("error");
  }
  // Returns {title, message, items[]} from a FastAPI/Loom JSON error or an HTML error page.
  function describeError(status, contentType, text) {
    var out = { title: statusMessage(status), message: "", items: [] };
    contentType = contentType || "";
    text = text || "";
    var data = null;
    if (/json/i.test(contentType) || /^\s*[{[]/.test(text)) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (data && typeof data === "object") {
      var d = data.detail !== undefined ? data.detail : (data.error !== undefined ? data.error : data);
      if (d && typeof d === "object" && !Array.isArray(d)) {
        out.message = clean(d.message || d.msg || d.detail || d.error || d.title || "");
        var errs = d.errors || data.errors;
        if (Array.isArray(errs)) d = errs;
      } else if (typeof d === "string") {
        out.message = clean(d);
      }
      if (Array.isArray(d)) {
        d.forEach(function (x) {
          if (typeof x === "string") { var s = clean(x, 160); if (s) out.items.push(s); return; }
          if (!x || typeof x !== "object") return;
          var where = Array.isArray(x.loc) ? x.loc.filter(function (p) { return p !== "body" && p !== "query"; }).join(".") : (x.field || x.path || "");
          var msg = clean(x.msg || x.message || "", 160);
          if (msg) out.items.push(where ? where + ": " + msg : msg);
        });
      }
      if (!out.message && data.message) out.message = clean(data.message);
    } else if (text) {
      try {
        var html = new DOMParser().parseFromString(text, "text/html");
        html.querySelectorAll("script, style, pre, code, .traceback").forEach(function (n) { n.remove(); });
        var pick = html.querySelector("[data-error-message], .error-message, .alert-danger, main h1, h1") || html.querySelector("title");
        var msg = pick ? clean(pick.textContent) : "";
        var para = html.querySelector("[data-error-detail], .error-detail, main p, p");
        var detail = para && para !== pick ? clean(para.textContent, 200) : "";
        out.message = msg && detail && detail !== msg ? msg + " — " + detail : (msg || detail);
        if (!out.message && !/</.test(text)) out.message = clean(text, 200);
      } catch (e) { /* ignore */ }
    }
    if (!out.message && !out.items.length) out.message = t("httpStatus") + status;
    return out;
  }

  // ---------- confirm dialog ----------
  /** Loom.confirm(message, {ok, cancel, danger, title}) -> Promise<boolean> */
  function confirmDialog(message, opts) {
    opts = opts || {};
    return new Promise(function (resolve) {
      var dlg = el("dialog", { class: "modal loom-confirm", "aria-labelledby": "loom-confirm-title", "aria-describedby": "loom-confirm-msg" });
      var okBtn = el("button", { type: "button", class: "btn " + (opts.danger ? "btn-danger" : "btn-primary"), text: opts.ok || t("ok"), value: "ok" });
      var cancelBtn = el("button", { type: "button", class: "btn btn-secondary", text: opts.cancel || t("cancel"), value: "cancel" });
      dlg.appendChild(el("div", { class: "modal-header" }, [el("h2", { id: "loom-confirm-title", text: opts.title || t("confirm") })]));
      dlg.appendChild(el("div", { class: "modal-body" }, [el("p", { id: "loom-confirm-msg", text: message })]));
      dlg.appendChild(el("div", { class: "modal-footer" }, [cancelBtn, okBtn]));
      var done = false;
      function finish(v) {
        if (done) return; done = true;
        if (dlg.open) dlg.close();
        dlg.remove();
        resolve(v);
      }
      okBtn.addEventListener("click", function () { finish(true); });
      cancelBtn.addEventListener("click", function () { finish(false); });
      dlg.addEventListener("cancel", function (e) { e.preventDefault(); finish(false); });
      dlg.addEventListener("click", function (e) { if (e.target === dlg) finish(false); }); // backdrop
      doc.body.appendChild(dlg);
      if (typeof dlg.showModal === "function") { dlg.showModal(); (opts.danger ? cancelBtn : okBtn).focus(); }
      else { finish(window.confirm(message)); }
    });
  }
  function confirmOpts(node) {
    return { ok: node.getAttribute("data-confirm-ok") || undefined, title: node.getAttribute("data-confirm-title") || undefined,
      danger: node.hasAttribute("data-confirm-danger") || node.classList.contains("btn-danger") || node.classList.contains("btn-danger-outline") };
  }
  var HX_ATTR = "[hx-get],[hx-post],[hx-put],[hx-patch],[hx-delete],[data-hx-get],[data-hx-post],[data-hx-put],[data-hx-patch],[data-hx-delete]";
  function isHtmxDriven(node) {
    if (!window.htmx) return false;
    if (node.matches(HX_ATTR)) return true;
    var form = node.form || (node.tagName === "FORM" ? node : null);
    return !!(form && form.matches(HX_ATTR));
  }
  var confirmed = new WeakSet();
  // plain links / submit buttons / forms
  doc.addEventListener("click", function (e) {
    var node = e.target.closest && e.target.closest("[data-confirm]");
    if (!node || node.tagName === "FORM" || isHtmxDriven(node)) return;
    if (confirmed.has(node)) { confirmed.delete(node); return; }
    e.preventDefault();
    e.stopImmediatePropagation();
    confirmDialog(node.getAttribute("data-confirm"), confirmOpts(node)).then(function (ok) {
      if (!ok) return;
      if (node.tagName === "A" && node.href) {
        if (node.target && node.target !== "_self") window.open(node.href, node.target); else window.location.assign(node.href);
      } else {
        confirmed.add(node);
        node.click();
      }
    });
  }, true);
  doc.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches("form[data-confirm]") || isHtmxDriven(form)) return;
    if (confirmed.has(form)) { confirmed.delete(form); return; }
    e.preventDefault();
    var submitter = e.submitter;
    confirmDialog(form.getAttribute("data-confirm"), confirmOpts(form)).then(function (ok) {
      if (!ok) return;
      confirmed.add(form);
      if (form.requestSubmit) form.requestSubmit(submitter || undefined); else form.submit();
    });
  }, true);
  // htmx requests: data-confirm on the element, an ancestor, or the submit button
  doc.addEventListener("htmx:confirm", function (e) {
    var d = e.detail || {};
    var node = d.elt && d.elt.closest ? d.elt.closest("[data-confirm]") : null;
    var trig = d.triggeringEvent;
    if (trig && trig.submitter && trig.submitter.hasAttribute("data-confirm")) node = trig.submitter;
    if (!node) return;
    e.preventDefault();
    confirmDialog(node.getAttribute("data-confirm"), confirmOpts(node)).then(function (ok) { if (ok) d.issueRequest(true); });
  });

  // ---------- htmx: errors -> toast, busy flag ----------
  var inflight = 0;
  function busy(delta) {
    inflight = Math.max(0, inflight + delta);
    root.classList.toggle("loom-busy", inflight > 0);
  }
  doc.addEventListener("htmx:beforeRequest", function () { busy(1); });
  doc.addEventListener("htmx:afterRequest", function () { busy(-1); });
  doc.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail && e.detail.xhr;
    if (!xhr) return;
    var elt = e.detail.elt;
    if (elt && elt.closest && elt.closest("[data-no-error-toast]")) return;
    toast(describeError(xhr.status, xhr.getResponseHeader("Content-Type"), xhr.responseText), { tone: "danger" });
  });
  doc.addEventListener("htmx:sendError", function () { toast({ title: t("error"), message: t("network") }, { tone: "danger" }); });
  doc.addEventListener("htmx:timeout", function () { toast({ title: t("error"), message: t("timeout") }, { tone: "danger" }); });
  // server-sent toasts: HX-Trigger: {"loom:toast": {"message": "已保存", "tone": "success"}}
  doc.addEventListener("loom:toast", function (e) {
    var d = e.detail || {};
    if (d.value !== undefined && typeof d.value !== "object") d = { message: d.value };
    toast({ title: d.title, message: d.message, items: d.items }, { tone: d.tone || "success" });
  });

  // ---------- nav toggle (phones), user menu, tabs, modals ----------
  function setNav(open) {
    doc.body.classList.toggle("nav-open", open);
    doc.querySelectorAll(".nav-toggle").forEach(function (b) { b.setAttribute("aria-expanded", open ? "true" : "false"); });
  }
  doc.addEventListener("click", function (e) {
    var tgt = e.target;
    if (!tgt.closest) return;
    if (tgt.closest(".nav-toggle")) { setNav(!doc.body.classList.contains("nav-open")); return; }
    if (tgt.closest(".nav-backdrop") || (doc.body.classList.contains("nav-open") && tgt.closest(".sidenav a"))) setNav(false);
    // close open <details> menus when clicking elsewhere
    doc.querySelectorAll("details.user-menu[open], details.dropdown[open]").forEach(function (d) { if (!d.contains(tgt)) d.open = false; });
    var opener = tgt.closest("[data-modal-open]");
    if (opener) {
      var dlg = doc.querySelector(opener.getAttribute("data-modal-open"));
      if (dlg && dlg.showModal) { e.preventDefault(); dlg.showModal(); }
      return;
    }
    var closer = tgt.closest("[data-modal-close]");
    if (closer) { var d = closer.closest("dialog"); if (d) { e.preventDefault(); d.close(); } return; }
    if (tgt.tagName === "DIALOG" && tgt.classList.contains("modal") && !tgt.classList.contains("loom-confirm") && tgt.open) tgt.close(); // backdrop
    var tab = tgt.closest('[role="tab"]');
    if (tab) selectTab(tab);
  });
  doc.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      if (doc.body.classList.contains("nav-open")) setNav(false);
      doc.querySelectorAll("details.user-menu[open], details.dropdown[open]").forEach(function (d) { d.open = false; });
    }
    var tab = e.target.closest && e.target.closest('[role="tab"]');
    if (tab && (e.key === "ArrowRight" || e.key === "ArrowLeft" || e.key === "Home" || e.key === "End")) {
      var tabs = Array.prototype.slice.call(tab.closest('[role="tablist"]').querySelectorAll('[role="tab"]'));
      var i = tabs.indexOf(tab);
      var n = e.key === "Home" ? 0 : e.key === "End" ? tabs.length - 1 : (i + (e.key === "ArrowRight" ? 1 : -1) + tabs.length) % tabs.length;
      e.preventDefault();
      tabs[n].focus();
      selectTab(tabs[n]);
    }
  });
  function selectTab(tab) {
    var list = tab.closest('[role="tablist"]');
    if (!list) return;
    list.querySelectorAll('[role="tab"]').forEach(function (t2) {
      var on = t2 === tab;
      t2.setAttribute("aria-selected", on ? "true" : "false");
      t2.tabIndex = on ? 0 : -1;
      var panel = t2.getAttribute("aria-controls") && doc.getElementById(t2.getAttribute("aria-controls"));
      if (panel) panel.hidden = !on;
    });
    resizeCharts(); // charts in a newly shown panel had zero size
  }
  // focus the first invalid field after a swap that contains errors
  doc.addEventListener("htmx:afterSwap", function (e) {
    var bad = e.detail && e.detail.target && e.detail.target.querySelector && e.detail.target.querySelector('[aria-invalid="true"]');
    if (bad && typeof bad.focus === "function") bad.focus();
  });

  // ---------- charts ----------
  var charts = new Map(); // element -> echarts instance
  function chinaNames(option) {
    var cm = window.LoomChinaMap;
    if (!cm) return;
    function fix(list) {
      (list || []).forEach(function (it) {
        if (it && typeof it === "object" && it.name != null) {
          var n = cm.toMapName(it.name);
          if (n !== it.name) { if (it.loomRaw === undefined) it.loomRaw = it.name; it.name = n; }
        }
      });
    }
    var geos = [].concat(option.geo || []);
    geos.forEach(function (g) { if (g && g.map === "china") fix(g.regions); });
    [].concat(option.series || []).forEach(function (s) {
      if (!s) return;
      var onChina = s.map === "china" || (s.type === "map" && s.geoIndex != null && geos[s.geoIndex] && geos[s.geoIndex].map === "china");
      if (onChina) fix(s.data);
    });
  }
  function fillTemplate(tpl, params) {
    var d = params.data && typeof params.data === "object" ? params.data : {};
    var values = {
      name: d.loomRaw != null ? d.loomRaw : (params.name != null ? params.name : ""),
      series: params.seriesName != null ? params.seriesName : "",
      value: Array.isArray(params.value) ? params.value.join(",") : (params.value != null ? params.value : ""),
      dataIndex: params.dataIndex != null ? params.dataIndex : "",
      id: d.id != null ? d.id : "",
    };
    return tpl.replace(/\{(name|series|value|dataIndex|id)\}/g, function (_, k) { return encodeURIComponent(String(values[k])); });
  }
  function showChartError(node, err) {
    if (window.console) console.error("Loom chart:", err);
    if (!node.querySelector(".chart-error")) node.appendChild(el("div", { class: "chart-error", role: "alert", text: t("chartError") }));
  }
  function readOption(node) {
    var script = node.querySelector(':scope > script[type="application/json"]');
    if (!script) return null;
    return JSON.parse(script.textContent || "{}");
  }
  function bootChart(node) {
    if (charts.has(node)) return charts.get(node);
    if (!window.echarts) { showChartError(node, "echarts.min.js is not loaded"); return null; }
    var option;
    try { option = readOption(node); } catch (err) { showChartError(node, err); return null; }
    if (!option) { showChartError(node, "no <script type=application/json> option"); return null; }
    try {
      registerTheme();
      chinaNames(option);
      var chart = window.echarts.init(node, node.getAttribute("data-theme") || "loom", { locale: lang() === "en" ? "EN" : "ZH" });
      chart.setOption(option);
      charts.set(node, chart);
      node.setAttribute("data-echarts-ready", "");
      var tpl = node.getAttribute("data-drill");
      if (tpl) {
        chart.on("click", function (params) {
          if (params.componentType !== "series" && params.componentType !== "geo") return;
          window.location.assign(fillTemplate(tpl, params));
        });
      }
      if (window.ResizeObserver) {
        var ro = new ResizeObserver(function () { if (!chart.isDisposed()) chart.resize(); });
        ro.observe(node);
        node._loomRO = ro;
      }
      return chart;
    } catch (err) { showChartError(node, err); return null; }
  }
  function disposeChart(node) {
    var c = charts.get(node);
    if (c) { if (node._loomRO) node._loomRO.disconnect(); if (!c.isDisposed()) c.dispose(); charts.delete(node); }
  }
  function bootCharts(scope) {
    scope = scope || doc;
    var nodes = [];
    if (scope.matches && scope.matches("[data-echarts]")) nodes.push(scope);
    if (scope.querySelectorAll) nodes = nodes.concat(Array.prototype.slice.call(scope.querySelectorAll("[data-echarts]")));
    nodes.forEach(bootChart);
    return nodes.map(function (n) { return charts.get(n); }).filter(Boolean);
  }
  var resizeTimer = null;
  function resizeCharts() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c, node) {
        if (!node.isConnected) { disposeChart(node); return; }
        if (!c.isDisposed()) c.resize();
      });
    }, 100);
  }
  window.addEventListener("resize", resizeCharts);
  doc.addEventListener("htmx:beforeCleanupElement", function (e) {
    var n = e.target;
    if (n && n.hasAttribute && n.hasAttribute("data-echarts")) disposeChart(n);
  });
  var themed = false;
  function registerTheme() {
    if (themed || !window.echarts || !window.echarts.registerTheme) return;
    themed = true;
    window.echarts.registerTheme("loom", {
      color: ["#245bdb", "#14a38b", "#f0a020", "#e5483f", "#7b61ff", "#2fa0d8", "#8fb21e", "#d9559b", "#646a73"],
      textStyle: { fontFamily: (getComputedStyle(root).getPropertyValue("--font") || "").trim() || "sans-serif" },
    });
  }

  // ---------- auto-refresh ----------
  var timers = new WeakMap();
  function refreshOne(node) {
    if (!node.isConnected) return false;
    if (doc.visibilityState === "hidden" || node.classList.contains("htmx-request")) return true;
    var active = doc.activeElement;
    if (active && active !== doc.body && node.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) return true; // user is typing
    var url = node.getAttribute("data-refresh-url") || node.getAttribute("hx-get") || node.getAttribute("data-hx-get");
    if (node.hasAttribute("data-echarts") && url) { // chart: JSON option -> setOption
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (opt) { var c = charts.get(node); if (c) { chinaNames(opt); c.setOption(opt, { notMerge: true }); } })
        .catch(function (err) { if (window.console) console.warn("Loom refresh:", err); });
      return true;
    }
    if (!window.htmx) return true;
    var ctx = { target: node, swap: node.getAttribute("data-refresh-swap") || "outerHTML", source: node };
    if (!url) {
      if (!node.id) { if (window.console) console.warn("data-refresh-seconds needs hx-get, data-refresh-url or an id", node); return false; }
      url = window.location.href;
      ctx.select = "#" + node.id;
    }
    window.htmx.ajax("GET", url, ctx);
    return true;
  }
  function bootRefresh(scope) {
    scope = scope || doc;
    var nodes = [];
    if (scope.matches && scope.matches("[data-refresh-seconds]")) nodes.push(scope);
    if (scope.querySelectorAll) nodes = nodes.concat(Array.prototype.slice.call(scope.querySelectorAll("[data-refresh-seconds]")));
    nodes.forEach(function (node) {
      if (timers.has(node)) return;
      var secs = parseFloat(node.getAttribute("data-refresh-seconds"));
      if (!(secs >= 1)) return;
      var id = setInterval(function () { if (!refreshOne(node)) { clearInterval(id); timers.delete(node); } }, secs * 1000);
      timers.set(node, id);
    });
  }
  doc.addEventListener("htmx:beforeCleanupElement", function (e) {
    var id = e.target && timers.get(e.target);
    if (id) { clearInterval(id); timers.delete(e.target); }
  });

  // ---------- boot ----------
  function boot(scope) { bootCharts(scope); bootRefresh(scope); }
  onReady(function () {
    if (!doc.querySelector(".loading-bar")) doc.body.insertBefore(el("div", { class: "loading-bar", "aria-hidden": "true" }), doc.body.firstChild);
    doc.querySelectorAll('[role="tablist"]').forEach(function (list) {
      var sel = list.querySelector('[role="tab"][aria-selected="true"]') || list.querySelector('[role="tab"]');
      if (sel) selectTab(sel);
    });
    boot(doc);
  });
  // every fragment htmx swaps in (boot is idempotent, so the initial htmx:load on <body> is harmless)
  doc.addEventListener("htmx:load", function (e) { if (e.target && e.target !== doc.body) boot(e.target); });

  window.Loom = { toast: toast, confirm: confirmDialog, bootCharts: bootCharts, charts: charts, describeError: describeError,
    resizeCharts: resizeCharts, t: t };
})();
