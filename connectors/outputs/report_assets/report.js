/* pacs2xnat data-availability page. Everything is drawn from the JSON in #report-data with
   DOM calls and textContent (never innerHTML), so no value can become markup. No network. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"];
  var REC_COLOURS = { present: "#2e7d32", uid_mismatch: "#8e24aa", unexpected: "#546e7a" };
  var MISSING_SHADES = ["#e65100", "#f57c00", "#ffa726", "#c62828", "#ef5350", "#ffcc80", "#8d6e63"];
  var UNEXPECTED_SHADES = ["#546e7a", "#90a4ae", "#37474f", "#b0bec5"];

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var PAGE_SIZE = data.page_size;
  var modalityColour = {};
  data.modalities.forEach(function (m, i) { modalityColour[m] = PALETTE[i % PALETTE.length]; });

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) { for (var k in attrs) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(n) {
    if (n === null || n === undefined || n === "") { return ""; }
    var v = Number(n);
    return (Math.abs(v) < 1e-9 ? 0 : v).toLocaleString("en-GB");
  }
  function niceStep(range, target) {
    var raw = range / Math.max(target, 1);
    var p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function legend(items) {
    var ul = el("ul", { "class": "legend" });
    items.forEach(function (it) {
      var li = el("li");
      var sw = el("span", { "class": "sw" });
      sw.style.background = it.colour;
      li.appendChild(sw);
      li.appendChild(el("span", null, it.label));
      ul.appendChild(li);
    });
    return ul;
  }

  /* ---------------------------------------------------------------- header */
  function renderMeta() {
    var m = data.meta, dl = document.getElementById("meta");
    [["Generated", m.generated_at + " UTC"], ["Run", m.run_id],
     ["Rules", m.rules_sha256 ? m.rules_sha256.slice(0, 12) : "none"],
     ["XNAT snapshot", m.last_sync ? m.last_sync.finished_at + " UTC (run " + m.last_sync.run_id + ")" : "no complete sync yet"]
    ].forEach(function (p) {
      var d = el("div"); d.appendChild(el("dt", null, p[0])); d.appendChild(el("dd", null, p[1])); dl.appendChild(d);
    });
    var c = data.counts, box = document.getElementById("kpis");
    [[c.patients, "patients"], [c.patients_with_studies_in_xnat, "patients with studies in XNAT"],
     [c.studies_in_xnat, "studies in XNAT"], [c.reconciliation.present, "selected and present"],
     [c.reconciliation.missing, "selected, missing"], [c.reconciliation.uid_mismatch, "Study UID mismatch"],
     [c.reconciliation.unexpected, "in XNAT, never selected"]
    ].forEach(function (k) {
      var d = el("div", { "class": "kpi" });
      d.appendChild(el("div", { "class": "v" }, fmt(k[0])));
      d.appendChild(el("div", { "class": "l" }, k[1]));
      box.appendChild(d);
    });
  }

  /* ---------------------------------------------------------------- quarters: stacked bars */
  function quarterIndex(q) { var p = q.split("-Q"); return Number(p[0]) * 4 + Number(p[1]) - 1; }
  function quarterName(i) { return Math.floor(i / 4) + "-Q" + (i % 4 + 1); }

  function renderQuarters() {
    var host = document.getElementById("chart-quarters");
    var rows = data.summary, byQ = {}, undated = 0, lo = Infinity, hi = -Infinity;
    rows.forEach(function (r) {
      var m = r[0], q = r[1], n = r[2];
      if (q === "no date") { undated += n; return; }
      var i = quarterIndex(q);
      lo = Math.min(lo, i); hi = Math.max(hi, i);
      (byQ[i] = byQ[i] || {})[m] = n;
    });
    var W = 1000, H = 300, L = 48, R = 10, T = 10, B = 46;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Studies in XNAT per modality and quarter, stacked bars" });
    if (lo === Infinity) {
      s.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No dated studies in XNAT yet"));
      host.appendChild(s);
      return;
    }
    var nq = hi - lo + 1, maxTotal = 0;
    for (var i = lo; i <= hi; i++) {
      var t = 0, b = byQ[i] || {};
      for (var k in b) { t += b[k]; }
      maxTotal = Math.max(maxTotal, t);
    }
    var step = niceStep(maxTotal, 5), top = Math.ceil(maxTotal / step) * step || 1;
    var pw = W - L - R, ph = H - T - B, bw = pw / nq;
    var y = function (v) { return T + ph - (v / top) * ph; };
    var axis = svg("g", { "class": "axis" });
    for (var v = 0; v <= top + 1e-9; v += step) {
      axis.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "grid" }));
      axis.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    axis.appendChild(svg("line", { x1: L, x2: W - R, y1: T + ph, y2: T + ph }));
    s.appendChild(axis);
    var labelEvery = Math.max(1, Math.ceil(nq / 24));
    var bars = svg("g", { "class": "bars" });
    for (var qi = lo; qi <= hi; qi++) {
      var x = L + (qi - lo) * bw, acc = 0, per = byQ[qi] || {};
      data.modalities.forEach(function (m) {
        var n = per[m] || 0;
        if (!n) { return; }
        var r = svg("rect", { x: x + bw * 0.1, width: Math.max(bw * 0.8, 0.5), y: y(acc + n),
          height: Math.max(y(acc) - y(acc + n), 0.5), fill: modalityColour[m] });
        r.appendChild(svg("title", null, quarterName(qi) + " " + m + ": " + fmt(n)));
        bars.appendChild(r);
        acc += n;
      });
      if ((qi - lo) % labelEvery === 0) {
        axis.appendChild(svg("text", { x: x + bw / 2, y: T + ph + 14, "text-anchor": "end",
          transform: "rotate(-35 " + (x + bw / 2) + " " + (T + ph + 14) + ")" }, quarterName(qi)));
      }
    }
    s.appendChild(bars);
    host.appendChild(s);
    host.appendChild(legend(data.modalities.map(function (m) { return { label: m, colour: modalityColour[m] }; })));
    document.getElementById("chart-quarters-note").textContent = undated
      ? fmt(undated) + " studies without a study date are not shown." : "";
  }

  /* ---------------------------------------------------------------- reconciliation bar */
  function renderReconciliation() {
    var host = document.getElementById("chart-reconciliation");
    var segs = [], mi = 0, ui = 0;
    data.reconciliation.forEach(function (r) {
      var status = r[0], reason = r[1], n = r[2], colour, label;
      if (status === "missing") {
        colour = MISSING_SHADES[mi++ % MISSING_SHADES.length]; label = "missing: " + reason;
      } else if (status === "unexpected") {
        colour = UNEXPECTED_SHADES[ui++ % UNEXPECTED_SHADES.length]; label = "unexpected: " + reason;
      } else {
        colour = REC_COLOURS[status] || "#999"; label = status.replace("_", " ");
      }
      segs.push({ label: label, n: n, colour: colour });
    });
    var total = segs.reduce(function (a, b) { return a + b.n; }, 0);
    var W = 1000, H = 56, s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Reconciliation of selected PACS studies against XNAT" });
    if (!total) {
      s.appendChild(svg("text", { x: W / 2, y: 30, "text-anchor": "middle" }, "Nothing selected from PACS and nothing in XNAT yet"));
      host.appendChild(s);
      return;
    }
    var x = 0;
    segs.forEach(function (g) {
      var w = g.n / total * W;
      var r = svg("rect", { x: x, y: 4, width: Math.max(w, 1), height: 30, fill: g.colour });
      r.appendChild(svg("title", null, g.label + ": " + fmt(g.n)));
      s.appendChild(r);
      if (w > 60) {
        s.appendChild(svg("text", { x: x + w / 2, y: 24, "text-anchor": "middle", fill: "#fff",
          style: "fill:#fff;font-weight:600" }, fmt(g.n)));
      }
      x += w;
    });
    s.appendChild(svg("text", { x: 0, y: 50 }, "0"));
    s.appendChild(svg("text", { x: W, y: 50, "text-anchor": "end" }, fmt(total) + " studies and sessions"));
    host.appendChild(s);
    host.appendChild(legend(segs.map(function (g) {
      return { label: g.label + " — " + fmt(g.n) + " (" + (100 * g.n / total).toFixed(1) + "%)", colour: g.colour };
    })));
  }

  /* ---------------------------------------------------------------- patient table */
  var cols = data.patients.columns, allRows = data.patients.rows;
  var numeric = data.patients.numeric;
  var state = { filter: "", sortCol: 0, sortDir: 1, page: 0, rows: allRows.slice() };
  var haystack = allRows.map(function (r) { return r.join(" ").toLowerCase(); });
  var rowIndex = new Map();
  allRows.forEach(function (r, i) { rowIndex.set(r, i); });

  function compare(a, b) {
    var c = state.sortCol, x = a[c], y = b[c];
    if (x === null || x === "") { return (y === null || y === "") ? 0 : 1; }
    if (y === null || y === "") { return -1; }
    return (x < y ? -1 : x > y ? 1 : 0) * state.sortDir;
  }
  function applyFilter() {
    var f = state.filter.trim().toLowerCase(), out = [];
    for (var i = 0; i < allRows.length; i++) {
      if (!f || haystack[i].indexOf(f) !== -1) { out.push(allRows[i]); }
    }
    out.sort(compare);
    state.rows = out;
    state.page = 0;
  }
  function renderHead() {
    var tr = document.querySelector("#patients thead tr");
    cols.forEach(function (c, i) {
      var th = el("th", { scope: "col", tabindex: "0", "class": numeric[i] ? "num" : "" }, c);
      var go = function () {
        state.sortDir = state.sortCol === i ? -state.sortDir : 1;
        state.sortCol = i;
        applyFilter();
        renderBody();
      };
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
      tr.appendChild(th);
    });
  }
  function renderBody() {
    var ths = document.querySelectorAll("#patients th");
    for (var i = 0; i < ths.length; i++) {
      ths[i].setAttribute("aria-sort", i === state.sortCol ? (state.sortDir > 0 ? "ascending" : "descending") : "none");
    }
    var tbody = document.querySelector("#patients tbody");
    var start = state.page * PAGE_SIZE, slice = state.rows.slice(start, start + PAGE_SIZE);
    var frag = document.createDocumentFragment();
    slice.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (v, j) {
        var cls = numeric[j] ? "num" : (cols[j] === "Modalities" ? "wrap" : "");
        tr.appendChild(el("td", cls ? { "class": cls } : null, numeric[j] ? fmt(v) : v));
      });
      frag.appendChild(tr);
    });
    tbody.textContent = "";
    tbody.appendChild(frag);
    var n = state.rows.length;
    document.getElementById("table-status").textContent = n
      ? "Rows " + fmt(start + 1) + "–" + fmt(start + slice.length) + " of " + fmt(n) +
        (n !== allRows.length ? " (filtered from " + fmt(allRows.length) + ")" : "")
      : "No patient matches";
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = start + PAGE_SIZE >= n;
    renderSwimmer(slice);
  }

  /* ---------------------------------------------------------------- swimmer plot */
  var pointsByPatient = {};
  (function () {
    var p = data.points;
    for (var i = 0; i + 2 < p.length; i += 3) {
      (pointsByPatient[p[i]] = pointsByPatient[p[i]] || []).push([p[i + 1], p[i + 2]]);
    }
  })();

  function renderSwimmer(slice) {
    var host = document.getElementById("chart-swimmer");
    host.textContent = "";
    var lanes = [], lo = 0, hi = 0, noRef = 0;
    slice.forEach(function (r) {
      var pts = pointsByPatient[rowIndex.get(r)] || [];
      if (!pts.length) { noRef++; return; }
      pts.forEach(function (q) { lo = Math.min(lo, q[1]); hi = Math.max(hi, q[1]); });
      lanes.push({ label: r[0], pts: pts });
    });
    var laneH = 16, L = 96, R = 14, T = 8, B = 30, W = 1000, H = T + B + Math.max(lanes.length, 1) * laneH;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Swimmer plot: each patient's studies in days from the reference date" });
    if (!lanes.length) {
      s.appendChild(svg("text", { x: W / 2, y: T + 12, "text-anchor": "middle" }, "No dated studies with a reference date on this page"));
      host.appendChild(s);
    } else {
      var pad = Math.max((hi - lo) * 0.03, 5); lo -= pad; hi += pad;
      var x = function (d) { return L + (d - lo) / (hi - lo) * (W - L - R); };
      var axis = svg("g", { "class": "axis" }), step = niceStep(hi - lo, 8);
      for (var v = Math.ceil(lo / step) * step; v <= hi; v += step) {
        axis.appendChild(svg("line", { x1: x(v), x2: x(v), y1: T, y2: H - B, "class": "grid" }));
        axis.appendChild(svg("text", { x: x(v), y: H - B + 14, "text-anchor": "middle" }, fmt(v)));
      }
      axis.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "days from reference date"));
      s.appendChild(axis);
      var g = svg("g");
      lanes.forEach(function (lane, i) {
        var cy = T + i * laneH + laneH / 2, a = Infinity, b = -Infinity;
        lane.pts.forEach(function (q) { a = Math.min(a, q[1]); b = Math.max(b, q[1]); });
        g.appendChild(svg("text", { x: L - 6, y: cy + 4, "text-anchor": "end" }, lane.label));
        g.appendChild(svg("line", { x1: x(a), x2: x(b), y1: cy, y2: cy, "class": "lane" }));
        lane.pts.forEach(function (q) {
          var m = data.modalities[q[0]];
          var c = svg("circle", { cx: x(q[1]), cy: cy, r: 4, fill: modalityColour[m], "fill-opacity": 0.85 });
          c.appendChild(svg("title", null, lane.label + " " + m + ": day " + q[1]));
          g.appendChild(c);
        });
      });
      s.appendChild(g);
      s.appendChild(svg("line", { x1: x(0), x2: x(0), y1: T, y2: H - B, "class": "zero" }));
      s.appendChild(svg("text", { x: x(0) + 3, y: T + 9, style: "fill:#c62828" }, "day 0"));
      host.appendChild(s);
      host.appendChild(legend(data.modalities.map(function (m) { return { label: m, colour: modalityColour[m] }; })));
    }
    document.getElementById("chart-swimmer-note").textContent = noRef
      ? noRef + " patient(s) on this page have no dated study with a reference date to plot." : "";
  }

  /* ---------------------------------------------------------------- wiring */
  renderMeta();
  renderQuarters();
  renderReconciliation();
  renderHead();
  applyFilter();
  renderBody();
  var timer = null;
  document.getElementById("filter").addEventListener("input", function (e) {
    state.filter = e.target.value;
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(function () { applyFilter(); renderBody(); }, allRows.length > 2000 ? 120 : 0);
  });
  document.getElementById("prev").addEventListener("click", function () { state.page--; renderBody(); });
  document.getElementById("next").addEventListener("click", function () { state.page++; renderBody(); });
  document.body.setAttribute("data-ready", "true");
})();
