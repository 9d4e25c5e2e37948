// The details panel's graph of one key: its metric over the last 1 h / 6 h / 24 h / 7 d from
// `GET /api/series` (min–max band and average), its state as coloured bands and the operator
// actions on it as marks (both from the history the panel reads anyway), extended live by the
// `metrics` frames. The panel re-renders its body often; this block is one node it re-appends,
// so the chart survives those renders.

import { el, setText, timeEl } from '../dom.js';
import {
  DEFAULT_RANGE, RANGES, SeriesSet, parseSeriesAnswer, stateBands, actionMarks, seriesLabel, concernsKey,
} from '../series.js';
import { splitKey } from '../model.js';
import { createTimeChart } from './timechart.js';

/** The window moves on at least this often while a graph is open, frames or not. */
const SLIDE_MS = 5_000;
/** Records kept for bands and marks: history's, then live ones (the oldest go first). */
const MAX_RECORDS = 4_000;

/**
 * Set by a 404 (a server before series, or `--series off`; its sentence): later graphs say so
 * at once instead of asking again.
 * @type {string | null}
 */
let noSeries = null;

/**
 * Reads `GET /api/series` for `query` over [from, to] (ms). Resolves to a SeriesSet for a graph
 * `rangeMs` wide, or to the sentence that says why not (the server's own for a 400).
 * @param {{ token: string }} auth
 * @param {string} query
 * @param {number} from
 * @param {number} to
 * @returns {Promise<{ set: SeriesSet, error: null } | { set: null, error: string }>}
 */
export async function fetchSeries({ token }, query, from, to) {
  if (noSeries !== null) return { set: null, error: noSeries };
  const url = new URL('api/series', location.href);
  url.searchParams.set('query', query);
  url.searchParams.set('from', String(Math.floor(from)));
  url.searchParams.set('to', String(Math.ceil(to)));
  if (token) url.searchParams.set('token', token);
  let res;
  let body = null;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' } });
    if ((res.headers.get('content-type') ?? '').includes('json')) body = await res.json();
  } catch (err) {
    return { set: null, error: `Could not load the series: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!res.ok) {
    const error = typeof body?.error === 'string' ? body.error
      : res.status === 404 ? 'This server keeps no metric series.' : `The server answered ${res.status} for the series.`;
    if (res.status === 404) noSeries = error;
    return { set: null, error };
  }
  const parsed = parseSeriesAnswer(body);
  if (parsed.error !== null) return { set: null, error: parsed.error };
  return { set: new SeriesSet(parsed.answer, to - from), error: null };
}

/**
 * @param {object} deps
 * @param {string} deps.token
 * @param {(key: string) => string} deps.keyQuery  a Riemann query for exactly this key
 * @param {(key: string) => string | null} deps.currentState  the key's state now (bands when history has no change)
 */
export function createKeyGraph({ token, keyQuery, currentState }) {
  const node = el('section', 'key-graph');
  node.setAttribute('aria-label', 'Metric graph');
  const head = el('div', 'key-graph-head');
  const title = el('h3', null, 'Metric');
  const ranges = el('div', 'range-buttons');
  ranges.setAttribute('role', 'group');
  ranges.setAttribute('aria-label', 'Time range');
  head.append(title, ranges);
  const box = el('div', 'chart-box');
  box.id = 'key-graph-chart';
  box.setAttribute('role', 'figure');
  const note = el('p', 'graph-note');
  note.hidden = true;
  const markList = el('ol', 'graph-marks');
  markList.setAttribute('aria-label', 'Actions on the graph');
  node.append(head, box, note, markList);
  const chart = createTimeChart(box, { kind: 'key' });

  const g = {
    /** @type {string | null} */
    key: null,
    range: DEFAULT_RANGE,
    /** History records (changes and actions), with live ones appended. @type {Record<string, any>[]} */
    records: /** @type {Record<string, any>[]} */ ([]),
    /** Bumped by each load, so a slow answer for an older key or range is dropped. */
    generation: 0,
    chart,
  };

  for (const name of Object.keys(RANGES)) {
    const b = el('button', 'toggle range', name);
    b.type = 'button';
    b.dataset.range = name;
    b.addEventListener('click', () => {
      g.range = name;
      load();
    });
    ranges.append(b);
  }

  /** @param {string} text */
  function showNote(text) {
    setText(note, text);
    note.hidden = text === '';
  }

  async function load() {
    const key = g.key;
    if (key === null) return;
    g.generation += 1;
    const generation = g.generation;
    for (const b of /** @type {NodeListOf<HTMLElement>} */ (ranges.querySelectorAll('button'))) {
      b.setAttribute('aria-pressed', String(b.dataset.range === g.range));
    }
    const to = Date.now();
    const answer = await fetchSeries({ token }, keyQuery(key), to - RANGES[g.range], to);
    if (generation !== g.generation) return;
    if (answer.error !== null) {
      chart.show(null);
      showNote(answer.error);
      return;
    }
    const empty = answer.set.series.size === 0;
    const [host, service] = splitKey(key);
    box.setAttribute('aria-label', `Metric of ${seriesLabel(host, service)} over the last ${g.range}: minimum, maximum and average per bucket`);
    chart.show(empty ? null : answer.set);
    showNote(empty ? `No metric recorded in the last ${g.range}.` : '');
    decorate();
  }

  function decorate() {
    if (g.key === null) return;
    const now = Date.now();
    const from = now - RANGES[g.range];
    const bands = stateBands(g.records, g.key, from, now, g.key ? currentState(g.key) : null);
    const marks = actionMarks(g.records, g.key).filter((m) => m.at >= from);
    chart.decorate(bands, marks);
    markList.replaceChildren(...marks.slice(-10).reverse().map((m) => {
      const li = el('li', `graph-mark mark-${m.kind}`);
      li.append(timeEl('mark-time', m.at, 'short'), el('span', 'mark-text', m.approx ? `${m.text} (at or after)` : m.text));
      return li;
    }));
  }

  setInterval(() => {
    if (g.key !== null && !document.hidden) {
      chart.refresh();
      decorate();
    }
  }, SLIDE_MS);

  return Object.assign(g, {
    node,
    /** A key was opened: its graph loads (history comes later, through setHistory). @param {string} key */
    open(key) {
      g.key = key;
      g.records = [];
      chart.show(null);
      markList.replaceChildren();
      showNote('Loading the metric…');
      load();
    },
    close() {
      g.key = null;
      g.generation += 1;
      chart.show(null);
    },
    /** @param {Record<string, any>[]} records  the key's history (changes and action records, any order) */
    setHistory(records) {
      g.records = records.filter((r) => concernsKey(r, /** @type {string} */ (g.key))).slice(-MAX_RECORDS);
      decorate();
    },
    /**
     * A live frame: metrics extend the graph; a change or an action on the open key is
     * recorded for its bands and marks (stamped with when it arrived).
     * @param {Record<string, any>} frame
     */
    onFrame(frame) {
      if (g.key === null || !frame) return;
      if (frame.type === 'metrics') {
        chart.onFrame(frame);
        return;
      }
      if (!concernsKey(frame, g.key)) return;
      if (frame.type === 'change') {
        chart.onFrame(frame);
        g.records.push(frame);
      } else g.records.push({ ...frame, received: Date.now() });
      if (g.records.length > MAX_RECORDS) g.records.splice(0, g.records.length - MAX_RECORDS);
      decorate();
    },
    /** The window slides to now; theme and clock are read again. */
    refresh() {
      chart.refresh();
      if (g.key !== null) decorate();
    },
  });
}
