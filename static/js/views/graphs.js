// The Graphs tab (like riemann-dash's graph view): a Riemann query and a range give up to
// MAX_GRAPH_SERIES keys' metrics on one chart with a legend, from `GET /api/series`, extended
// live by the `metrics` frames. The query and range live in the URL (`?view=graphs&graph=Q&range=6h`),
// so a link or a reload shows the same graph. The graph is read again every minute while the tab
// shows: keys that started to match appear (the page cannot evaluate queries itself), and keys
// that get no live values (the server sends them for keys with a state, in the page's
// subscription) move on. (The details graph needs no such refresh: a key it opens for has a state.)

import { $, setText } from '../dom.js';
import { DEFAULT_RANGE, MAX_GRAPH_SERIES, RANGES } from '../series.js';
import { createTimeChart } from './timechart.js';
import { fetchSeries } from './key-graph.js';

/** The window moves on at least this often while the tab shows, frames or not. */
const SLIDE_MS = 5_000;
/** The graph is read again this often while the tab shows. */
const REFETCH_MS = 60_000;

/**
 * @param {object} deps
 * @param {string} deps.token
 * @param {(name: string) => string} deps.urlParam
 * @param {(name: string, value: string) => void} deps.setUrlParam
 * @param {() => boolean} deps.visible  whether the Graphs tab is the one shown
 */
export function createGraphs({ token, urlParam, setUrlParam, visible }) {
  const form = /** @type {HTMLFormElement} */ ($('graphs-form'));
  const input = /** @type {HTMLInputElement} */ ($('graphs-query'));
  const rangeSelect = /** @type {HTMLSelectElement} */ ($('graphs-range'));
  const message = $('graphs-message');
  const count = $('graphs-count');
  const chart = createTimeChart($('graphs-chart'), { kind: 'many' });

  const g = {
    query: urlParam('graph'),
    range: Object.hasOwn(RANGES, urlParam('range')) ? urlParam('range') : DEFAULT_RANGE,
    /** The query drawn (or being drawn); '' before the first. */
    drawn: '',
    generation: 0,
    /** When the drawn graph was last asked for (ms). */
    fetchedAt: 0,
    chart,
  };
  input.value = g.query;
  rangeSelect.value = g.range;

  /** @param {string} text @param {'error' | 'info'} [kind] */
  function say(text, kind = 'info') {
    setText(message, text);
    message.hidden = text === '';
    message.dataset.kind = kind;
  }

  /** @param {{ refresh?: boolean }} [options]  a refresh keeps the chart and says nothing while it loads */
  async function draw({ refresh = false } = {}) {
    g.generation += 1;
    const generation = g.generation;
    g.drawn = g.query;
    setUrlParam('graph', g.query);
    setUrlParam('range', g.range === DEFAULT_RANGE ? '' : g.range);
    if (!g.query) {
      chart.show(null);
      setText(count, '');
      say('Type a Riemann query, e.g. service = "cpu", to graph the metrics of the services it matches.');
      return;
    }
    if (!refresh) say('Loading…');
    const to = Date.now();
    g.fetchedAt = to;
    const answer = await fetchSeries({ token }, g.query, to - RANGES[g.range], to);
    if (generation !== g.generation) return;
    if (answer.error !== null) {
      chart.show(null);
      setText(count, '');
      say(answer.error, 'error');
      return;
    }
    const keys = answer.set.keys();
    const shown = keys.slice(0, MAX_GRAPH_SERIES);
    chart.show(keys.length ? answer.set : null, shown);
    setText(count, keys.length ? `${shown.length} series` : '');
    say(keys.length === 0 ? `No metric recorded in the last ${g.range} for services that match.`
      : keys.length > shown.length ? `Showing ${shown.length} of ${keys.length} series: narrow the query to see the others.` : '');
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    g.query = input.value.trim();
    g.range = rangeSelect.value;
    draw();
  });
  rangeSelect.addEventListener('change', () => {
    g.range = rangeSelect.value;
    if (g.drawn) draw();
  });
  setInterval(() => {
    if (!visible() || document.hidden) return;
    if (g.drawn && Date.now() - g.fetchedAt >= REFETCH_MS) draw({ refresh: true });
    else chart.refresh();
  }, SLIDE_MS);

  return Object.assign(g, {
    /** The tab was shown: the first time, the URL's graph is drawn. */
    shown() {
      if (g.generation === 0) draw();
      else chart.refresh();
    },
    /** @param {Record<string, any>} frame */
    onFrame(frame) {
      if (frame?.type === 'metrics' || frame?.type === 'change') chart.onFrame(frame);
    },
  });
}
