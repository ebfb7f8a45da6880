// orpipe's live telemetry dashboard: reads frames from the telemetry WebSocket
// (adapters/telemetry_server.py) and draws line charts on <canvas> by hand.
// No build step and no library, so it works offline and from any checkout.
//
// Each frame is one sample of Engine.statistics() (actors/telemetry_core.py).
// The page keeps at most MAX_POINTS points per series and MAX_SERIES series per
// chart, so a long session cannot grow its memory. After each redraw it
// writes what it drew into data attributes, for the headless-browser test:
// body[data-frames] (frames received), body[data-seq] (the newest frame's
// number), body[data-status], and on each canvas
// data-points (points drawn, all series) and data-series.
"use strict";

(function () {
  const MAX_POINTS = 300;
  const MAX_SERIES = 16;
  const PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
    "#8c6d31", "#843c39", "#7b4173", "#3182bd",
  ];

  // One chart: named series of {t, v} points, a canvas and a legend.
  class Chart {
    constructor(name, unit) {
      this.canvas = document.getElementById(`chart-${name}`);
      this.legend = document.getElementById(`legend-${name}`);
      this.unit = unit;
      this.series = new Map();
    }

    clear() {
      this.series.clear();
    }

    add(name, t, v) {
      let points = this.series.get(name);
      if (points === undefined) {
        if (this.series.size >= MAX_SERIES) {
          return; // more series than anyone can read; the table still lists them
        }
        points = [];
        this.series.set(name, points);
      }
      points.push({ t, v });
      if (points.length > MAX_POINTS) {
        points.splice(0, points.length - MAX_POINTS);
      }
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
      const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      const w = width / ratio;
      const h = height / ratio;
      ctx.clearRect(0, 0, w, h);

      let tMin = Infinity;
      let tMax = -Infinity;
      let vMax = 0;
      for (const points of this.series.values()) {
        for (const p of points) {
          tMin = Math.min(tMin, p.t);
          tMax = Math.max(tMax, p.t);
          vMax = Math.max(vMax, p.v);
        }
      }
      if (!Number.isFinite(tMin)) {
        tMin = 0;
        tMax = 1;
      }
      if (tMax - tMin < 1) {
        tMax = tMin + 1;
      }
      vMax = niceCeiling(vMax);

      const left = 48;
      const right = 24;
      const top = 8;
      const bottom = 22;
      const plotW = w - left - right;
      const plotH = h - top - bottom;
      const x = (t) => left + ((t - tMin) / (tMax - tMin)) * plotW;
      const y = (v) => top + plotH - (v / vMax) * plotH;

      // Grid and axis labels.
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#66707a";
      ctx.strokeStyle = "#e3e6ea";
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let i = 0; i <= 4; i += 1) {
        const v = (vMax * i) / 4;
        const yy = Math.round(y(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(left, yy);
        ctx.lineTo(left + plotW, yy);
        ctx.stroke();
        ctx.fillText(formatNumber(v), left - 6, yy);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let i = 0; i <= 4; i += 1) {
        const t = tMin + ((tMax - tMin) * i) / 4;
        ctx.fillText(`${t.toFixed(tMax - tMin < 20 ? 1 : 0)} s`, x(t), top + plotH + 6);
      }

      // One polyline per series.
      let drawn = 0;
      let index = 0;
      this.legend.replaceChildren();
      for (const [name, points] of this.series) {
        const color = PALETTE[index % PALETTE.length];
        index += 1;
        ctx.strokeStyle = color;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        points.forEach((p, i) => {
          if (i === 0) {
            ctx.moveTo(x(p.t), y(p.v));
          } else {
            ctx.lineTo(x(p.t), y(p.v));
          }
        });
        if (points.length === 1) {
          ctx.fillStyle = color;
          ctx.fillRect(x(points[0].t) - 1.5, y(points[0].v) - 1.5, 3, 3);
        }
        ctx.stroke();
        drawn += points.length;
        this.legend.append(legendItem(name, color, points[points.length - 1].v, this.unit));
      }
      canvas.dataset.points = String(drawn);
      canvas.dataset.series = String(this.series.size);
    }
  }

  function niceCeiling(v) {
    if (!(v > 0)) {
      return 1;
    }
    const magnitude = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * magnitude >= v) {
        return step * magnitude;
      }
    }
    return 10 * magnitude;
  }

  function formatNumber(v) {
    if (v === 0) {
      return "0";
    }
    if (Math.abs(v) >= 1000) {
      return `${(v / 1000).toFixed(1)}k`;
    }
    return Number.isInteger(v) ? String(v) : v.toFixed(2);
  }

  function legendItem(name, color, latest, unit) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    item.append(swatch, `${name}: ${formatNumber(latest)}${unit}`);
    return item;
  }

  const charts = {
    occupancy: new Chart("occupancy", ""),
    inflight: new Chart("inflight", ""),
    rejections: new Chart("rejections", "/s"),
  };
  let frames = 0;
  let previous = null;
  let latest = null;
  let drawPending = false;

  function reset() {
    for (const chart of Object.values(charts)) {
      chart.clear();
    }
    previous = null;
  }

  function take(frame) {
    frames += 1;
    const t = frame.t;
    for (const [name, stats] of Object.entries(frame.channels || {})) {
      charts.occupancy.add(name, t, stats.current_buffer_used);
    }
    const admission = frame.admission || {};
    charts.inflight.add("in flight", t, admission.in_flight);
    charts.inflight.add("waiting", t, admission.waiting);
    // Rates need two frames; a counter that went down means the engine restarted.
    if (previous !== null && t > previous.t) {
      const before = previous.admission || {};
      const span = t - previous.t;
      for (const key of ["rejected_total", "shed_total"]) {
        const delta = (admission[key] || 0) - (before[key] || 0);
        charts.rejections.add(key.replace("_total", ""), t, Math.max(0, delta) / span);
      }
    }
    previous = frame;
    latest = frame;
    scheduleDraw();
  }

  function scheduleDraw() {
    if (!drawPending) {
      drawPending = true;
      // Coalesce: the history arrives as a burst of messages; draw once after it.
      setTimeout(draw, 0);
    }
  }

  function draw() {
    drawPending = false;
    for (const chart of Object.values(charts)) {
      chart.draw();
    }
    drawTable();
    document.body.dataset.frames = String(frames);
    document.body.dataset.seq = String(latest === null ? 0 : latest.seq);
    if (latest !== null) {
      const a = latest.admission || {};
      const tele = latest.telemetry || {};
      setStatus(
        "live",
        `frame ${latest.seq} at ${new Date(latest.unix_s * 1000).toLocaleTimeString()} · ` +
          `in flight ${a.in_flight}/${a.max_concurrent} · waiting ${a.waiting}/${a.queue_maxsize} · ` +
          `admitted ${a.admitted_total} · rejected ${a.rejected_total} · shed ${a.shed_total} · ` +
          `frames dropped ${tele.dropped_total}`,
      );
    }
  }

  function drawTable() {
    fillTable("#channels tbody", (latest && latest.channels) || {}, (s) => [
      s.current_buffer_used,
      s.peak_buffer_used,
      s.max_buffer_size,
      s.tasks_waiting_send,
      s.tasks_waiting_receive,
      s.instances,
    ]);
    fillTable("#breakers tbody", (latest && latest.breakers) || {}, (s) => [
      s.tracked,
      s.closed,
      s.open,
      s.half_open,
    ]);
  }

  // One row per entry of a frame section: its name, then the cells ``columns`` picks.
  function fillTable(selector, section, columns) {
    const rows = [];
    for (const [name, s] of Object.entries(section)) {
      const row = document.createElement("tr");
      for (const value of [name, ...columns(s)]) {
        const cell = document.createElement("td");
        cell.textContent = String(value);
        row.append(cell);
      }
      rows.push(row);
    }
    document.querySelector(selector).replaceChildren(...rows);
  }

  function setStatus(status, text) {
    document.body.dataset.status = status;
    document.getElementById("status").textContent = text;
  }

  async function socketUrl() {
    const fromQuery = new URLSearchParams(window.location.search).get("ws");
    if (fromQuery) {
      return fromQuery;
    }
    const response = await fetch("config.json", { cache: "no-store" });
    const config = await response.json();
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${window.location.hostname}:${config.ws_port}${config.ws_path}`;
  }

  let retryMs = 500;

  async function connect() {
    let url;
    try {
      url = await socketUrl();
    } catch (err) {
      setStatus("error", `cannot find the telemetry WebSocket (${err}); retrying`);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
      return;
    }
    const socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      retryMs = 500;
      // The server starts with its recent history: rebuild the charts from it.
      reset();
      setStatus("live", `connected to ${url}`);
    });
    socket.addEventListener("message", (event) => {
      take(JSON.parse(event.data));
    });
    socket.addEventListener("close", (event) => {
      setStatus("closed", `disconnected (${event.code || "no code"}); reconnecting…`);
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    });
  }

  // All live workers (one row each) from /workers.json, every few seconds. A server
  // without the Redis fan-in answers 404: the panel stays hidden and polling stops.
  async function pollWorkers() {
    let response;
    try {
      response = await fetch("workers.json", { cache: "no-store" });
    } catch (err) {
      setTimeout(pollWorkers, 5000);
      return;
    }
    if (response.status === 404) {
      return;
    }
    if (response.ok) {
      const workers = (await response.json()).workers || {};
      const now = Date.now() / 1000;
      document.getElementById("workers-panel").hidden = false;
      fillTable("#workers tbody", workers, (f) => [
        Math.max(0, now - (f.unix_s || now)).toFixed(1),
        f.admission ? f.admission.in_flight : "",
        f.admission ? f.admission.waiting : "",
        f.admission ? f.admission.admitted_total : "",
        f.admission ? f.admission.rejected_total : "",
        f.ledger && f.ledger.mode ? f.ledger.mode : "—",
      ]);
    }
    setTimeout(pollWorkers, 2000);
  }

  window.addEventListener("resize", scheduleDraw);
  connect();
  pollWorkers();
})();
