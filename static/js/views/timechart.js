// One time-series chart (uPlot, vendored under static/vendor/uplot/) over a SeriesSet: the
// details panel's graph of one key (min–max band, average, state bands behind, action marks)
// and the Graphs tab's many keys (one average line each, a legend). Redrawn at most once a
// frame, sized to its box, coloured from the page's theme. uPlot writes legend labels with
// textContent, and state bands and marks are drawn on its canvas: no event text becomes HTML.

import uPlot from '../../vendor/uplot/uPlot.esm.js';
import { clockMode } from '../format.js';
import { coalesce } from '../dom.js';

/**
 * @typedef {import('../series.js').SeriesSet} SeriesSet
 * @typedef {import('../series.js').Band} Band
 * @typedef {import('../series.js').Mark} Mark
 */

const HEIGHT = { key: 200, many: 360 };
const MARK_COLOURS = /** @type {Record<string, string>} */ ({ ack: '--other', unack: '--muted', silence: '--expired', unsilence: '--muted' });

/** A theme colour (a custom property of the page's stylesheet). @param {string} name */
function themeColour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

/** Distinct line colours for many series: hues a golden angle apart. @param {number} i */
export const seriesColour = (i) => `hsl(${Math.round((i * 137.508) % 360)} 70% 45%)`;

/** @param {number} ms */
const onClock = (ms) => (clockMode() === 'utc' ? uPlot.tzDate(new Date(ms), 'Etc/UTC') : new Date(ms));

/**
 * @param {HTMLElement} node  the chart's box (its width is the chart's)
 * @param {{ kind: 'key' | 'many' }} options  one key with its band, or many keys' averages
 */
export function createTimeChart(node, { kind }) {
  /** @type {uPlot | null} */
  let plot = null;
  /** @type {SeriesSet | null} */
  let set = null;
  /** @type {string[]} */
  let keys = [];
  /** @type {Band[]} */
  let bands = [];
  /** @type {Mark[]} */
  let marks = [];
  /**
   * What is drawn, for tests, benchmarks and the console: the series' labels, the points drawn,
   * the bucket times, each series' latest average (`last`) and latest raw value (`newest`).
   */
  const shown = {
    labels: /** @type {string[]} */ ([]),
    points: 0,
    x: /** @type {number[]} */ ([]),
    last: /** @type {(number | null)[]} */ ([]),
    newest: /** @type {(number | null)[]} */ ([]),
  };

  const axis = () => ({
    stroke: () => themeColour('--muted'),
    grid: { stroke: () => themeColour('--line'), width: 1 },
    ticks: { stroke: () => themeColour('--line'), width: 1 },
  });

  /** State bands behind the lines, at low opacity, in the state colours. @param {uPlot} u */
  function drawBands(u) {
    if (!bands.length) return;
    const { ctx, bbox } = u;
    ctx.save();
    ctx.globalAlpha = 0.14;
    for (const b of bands) {
      const x0 = u.valToPos(b.from, 'x', true);
      const x1 = u.valToPos(b.to, 'x', true);
      ctx.fillStyle = themeColour(`--${b.cls}`);
      ctx.fillRect(Math.max(x0, bbox.left), bbox.top, Math.min(x1, bbox.left + bbox.width) - Math.max(x0, bbox.left), bbox.height);
    }
    ctx.restore();
  }

  /** Actions as dashed vertical lines with a letter on top (A ack, S silence, × an end of either). @param {uPlot} u */
  function drawMarks(u) {
    if (!marks.length) return;
    const { ctx, bbox } = u;
    const dpr = devicePixelRatio || 1;
    ctx.save();
    ctx.setLineDash([4 * dpr, 3 * dpr]);
    ctx.lineWidth = dpr;
    ctx.font = `${10 * dpr}px sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const m of marks) {
      const x = Math.round(u.valToPos(m.at, 'x', true));
      if (x < bbox.left || x > bbox.left + bbox.width) continue;
      ctx.strokeStyle = themeColour(MARK_COLOURS[m.kind] ?? '--muted');
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      ctx.fillText(m.kind === 'ack' ? 'A' : m.kind === 'silence' ? 'S' : '×', x + 6 * dpr, bbox.top + 2 * dpr);
    }
    ctx.restore();
  }

  /** @returns {uPlot.Series[]} */
  function seriesOptions() {
    if (kind === 'key') {
      return [
        {},
        { label: 'min', stroke: () => themeColour('--other'), width: 0, points: { show: false }, spanGaps: true },
        { label: 'max', stroke: () => themeColour('--other'), width: 0, points: { show: false }, spanGaps: true },
        { label: 'avg', stroke: () => themeColour('--other'), width: 1.5, spanGaps: true },
      ];
    }
    const labels = keys.map((k) => set?.series.get(k)?.label ?? k);
    return [{}, ...labels.map((label, i) => ({ label, stroke: seriesColour(i), width: 1.25, spanGaps: true }))];
  }

  function build() {
    plot?.destroy();
    /** @type {uPlot.Options} */
    const opts = {
      width: Math.max(200, node.clientWidth),
      height: HEIGHT[kind],
      ms: 1,
      tzDate: onClock,
      series: seriesOptions(),
      bands: kind === 'key' ? [{ series: [2, 1], fill: () => `${themeColour('--other')}33` }] : [],
      scales: { x: { time: true, range: () => [set?.from ?? 0, set?.to ?? 1] } },
      axes: [axis(), axis()],
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      hooks: { drawClear: [drawBands], draw: [drawMarks] },
    };
    plot = new uPlot(opts, data(), node);
  }

  /** @returns {uPlot.AlignedData} */
  function data() {
    if (!set) return [[]];
    const picks = kind === 'key' ? [1, 2, 3] : [3];
    const { x, columns } = set.columns(picks, keys);
    shown.x = x;
    let points = 0;
    for (const c of columns) for (const v of c) if (v !== null) points += 1;
    shown.points = points;
    shown.labels = keys.map((k) => set?.series.get(k)?.label ?? k);
    shown.newest = keys.map((k) => set?.series.get(k)?.points.at(-1)?.[4] ?? null);
    shown.last = columns.filter((_, i) => kind !== 'key' || i === 2).map((c) => {
      for (let i = c.length - 1; i >= 0; i -= 1) if (c[i] !== null) return c[i];
      return null;
    });
    node.dataset.points = String(shown.points);
    node.dataset.series = String(keys.length);
    return /** @type {uPlot.AlignedData} */ ([x, ...columns]);
  }

  const redraw = coalesce(() => {
    if (!plot || !set || node.clientWidth === 0) return;
    set.trim(Date.now());
    plot.setData(data(), true);
  });

  const resize = new ResizeObserver(() => {
    if (plot && node.clientWidth > 0 && Math.abs(plot.width - node.clientWidth) > 1) plot.setSize({ width: node.clientWidth, height: HEIGHT[kind] });
    else if (!plot && set && node.clientWidth > 0) build();
  });
  resize.observe(node);

  return {
    shown,
    /**
     * Shows a new SeriesSet (a new key, query or range): the chart is rebuilt for its series.
     * @param {SeriesSet | null} next
     * @param {string[]} [only]  which of its series, in order (default: all)
     */
    show(next, only) {
      const before = keys;
      set = next;
      keys = next ? (only ?? next.keys()) : [];
      if (!next) {
        plot?.destroy();
        plot = null;
        shown.labels = [];
        shown.points = 0;
        shown.x = [];
        shown.last = [];
        shown.newest = [];
        delete node.dataset.points;
        node.dataset.series = '0';
        return;
      }
      next.trim(Date.now());
      // The same series again (a refresh): new data on the same chart, so what the reader
      // hid in the legend stays hidden.
      const same = plot !== null && before.length === keys.length && before.every((k, i) => k === keys[i]);
      if (same && plot && node.clientWidth > 0) plot.setData(data(), true);
      else if (node.clientWidth > 0) build();
    },
    /**
     * State bands and action marks (the details graph).
     * @param {Band[]} nextBands
     * @param {Mark[]} nextMarks
     */
    decorate(nextBands, nextMarks) {
      bands = nextBands;
      marks = nextMarks;
      node.dataset.bands = String(bands.length);
      node.dataset.marks = String(marks.length);
      plot?.redraw(false);
    },
    /** Folds a live frame in (metrics, change); redraws (once a frame) when it touched this chart. @param {Record<string, any>} frame */
    onFrame(frame) {
      if (set?.foldFrame(frame)) redraw();
    },
    /** Moves the window to "now" (and the theme or clock, which the axes read on drawing). */
    refresh() {
      if (plot) redraw();
      else if (set && node.clientWidth > 0) build();
    },
    destroy() {
      resize.disconnect();
      plot?.destroy();
      plot = null;
    },
  };
}
