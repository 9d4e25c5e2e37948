// statecast dashboard: one websocket, one in-memory model, and DOM updates per change. This file
// wires the modules together and performs what the protocol's steps decide; each module does one job:
//
//   js/dispatch.js       pure: a frame (or the connection's state) → next page state + effects (node --test)
//   js/connection.js     the websocket's states (connecting … live … refused), backoff, watchdog
//   js/model.js          pure: entries, counts, acks, silences          (tested with node --test)
//   js/order.js          pure: sorting, grouping, the table's rows        (tested with node --test)
//   js/flap.js           pure: flap damping, whether a change notifies    (tested with node --test)
//   js/filter.js         the Riemann query filter (?query=), with a hint for unquoted values
//   js/notifications.js  browser notifications and sound (opt-in, remembered)
//   js/actions.js        ack / unack / clear / silences over the HTTP API
//   js/silence-log.js    pure: the live log's sentences for a silence created, edited, deleted (node --test)
//   js/settings.js       theme and clock toggles (remembered)
//   js/controls.js       the view tabs, the group-by select, the keyboard shortcuts
//   js/series.js         pure: /api/series answers + live metrics frames → chart columns; state bands, action marks
//   js/views/*.js        problems, grid, details (+ key-graph), graphs, timechart (uPlot), log, chart, header, silences
//
// Event text is attacker-controlled. Everything that comes from the server is put on the page with
// textContent / setAttribute('title' | 'datetime' | 'data-*') only — never innerHTML, never a URL
// attribute. The page's Content-Security-Policy forbids inline scripts and styles as a second line.
//
// Protocol (GET /ws, JSON text frames; defined by the server's src/protocol/, listed in the README's
// "Websocket /ws", one example each in tests/fixtures/frames/, which tests/browser/model reads):
//   {"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[E…],"acks":[…],"silences":[…],"silenced":[[H,S]…]}
//   {"type":"change","seq":N,"previous_state":P,"event":E,"silenced":true?}  one change
//   {"type":"change",…,"removed":true,"cleared_by":"name"?}  E left the server's index
//   {"type":"ack",…} {"type":"unack",…} {"type":"silence",…}      operator actions
//   {"type":"silences",…}                                          the whole silence set (older servers, history)
//   {"type":"stats","clients":C,"events":T,"changes":K}            periodic heartbeat
//   {"type":"error","error":"…"}                                   answer to a bad subscribe
//   {"type":"batch","frames":[F,…]}                                 frames queued together (?batch=true)
// Client → server: {"type":"subscribe","query":Q} (a fresh snapshot, or an error frame).
// URL: /ws?query=Q filters from the start; /ws?since=SEQ&epoch=E resumes after a reconnect.

import { $, setText, setSentence, coalesce, refreshTimes } from './js/dom.js';
import { clock, fmtRate } from './js/format.js';
import { Model, keyOf, parseTime, splitKey } from './js/model.js';
import { Connection } from './js/connection.js';
import {
  initialState, dispatch, connectionChanged, snapshotNotes, resumeFrom, resolveSince, describe,
} from './js/dispatch.js';
import { createFilter } from './js/filter.js';
import { createNotifications } from './js/notifications.js';
import { createActions, rememberedBy } from './js/actions.js';
import { createSettings } from './js/settings.js';
import { createControls, urlParam, setUrlParam } from './js/controls.js';
import { createProblemsView } from './js/views/problems.js';
import { createGrid } from './js/views/grid.js';
import { createDetails, createHistory, keyQuery, HISTORY_WINDOW } from './js/views/details.js';
import { createLog } from './js/views/log.js';
import { createChart } from './js/views/chart.js';
import { createHeader } from './js/views/header.js';
import { createSilences } from './js/views/silences.js';
import { createGraphs } from './js/views/graphs.js';
import { createAlertingIndicator } from './js/alerting.js';

/** `--dashboard-token`: taken from the page's own URL (`?token=`) and passed on to /ws and the API. */
const token = urlParam('token');

/**
 * The page's one mutable value: the protocol's state (dispatch.js), replaced by each step.
 * @type {{ state: import('./js/dispatch.js').PageState }}
 */
const page = { state: initialState(urlParam('view')) };

const model = new Model();
const actions = createActions({ token });
const historyApi = createHistory({ token });
const log = createLog();
const chart = createChart();
const notifications = createNotifications({ describe });

const problems = createProblemsView({
  model,
  onOpen: (key) => details.open(key),
  onAck: async (key, action) => {
    const by = /** @type {HTMLInputElement | null} */ ($('details-by'))?.value.trim() || rememberedBy();
    if (action === 'unack' && by) {
      const answer = await actions.unack(key, by);
      if (!answer.ok) showBanner(`Could not remove the acknowledgement: ${answer.error}`);
    } else details.open(key, { focusAck: action === 'ack' });
  },
  isSelected: (key) => key === page.state.selectedKey,
  urlParam,
  setUrlParam,
});
const grid = createGrid({ model, onOpen: (key) => details.open(key), haveSnapshot: () => model.haveSnapshot });
const details = createDetails({
  model,
  history: historyApi,
  token,
  actions,
  onOpened: (key) => {
    page.state = { ...page.state, selectedKey: key };
    render();
  },
  onClose: (key) => {
    page.state = { ...page.state, selectedKey: null };
    render.now();
    problems.rowOf(key)?.focus();
  },
  onPinned: () => render(),
});
const silences = createSilences({ model, actions });
const graphs = createGraphs({ token, urlParam, setUrlParam, visible: () => page.state.view === 'graphs' });
const alerting = createAlertingIndicator({ token });

const filter = createFilter({
  send: (obj) => conn.send(obj),
  isOpen: () => conn.open && (page.state.snapshot || page.state.resumed),
  reconnect: () => conn.retry(),
  onChange: () => markFiltered(),
});
const header = createHeader({ model, problemsView: problems, isLive: () => page.state.live, filtered: () => filter.filtered() });

/**
 * The table and the header render at most once per frame and at most RENDER_GAP_MS apart: in
 * the 10,000-problem storm a render every frame (60 a second) kept the main thread 35 % busy,
 * one every other frame 27 % (bench/storm/browser.mjs, same run), and 30 a second is as smooth
 * as a table changing everywhere at once can be read.
 */
const RENDER_GAP_MS = 33;
const render = coalesce(() => {
  problems.render();
  header.render();
}, 250, RENDER_GAP_MS);
problems.onChange = () => render();

createSettings({
  onClock: () => {
    refreshTimes(document);
    problems.refill();
    render();
    details.render();
    details.graph.refresh();
    graphs.chart.refresh();
  },
  onTheme: () => {
    chart.schedule();
    details.graph.refresh();
    graphs.chart.refresh();
  },
});

// ---------------------------------------------------------------------------------------------
// Banner (resets after a gap, refusals, server-side closes)

/** @param {string} text */
function showBanner(text) {
  setSentence($('banner-text'), text);
  $('banner').hidden = false;
}
$('banner-close').addEventListener('click', () => { $('banner').hidden = true; });

function markFiltered() {
  const filtered = filter.filtered();
  document.body.classList.toggle('filtered', filtered);
  setText($('problems-title'), filtered ? 'Problems (filtered)' : 'Problems');
  render();
}

// ---------------------------------------------------------------------------------------------
// Connection: dispatch.js decides, `perform` does

function wsUrl() {
  const url = new URL('ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  // Frames queued together arrive as one `batch` message: one task for the browser instead of
  // one per change (the connection unwraps it, so nothing else sees the difference).
  url.searchParams.set('batch', 'true');
  const q = filter.forUrl();
  if (q) url.searchParams.set('query', q);
  const resume = resumeFrom(page.state, model.seq);
  page.state = resume.state;
  if (resume.since !== null) {
    url.searchParams.set('since', String(resume.since));
    url.searchParams.set('epoch', String(resume.epoch));
  }
  if (token) url.searchParams.set('token', token);
  return url.href;
}

/** @type {Record<string, (error: string) => string>} */
const REFUSALS = {
  token: (error) => (token
    ? `The server refused this dashboard (401: ${error}). Check the ?token= in this page's address against the server's --dashboard-token.`
    : `The server refused this dashboard (401: ${error}). Open the page with ?token=… (the server's --dashboard-token).`),
  forbidden: (error) => `The server refused this dashboard (403: ${error}).`,
  origin: () => `The server refused this page's websocket (403): its origin ${location.origin} is not allowed. `
    + 'Open the dashboard at the server\'s own address, or start the server with an --allowed-origin that matches this origin.',
};

const conn = new Connection({
  url: wsUrl,
  onMessage: (frame) => {
    step(dispatch(page.state, frame, { model, now: Date.now() }));
    // The graphs read the frames they draw (metrics; changes and actions for the details' bands).
    details.graph.onFrame(frame);
    graphs.onFrame(frame);
  },
  onState: showConnState,
  onFailedOpen: () => { if (filter.inUrl) filter.urlFailures += 1; },
  onProbe: (verdict) => {
    if (verdict.kind === 'query') filter.onUrlRejected(verdict.error);
    else if (Object.hasOwn(REFUSALS, verdict.kind)) {
      conn.refusal = REFUSALS[verdict.kind](verdict.error);
      showBanner(conn.refusal);
    }
  },
});

/**
 * @param {string} to
 * @param {string} detail
 */
function showConnState(to, detail) {
  const now = Date.now();
  const changed = connectionChanged(page.state, to, detail, {
    now, attempt: conn.attempt, retryIn: conn.retryIn, haveSnapshot: model.haveSnapshot,
  });
  const { view } = changed;
  // Before any snapshot the body says what the page waits for, or, refused, why it never will.
  const waiting = $('waiting');
  if (view.refused) {
    setSentence(waiting, `Not connected: ${conn.refusal ?? `the server refused this dashboard (${detail}).`}`);
    waiting.classList.add('refused');
  } else if (waiting.classList.contains('refused')) {
    setText(waiting, 'Waiting for the first snapshot…');
    waiting.classList.remove('refused');
  }
  $('conn').dataset.state = view.shown;
  setText($('conn-text'), view.text);
  $('retry').hidden = !view.retry;
  if (view.stale) {
    document.body.classList.toggle('stale', view.stale.stale);
    setText($('as-of'), view.stale.asOf ? `showing data as of ${clock(view.stale.asOf)}` : '');
  }
  step(changed);
}

/**
 * Commits a step's state, then performs its effects in order (an effect may step again).
 * @param {import('./js/dispatch.js').Step} next
 */
function step(next) {
  page.state = next.state;
  for (const effect of next.effects) perform(effect);
}

/** @param {import('./js/dispatch.js').Effect} effect */
function perform(effect) {
  switch (effect.kind) {
    case 'log': log.note(effect.text, effect.at); break;
    case 'banner': showBanner(effect.text); break;
    case 'go-live': conn.markLive(); break;
    case 'filter-snapshot': {
      const answered = filter.onSnapshot(effect.frame, effect.first);
      for (const note of snapshotNotes(effect, { answered, filtered: Boolean(filter.server), now: Date.now() })) perform(note);
      break;
    }
    case 'filter-socket': filter.onSocket(); break;
    case 'error': if (!filter.onError(effect.frame)) showBanner(effect.text); break;
    case 'changed': problems.markChanged(effect.key); break;
    case 'grid-snapshot':
      if (grid.grid.built) grid.refresh();
      else if (page.state.view === 'grid') grid.rebuild();
      break;
    case 'grid-update': grid.update(effect.entry); break;
    case 'removed':
      grid.forget(effect.event);
      notifications.flaps.forget(effect.key);
      break;
    case 'silences': silences.render(); break;
    case 'filtered': markFiltered(); break;
    case 'render': if (effect.now) render.now(); else render(); break;
    case 'details': details.render(); break;
    case 'details-change': details.addChange(effect.frame); break;
    case 'notify': {
      const { result, status, at } = effect;
      const { kind, flapping } = notifications.onChange(result, status, at);
      log.transition(result.entry.event, result.previousState, at, kind === 'flapping' || flapping ? 'flapping' : '');
      break;
    }
    case 'stats': onStats(effect.frame); break;
    case 'load-rates': loadRates(); break;
    case 'resolve-since': resolveProblemsSince(effect.generation); break;
    default: break;
  }
}

/** @param {Record<string, any>} frame */
function onStats(frame) {
  // The chart and the header's events/s are one figure, from one computation.
  const rate = chart.record(frame);
  filter.onStats();
  if (typeof frame.clients === 'number') setText($('clients'), String(frame.clients));
  if (rate !== null) setText($('rate'), fmtRate(Math.max(0, rate)));
  alerting.refresh();
}

/** The hour before this page connected, for the chart (absent on older servers: no chart gap). */
async function loadRates() {
  const url = new URL('api/rates', location.href);
  if (token) url.searchParams.set('token', token);
  try {
    const res = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!res.ok) return;
    const body = await res.json();
    if (Array.isArray(body?.samples)) chart.loadHistory(body.samples);
  } catch {
    // no history for the chart: it fills from the live stats
  }
}

/**
 * After a snapshot, asks history when each problem's current state began (a snapshot only says
 * when the service last reported). Batched, bounded, and skipped when the server has no history.
 * A newer pass (`generation`) stops this one.
 * @param {number} generation
 */
async function resolveProblemsSince(generation) {
  if (!historyApi.available || model.seq === null) return;
  const upto = model.seq;
  const keys = problems.order.slice(0, problems.limit).filter((e) => !e.sinceExact).map((e) => e.key).slice(0, 200);
  for (let i = 0; i < keys.length; i += 40) {
    const batch = keys.slice(i, i + 40);
    const query = batch.map((k) => `(${keyQuery(k)})`).join(' or ');
    const since = Math.max(0, upto - HISTORY_WINDOW);
    const { changes, complete } = await historyApi.fetch(query, since, Infinity, 3);
    if (generation !== page.state.resolveGeneration || !complete) return;
    const latest = new Map();
    for (const c of changes) if (c.seq <= upto) latest.set(keyOf(c.event), c);
    let moved = false;
    for (const [key, c] of latest) {
      const entry = model.entries.get(key);
      if (entry && entry.event.state === c.event.state) moved = model.pinSince(key, parseTime(c.event.time)) || moved;
    }
    if (moved) {
      // Only the ages moved: the drawn rows' age cells are brought up to date, nothing else in
      // them is rewritten (the live-values test watches that no row is rewritten for nothing,
      // and this answer can come in while it watches).
      problems.tickAges(Date.now());
      render();
    }
  }
}

$('retry').addEventListener('click', () => conn.retry());

const controls = createControls({
  model,
  problems,
  render,
  showMore: () => step(resolveSince(page.state)),
  view: () => page.state.view,
  onView: (view) => {
    page.state = { ...page.state, view };
    if (view === 'grid' && !grid.grid.built && model.haveSnapshot) grid.rebuild();
    if (view === 'graphs') graphs.shown();
  },
  hasDetails: () => Boolean(page.state.selectedKey),
  closeDetails: () => details.close(),
  focusFilter: () => {
    filter.input.focus();
    filter.input.select();
  },
  togglePause: () => log.togglePause(),
});

// Keep "time in state" current. Only text that changed is written.
setInterval(() => {
  if (document.hidden) return;
  const now = Date.now();
  problems.tickAges(now);
  details.tick(now);
}, 1000);

// Hooks for the browser tests and for curious engineers in the console (read-only data).
Object.assign(window, {
  statecast: {
    get connected() { return page.state.live; },
    get connection() { return conn.state; },
    get problems() { return problems.order.map((e) => e.event); },
    get counts() { return model.handledCounts(); },
    get seq() { return model.seq; },
    get querySupport() { return filter.support; },
    get view() { return page.state.view; },
    /** Rate series: { events: [[ms, events/s]…], changes: [[ms, changes/min]…] } (copies). */
    get rates() { return { events: chart.rates.events.map((p) => [...p]), changes: chart.rates.changes.map((p) => [...p]) }; },
    get gridSize() { return { hosts: grid.grid.hosts.length, services: grid.grid.services.length, builtRows: grid.grid.builtRows }; },
    /** Notifications decided so far: [{ kind, title, body, at }]. */
    get notifications() { return notifications.sent.map((n) => ({ ...n })); },
    /** @param {unknown} host @param {unknown} service */
    isFlapping(host, service) { return notifications.isFlapping(JSON.stringify([host ?? null, service ?? null])); },
    get acks() { return [...model.acks.values()]; },
    get silences() { return model.silences.map((s) => ({ ...s })); },
    /** What the graphs draw: { details, tab } each { labels, points, x, last, newest } (copies). */
    get graphs() {
      const copy = (/** @type {typeof graphs.chart.shown} */ s) => ({ labels: [...s.labels], points: s.points, x: [...s.x], last: [...s.last], newest: [...s.newest] });
      return { details: copy(details.graph.chart.shown), tab: copy(graphs.chart.shown), query: graphs.drawn, range: graphs.range };
    },
    /** The last `GET /api/alerting` answer (null before the first). */
    get alerting() { return alerting.answer; },
    splitKey,
  },
});

controls.setView(page.state.view);
render.now();
conn.start();
alerting.refresh();
