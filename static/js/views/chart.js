// Rate chart: events/s and changes/min over the last hour, from the server's cumulative counters
// (the `stats` frames live, and `GET /api/rates` for the hour before the page connected). The
// series outlives sockets; a counter going backwards (server restart) starts a fresh baseline.
// Drawn by hand on a canvas, at most once per second.

import { $, setText } from '../dom.js';
import { fmtRate } from '../format.js';

export const RATE_WINDOW_MS = 3600_000;

/**
 * Rates from cumulative samples [[t ms, events, changes]…] (oldest first): events/s and
 * changes/min between consecutive samples; a counter going backwards starts a new baseline.
 * Pure.
 * @param {unknown[]} samples  [ms, events, changes] counters from /api/rates
 */
export function ratesFromSamples(samples) {
  const events = [];
  const changes = [];
  let base = null;
  for (const s of samples) {
    if (!Array.isArray(s) || s.length < 3) continue;
    const [t, ev, ch] = s;
    if (base && t > base[0] && ev >= base[1] && ch >= base[2]) {
      const dt = t - base[0];
      events.push([t, (ev - base[1]) * 1000 / dt]);
      changes.push([t, (ch - base[2]) * 60_000 / dt]);
    }
    base = [t, ev, ch];
  }
  return { events, changes, base };
}

export function createChart() {
  /** @type {{ events: number[][], changes: number[][] }} */
  const rates = { events: [], changes: [] }; // [t ms, value]
  /** @type {{ at: number, events: number | null, changes: number | null } | null} */
  let rateBase = null;
  let chartDrawnAt = 0;
  /** @type {number | null} */
  let chartTimer = null;
  const chartCanvas = /** @type {HTMLCanvasElement} */ ($('rate-chart'));

  /**
   * @param {number[][]} series
   * @param {number} now
   */
  function trimSeries(series, now) {
    let drop = 0;
    while (drop < series.length && series[drop][0] < now - RATE_WINDOW_MS) drop += 1;
    if (drop) series.splice(0, drop);
  }

  /**
   * Records a `stats` frame; returns the events/s it makes (null before there are two frames).
   * The legend's figures are set here, not with the canvas (drawn at most once a second), so
   * the legend and the header show the same figure at the same moment.
   * @param {Record<string, any>} msg  a stats frame
   */
  function recordRates(msg) {
    // The frame's own time (servers since issue 24): frames can arrive bunched, and a rate by
    // arrival times would spike.
    const now = typeof msg.time === 'number' && Number.isFinite(msg.time) ? msg.time : Date.now();
    const ev = typeof msg.events === 'number' ? msg.events : null;
    const ch = typeof msg.changes === 'number' ? msg.changes : null;
    if (ev === null && ch === null) return null;
    let eventsRate = null;
    if (rateBase && now > rateBase.at) {
      const dt = now - rateBase.at;
      if (ev !== null && rateBase.events !== null && ev >= rateBase.events) {
        eventsRate = (ev - rateBase.events) * 1000 / dt;
        rates.events.push([now, eventsRate]);
      }
      if (ch !== null && rateBase.changes !== null && ch >= rateBase.changes) {
        rates.changes.push([now, (ch - rateBase.changes) * 60_000 / dt]);
      }
    }
    // Backwards counters simply become the new baseline (no point is recorded for them).
    rateBase = { at: now, events: ev, changes: ch };
    trimSeries(rates.events, now);
    trimSeries(rates.changes, now);
    setLegend();
    scheduleChart();
    return eventsRate;
  }

  function setLegend() {
    const lastE = rates.events.at(-1);
    const lastC = rates.changes.at(-1);
    setText($('rate-events-now'), lastE ? fmtRate(lastE[1]) : '–');
    setText($('rate-changes-now'), lastC ? fmtRate(lastC[1]) : '–');
  }

  function scheduleChart() {
    if (chartTimer) return;
    const wait = Math.max(0, 1000 - (Date.now() - chartDrawnAt));
    chartTimer = setTimeout(() => {
      chartTimer = null;
      drawChart();
    }, wait);
  }

  function drawChart() {
    chartDrawnAt = Date.now();
    setLegend();
    chartCanvas.dataset.points = String(rates.events.length);
    if (document.hidden) return;
    const dpr = window.devicePixelRatio || 1;
    const w = chartCanvas.clientWidth;
    const h = chartCanvas.clientHeight;
    if (!w || !h) return;
    if (chartCanvas.width !== Math.round(w * dpr) || chartCanvas.height !== Math.round(h * dpr)) {
      chartCanvas.width = Math.round(w * dpr);
      chartCanvas.height = Math.round(h * dpr);
    }
    const ctx = chartCanvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue('--muted').trim() || '#5f6b7a';
    const line = css.getPropertyValue('--line').trim() || '#dfe3e8';
    const now = Date.now();
    const x0 = 44;
    const x1 = w - 8;
    const xOf = (/** @type {number} */ t) => x0 + (x1 - x0) * (1 - (now - t) / RATE_WINDOW_MS);
    const bands = [
      { series: rates.events, colour: css.getPropertyValue('--other').trim() || '#1c7ed6', label: 'events/s', top: 6, bottom: h / 2 - 8 },
      { series: rates.changes, colour: css.getPropertyValue('--warning').trim() || '#f59f00', label: 'changes/min', top: h / 2 + 4, bottom: h - 16 },
    ];
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (const band of bands) {
      let max = 0;
      for (const [, v] of band.series) if (v > max) max = v;
      const top = max > 0 ? niceCeil(max) : 1;
      const yOf = (/** @type {number} */ v) => band.bottom - (band.bottom - band.top) * (v / top);
      ctx.strokeStyle = line;
      ctx.beginPath();
      ctx.moveTo(x0, band.bottom + 0.5);
      ctx.lineTo(x1, band.bottom + 0.5);
      ctx.moveTo(x0, band.top + 0.5);
      ctx.lineTo(x1, band.top + 0.5);
      ctx.stroke();
      ctx.fillStyle = muted;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'top';
      ctx.fillText(fmtRate(top).replace(/\.0+$/, ''), x0 - 4, band.top - 2);
      ctx.textBaseline = 'bottom';
      ctx.fillText('0', x0 - 4, band.bottom + 4);
      if (band.series.length) {
        ctx.strokeStyle = band.colour;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        band.series.forEach(([t, v], i) => {
          const x = xOf(t);
          const y = yOf(v);
          if (i === 0) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
        });
        ctx.stroke();
        ctx.lineWidth = 1;
      }
    }
    ctx.fillStyle = muted;
    ctx.textBaseline = 'bottom';
    ctx.textAlign = 'left';
    ctx.fillText('−60 min', x0, h);
    ctx.textAlign = 'center';
    ctx.fillText('−30 min', (x0 + x1) / 2, h);
    ctx.textAlign = 'right';
    ctx.fillText('now', x1, h);
  }

  /**
   * 1, 2, 5 × 10^n at or above v.
   * @param {number} v
   */
  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  window.addEventListener('resize', scheduleChart);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) scheduleChart(); });


  /**
   * The hour before this page connected, from GET /api/rates. Server time stamps are used as
   * they are (the page and the server are assumed to agree on the time within seconds); points
   * already recorded live are kept, older ones are put in front.
   * @param {unknown[]} samples
   */
  function loadHistory(samples) {
    const past = ratesFromSamples(samples);
    const firstLive = rates.events[0]?.[0] ?? Infinity;
    const now = Date.now();
    rates.events = past.events.filter(([t]) => t < firstLive).concat(rates.events);
    rates.changes = past.changes.filter(([t]) => t < firstLive).concat(rates.changes);
    trimSeries(rates.events, now);
    trimSeries(rates.changes, now);
    scheduleChart();
  }

  return { rates, record: recordRates, loadHistory, schedule: scheduleChart };
}
