/*
 * twistgate status dashboard: polls status.json once a second and draws what it says.
 * Plain DOM and <canvas>, no library and nothing fetched from elsewhere, so it works offline
 * and under the page's Content-Security-Policy (scripts and styles from this listener only).
 * Text goes in with textContent only: names come from the gateway's config, never as HTML.
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var COLORS = {
    requests: "#2f6fdf", p50: "#1f9d55", p90: "#d98a00", p99: "#d64545",
    "2xx": "#1f9d55", "3xx": "#2f6fdf", "4xx": "#d98a00", "5xx": "#d64545",
    cpu: "#7a56d6", rss: "#0e8f9c", lag: "#c2497a"
  };
  var last = null;

  function $(id) { return document.getElementById(id); }

  function setText(id, text) {
    var el = $(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function fmtInt(n) {
    if (n === null || n === undefined) { return "–"; }
    return Math.round(n).toLocaleString("en-US");
  }

  function fmtNum(n, digits) {
    if (n === null || n === undefined) { return "–"; }
    return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function fmtRate(n) {
    if (n === null || n === undefined) { return "–"; }
    return n < 10 ? fmtNum(n, 1) : fmtInt(n);
  }

  function fmtMs(n) {
    if (n === null || n === undefined) { return "–"; }
    if (n < 10) { return fmtNum(n, 2); }
    if (n < 100) { return fmtNum(n, 1); }
    return fmtInt(n);
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) { return "–"; }
    if (n >= 1073741824) { return fmtNum(n / 1073741824, 2) + " GB"; }
    return fmtNum(n / 1048576, 1) + " MB";
  }

  function fmtDuration(seconds) {
    var s = Math.floor(seconds), parts = [];
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d) { parts.push(d + "d"); }
    if (d || h) { parts.push(h + "h"); }
    if (d || h || m) { parts.push(m + "m"); }
    parts.push(r + "s");
    return parts.join(" ");
  }

  /* A y-axis top whose quarters read well: 1, 2, 4, 6 or 8 times a power of ten, at least `floor`. */
  function niceMax(value, floor) {
    var v = Math.max(value, floor || 0);
    if (v <= 0) { return 1; }
    var power = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 4, 6, 8, 10];
    for (var i = 0; i < steps.length; i++) {
      if (v <= steps[i] * power) { return steps[i] * power; }
    }
    return 10 * power;
  }

  /*
   * One line chart: `series` is [{label, color, values}] (values may hold null: a gap),
   * the last value on the right, `format` writes the y-axis labels.
   */
  function drawChart(canvas, series, format, floor) {
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 400, height = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var left = 48, right = 8, top = 8, bottom = 18;
    var plotW = width - left - right, plotH = height - top - bottom;
    var max = 0, count = 0;
    series.forEach(function (s) {
      count = Math.max(count, s.values.length);
      s.values.forEach(function (v) { if (v !== null && v > max) { max = v; } });
    });
    var top_ = niceMax(max, floor);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (var g = 0; g <= 4; g++) {
      var y = top + plotH - plotH * g / 4;
      ctx.strokeStyle = g === 0 ? "#c9d0db" : "#edf0f4";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(left + plotW, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = "#6b7587";
      ctx.fillText(format(top_ * g / 4), left - 6, y);
    }
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.fillText("-" + count + "s", left, height - 4);
    ctx.textAlign = "right";
    ctx.fillText("now", left + plotW, height - 4);
    if (count < 2) { return; }
    function x(i) { return left + plotW * i / (count - 1); }
    function yOf(v) { return top + plotH - plotH * Math.min(v, top_) / top_; }
    series.forEach(function (s, index) {
      var values = s.values;
      if (index === 0 && series.length === 1) {
        /* One series: shade the area under it. */
        ctx.fillStyle = s.color + "22";
        var open = false;
        for (var i = 0; i < values.length; i++) {
          if (values[i] === null) {
            if (open) { ctx.lineTo(x(i - 1), top + plotH); ctx.closePath(); ctx.fill(); open = false; }
            continue;
          }
          if (!open) { ctx.beginPath(); ctx.moveTo(x(i), top + plotH); open = true; }
          ctx.lineTo(x(i), yOf(values[i]));
        }
        if (open) { ctx.lineTo(x(values.length - 1), top + plotH); ctx.closePath(); ctx.fill(); }
      }
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      var drawing = false;
      for (var j = 0; j < values.length; j++) {
        if (values[j] === null) { drawing = false; continue; }
        if (drawing) { ctx.lineTo(x(j), yOf(values[j])); } else { ctx.moveTo(x(j), yOf(values[j])); drawing = true; }
      }
      ctx.stroke();
    });
  }

  function legend(id, names) {
    var el = $(id);
    if (!el || el.childNodes.length) { return; }
    names.forEach(function (name) {
      var swatch = document.createElement("i");
      swatch.style.background = COLORS[name];
      el.appendChild(swatch);
      el.appendChild(document.createTextNode(name));
    });
  }

  function cell(text, numeric, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (numeric) { td.className = "n"; }
    if (cls) { td.className = (td.className ? td.className + " " : "") + cls; }
    return td;
  }

  function fillTable(id, rows, columns, empty) {
    var body = $(id).tBodies[0];
    var fresh = document.createDocumentFragment();
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = cell(empty, false, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      if (row.id) { tr.id = row.id; }
      row.cells.forEach(function (c) { tr.appendChild(cell(c[0], c[1], c[2])); });
      fresh.appendChild(tr);
    });
    while (body.firstChild) { body.removeChild(body.firstChild); }
    body.appendChild(fresh);
  }

  function circuitClass(state) {
    return state === "closed" ? "state ok" : state === "open" ? "state bad" : "state warn";
  }

  function render(data) {
    var requests = data.requests, latency = data.latency_ms, proc = data.process;
    setText("version", data.version);
    setText("uptime", fmtDuration(data.uptime_seconds));
    var serving = $("serving");
    serving.textContent = data.draining ? "draining" : "serving";
    serving.className = "pill " + (data.draining ? "warn" : "ok");

    setText("total-requests", fmtInt(requests.total));
    setText("requests-per-second", fmtRate(requests.rate["1s"]));
    setText("rate-10s", fmtRate(requests.rate["10s"]));
    setText("rate-60s", fmtRate(requests.rate["60s"]));
    setText("chart-rps-now", fmtRate(requests.rate["1s"]) + "/s");
    setText("in-flight", fmtInt(data.in_flight));
    setText("latency-p50", fmtMs(latency.p50));
    setText("latency-p90", fmtMs(latency.p90));
    setText("latency-p99", fmtMs(latency.p99));
    ["2xx", "3xx", "4xx", "5xx"].forEach(function (c) { setText("status-" + c, fmtInt(requests.classes[c])); });
    setText("cache-hit-ratio", data.cache.hit_ratio === null ? "–" : fmtNum(data.cache.hit_ratio * 100, 1) + " %");
    setText("cache-hits", fmtInt(data.cache.hits));
    setText("cache-lookups", fmtInt(data.cache.lookups));
    setText("ratelimit-rejections", fmtInt(data.ratelimit.rejections));
    /* "store: down" while Redis does not answer: limits are then local or off (docs/scaling.md). */
    setText("store-state", data.store.backend === "memory" ? "memory" : data.store.backend + " " + data.store.state);
    $("store-state").className = data.store.state === "up" ? "" : "state bad";
    var open = data.circuits.filter(function (c) { return c.state !== "closed"; }).length;
    setText("open-circuits", fmtInt(open));
    setText("circuit-count", fmtInt(data.circuits.length));
    setText("cpu-percent", fmtNum(proc.cpu_percent, 1) + " %");
    setText("rss", fmtBytes(proc.rss_bytes));
    setText("event-loop-lag", fmtMs(proc.event_loop_lag_ms) + " ms");

    var h = data.history;
    legend("legend-latency", ["p50", "p90", "p99"]);
    legend("legend-status", ["2xx", "3xx", "4xx", "5xx"]);
    drawChart($("chart-requests"), [{ color: COLORS.requests, values: h.requests }], fmtRate, 1);
    drawChart($("chart-latency"), ["p50", "p90", "p99"].map(function (p) {
      return { color: COLORS[p], values: h[p] };
    }), fmtMs, 1);
    drawChart($("chart-status"), ["2xx", "3xx", "4xx", "5xx"].map(function (c) {
      return { color: COLORS[c], values: h[c] };
    }), fmtRate, 1);
    drawChart($("chart-cpu"), [{ color: COLORS.cpu, values: h.cpu_percent }],
      function (v) { return fmtNum(v, v % 1 ? 1 : 0) + "%"; }, 10);
    drawChart($("chart-rss"), [{ color: COLORS.rss, values: h.rss_bytes.map(function (v) {
      return v === null ? null : v / 1048576;
    }) }], function (v) { return fmtNum(v, v % 1 ? 1 : 0) + "M"; }, 16);
    drawChart($("chart-lag"), [{ color: COLORS.lag, values: h.event_loop_lag_ms }], fmtMs, 1);

    fillTable("routes-table", data.routes.map(function (r) {
      return { id: "route-" + r.name, cells: [
        [r.name], [r.prefix === null ? "(router)" : r.prefix], [r.upstream || "–"],
        [fmtInt(r.requests), true], [fmtRate(r.rate), true], [fmtInt(r.client_errors), true],
        [fmtInt(r.errors), true, r.errors ? "c5" : ""], [fmtMs(r.latency_ms.p50), true],
        [fmtMs(r.latency_ms.p99), true]
      ] };
    }), 9, "no routes");

    // Each aggregate, then its parts (their failures by reason, as status.json counts them).
    var aggregates = data.aggregates || [];
    $("aggregates-panel").hidden = aggregates.length === 0;
    var aggregateRows = [];
    aggregates.forEach(function (a) {
      aggregateRows.push({ id: "aggregate-" + a.name, cells: [
        [a.name], [a.path], [fmtInt(a.requests), true], [fmtRate(a.rate), true],
        [fmtInt(a.partial), true, a.partial ? "c4" : ""],
        [fmtInt(a.errors), true, a.errors ? "c5" : ""], [""],
        [fmtMs(a.latency_ms.p50), true], [fmtMs(a.latency_ms.p99), true]
      ] });
      a.parts.forEach(function (p) {
        var reasons = Object.keys(p.outcomes).filter(function (k) { return k !== "ok"; })
          .map(function (k) { return k + " " + fmtInt(p.outcomes[k]); }).join(", ");
        aggregateRows.push({ id: "aggregate-" + a.name + "-" + p.name, cells: [
          ["\u2514 " + p.name], [p.upstream], [fmtInt(p.requests), true], [""], [""],
          [fmtInt(p.failures), true, p.failures ? "c5" : ""], [reasons || "–"],
          [fmtMs(p.latency_ms.p50), true], [fmtMs(p.latency_ms.p99), true]
        ] });
      });
    });
    fillTable("aggregates-table", aggregateRows, 9, "no aggregates");

    var targets = [];
    data.upstreams.forEach(function (u) {
      u.targets.forEach(function (t) {
        /* In panic the targets out after failures take requests again: say so, in amber. */
        var pool = t.available ? ["in pool", false, "state ok"]
          : u.panic && t.healthy ? ["panic", false, "state warn"]
          : ["out (" + fmtNum(t.out_for_seconds, 0) + " s)", false, "state bad"];
        targets.push({ id: "target-" + u.name + "-" + t.url, cells: [
          u.panic ? [u.name + " (panic)", false, "state warn"] : [u.name], [t.url], pool,
          [u.health_check ? (t.healthy ? "healthy" : "unhealthy") : "passive", false,
            t.healthy ? "state ok" : "state bad"],
          [fmtInt(t.in_flight), true], [fmtInt(t.requests), true],
          [fmtInt(t.errors), true, t.errors ? "c5" : ""], [fmtInt(t.fails), true]
        ] });
      });
    });
    fillTable("targets-table", targets, 8, "no upstreams");

    // With workers = N the parent's status.json lists each worker; one process has no list.
    var workers = data.workers;
    $("workers-panel").hidden = !workers;
    if (workers) {
      setText("worker-restarts", fmtInt(data.restarts || 0) + " restarted after dying");
      fillTable("workers-table", workers.map(function (w) {
        return { id: "worker-" + w.index, cells: [
          [String(w.index)], [String(w.pid), true],
          [w.retiring ? "retiring" : (w.ready ? "serving" : "starting")],
          [fmtDuration(w.uptime_seconds), true], [fmtInt(w.requests), true],
          [fmtInt(w.in_flight), true],
          [w.cpu_percent === null || w.cpu_percent === undefined ? "–" :
            fmtNum(w.cpu_percent, 1) + "%", true],
          [w.rss_bytes ? fmtBytes(w.rss_bytes) : "–", true]
        ] };
      }), 8, "no worker serving");
    }

    fillTable("circuits-table", data.circuits.map(function (c) {
      var t = c.transitions || {};
      return { id: "circuit-" + c.filter, cells: [
        [c.filter], [c.state.replace("_", "-"), false, circuitClass(c.state)],
        [fmtInt(t.open || 0), true], [fmtInt(t.half_open || 0), true], [fmtInt(t.closed || 0), true]
      ] };
    }), 5, "no circuit_breaker filters");

    fillTable("ratelimit-table", data.ratelimit.filters.map(function (f) {
      return { id: "ratelimit-" + f.filter, cells: [
        [f.filter], [fmtInt(f.rejections), true], [fmtInt(f.shadow_rejections), true],
        [fmtInt(f.store_failures), true]
      ] };
    }), 4, "no ratelimit filters");

    var results = Object.keys(data.cache.results).sort();
    fillTable("cache-table", results.map(function (name) {
      return { id: "cache-" + name, cells: [[name], [fmtInt(data.cache.results[name]), true]] };
    }), 2, "no cached routes yet");
  }

  function connection(ok, text) {
    var el = $("connection");
    el.textContent = text;
    el.className = "connection" + (ok ? "" : " lost");
  }

  function poll() {
    var request = new XMLHttpRequest();
    request.open("GET", "status.json", true);
    request.setRequestHeader("Cache-Control", "no-cache");
    request.timeout = 5000;
    request.onload = function () {
      if (request.status === 200) {
        try {
          last = JSON.parse(request.responseText);
          render(last);
          connection(true, "updated " + new Date().toLocaleTimeString());
        } catch (error) {
          connection(false, "bad status.json: " + error.message);
        }
      } else {
        connection(false, "status.json answered " + request.status);
      }
      setTimeout(poll, POLL_MS);
    };
    request.onerror = request.ontimeout = function () {
      connection(false, "connection lost, retrying…");
      setTimeout(poll, POLL_MS);
    };
    request.send();
  }

  window.addEventListener("resize", function () { if (last) { render(last); } });
  poll();
}());
