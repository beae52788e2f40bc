// paydvm status page: polls /api/status and draws it. Every value goes in through textContent
// or an attribute, never as markup.
"use strict";
(function () {
  var POLL_MS = 2000;
  var token = new URLSearchParams(location.search).get("token");

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells, attrs) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      if (c instanceof Node) { var td = document.createElement("td"); td.appendChild(c); tr.appendChild(td); }
      else tr.appendChild(el("td", c.text, c.cls));
    });
    Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, attrs[k]); });
    return tr;
  }
  function fill(id, rows) {
    var body = document.querySelector("#" + id + " tbody");
    body.replaceChildren.apply(body, rows);
  }
  function msat(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en") + " msat"; }
  function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–"; }
  function short(id) { return id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id; }

  // A compact SVG line chart: one polyline over the points, a dot per point, a base line.
  function drawChart(id, values) {
    var svg = document.getElementById(id);
    var ns = "http://www.w3.org/2000/svg";
    var kids = [];
    var base = document.createElementNS(ns, "line");
    base.setAttribute("x1", "0"); base.setAttribute("x2", "300");
    base.setAttribute("y1", "98"); base.setAttribute("y2", "98");
    kids.push(base);
    var known = values.filter(function (v) { return v !== null && v !== undefined; });
    var max = Math.max.apply(null, known.concat([0]));
    var scale = max > 0 ? 90 / max : 0;
    var step = values.length > 1 ? 300 / (values.length - 1) : 0;
    var pts = [];
    values.forEach(function (v, i) {
      if (v === null || v === undefined) return;
      var x = values.length > 1 ? i * step : 150;
      var y = 98 - v * scale;
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
      if (values.length <= 60) {
        var dot = document.createElementNS(ns, "circle");
        dot.setAttribute("cx", x.toFixed(1)); dot.setAttribute("cy", y.toFixed(1)); dot.setAttribute("r", "1.8");
        kids.push(dot);
      }
    });
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    kids.push(line);
    svg.replaceChildren.apply(svg, kids);
    svg.setAttribute("data-points", String(pts.length));
    svg.setAttribute("data-max", String(max));
    var cap = svg.parentNode.querySelector("figcaption");
    cap.setAttribute("data-last", known.length ? String(known[known.length - 1]) : "");
  }

  function trail(job) {
    var t = el("table", null, "trail");
    job.trail.forEach(function (s) {
      var detail = s.detail;
      s.postings.forEach(function (p) { detail += "  ·  " + p.amount_msat + " msat Dr " + p.debit + " Cr " + p.credit; });
      t.appendChild(row([{ text: "#" + s.seq }, { text: time(s.at) }, { text: s.type, cls: "mono" }, { text: detail }]));
    });
    return t;
  }

  function jobRow(j) {
    var d = el("details");
    var sum = el("summary", short(j.job), "mono");
    sum.title = j.job;
    d.appendChild(sum);
    d.appendChild(el("div", "customer " + j.customer, "dim mono"));
    d.appendChild(trail(j));
    return row([d, { text: j.kind }, { text: j.state, cls: "state-" + j.state },
      { text: msat(j.price_msat), cls: "num" }, { text: msat(j.funded_msat), cls: "num" },
      { text: msat(j.refunded_msat), cls: "num" }, { text: msat(j.revenue_msat), cls: "num" },
      { text: time(j.received_at) }], { "data-job": j.job, "data-state": j.state });
  }

  function render(s) {
    document.getElementById("name").textContent = s.name;
    document.getElementById("pubkey").textContent = s.pubkey;
    var badge = document.getElementById("ready");
    badge.textContent = s.readiness.ready ? "ready" : "not ready: " + s.readiness.failing.join(", ");
    badge.className = "badge " + (s.readiness.ready ? "ok" : "bad");
    document.getElementById("results").textContent = s.totals.results;
    document.getElementById("revenue").textContent = msat(s.totals.revenue_msat);
    document.getElementById("refunds").textContent = msat(s.totals.refunds_msat);
    fill("checks", s.readiness.checks.map(function (c) {
      return row([{ text: c.name }, { text: c.ok ? "ok" : "failing", cls: c.ok ? "up" : "down" }, { text: c.detail }]);
    }));
    fill("relays", s.relays.map(function (r) {
      return row([{ text: r.url, cls: "mono" }, { text: r.up ? "up" : "down", cls: r.up ? "up" : "down" },
        { text: r.connects }, { text: time(r.changed_at_ms) }], { "data-relay": r.url, "data-up": String(r.up) });
    }));
    fill("rails", s.backends.map(function (b) {
      var st = b.up === null ? "not probed" : b.up ? "up" : "down";
      return row([{ text: b.name, cls: "mono" }, { text: st, cls: b.up ? "up" : "down" }, { text: b.detail }]);
    }));
    var series = s.series;
    drawChart("chart-jobs", series.map(function (p) { return p.jobs_per_s; }));
    drawChart("chart-revenue", series.map(function (p) { return p.revenue_msat; }));
    drawChart("chart-refunds", series.map(function (p) { return p.refunds_msat; }));
    drawChart("chart-latency", series.map(function (p) { return p.latency_ms; }));
    var err = document.getElementById("error");
    if (s.ledger) {
      var l = s.ledger;
      var total = Object.keys(l.jobs_by_state).reduce(function (a, k) { return a + l.jobs_by_state[k]; }, 0);
      document.getElementById("jobs-total").textContent = total;
      fill("states", Object.keys(l.jobs_by_state).map(function (k) {
        return row([{ text: k, cls: "state-" + k }, { text: l.jobs_by_state[k], cls: "num" }], { "data-state": k, "data-count": String(l.jobs_by_state[k]) });
      }));
      fill("accounts", l.accounts.map(function (a) {
        return row([{ text: a.account, cls: "mono" }, { text: Number(a.balance_msat).toLocaleString("en"), cls: "num" }]);
      }));
      fill("subscriptions", l.subscriptions.map(function (x) {
        return row([{ text: short(x.subscriber), cls: "mono" }, { text: x.tier }, { text: x.used + " / " + x.quota }, { text: time(x.period_end) }]);
      }));
      fill("jobs", l.jobs.map(jobRow));
      document.getElementById("jobs-count").textContent = "(" + l.jobs.length + " shown, " + l.events + " ledger events)";
      err.hidden = true;
    } else {
      err.textContent = "ledger: " + s.ledger_error;
      err.hidden = false;
    }
    document.body.setAttribute("data-rendered", String(Number(document.body.getAttribute("data-rendered") || 0) + 1));
  }

  function poll() {
    var headers = token ? { Authorization: "Bearer " + token } : {};
    fetch("api/status", { headers: headers, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(function (e) {
        var err = document.getElementById("error");
        err.textContent = "cannot read the node: " + e.message;
        err.hidden = false;
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
