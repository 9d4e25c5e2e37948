// The page's side of the websocket protocol as pure steps: the page's state and one input (a
// frame, a change of the connection's state) in, the next state and a list of effects out. The
// steps decide; app.js only performs the effects (DOM, views, the socket), so every decision the
// protocol makes — when the view is live again, what the live log says, when a banner shows — is
// unit-tested with node --test (tests/browser/model/dispatch.test.mjs) without a browser.
//
// The one thing a step changes in place is the Model (model.js): applying a frame to it is the
// frame's meaning, the Model is itself pure (no DOM, no clock) and copying it per frame would cost
// O(services). Everything else a step returns new.

import { clock } from './format.js';
import { silenceNotes } from './silence-log.js';

/** @typedef {import('./model.js').Model} Model */
/** @typedef {Record<string, any>} Frame  a parsed JSON text frame from /ws (shape checked by the Model) */
/** @typedef {NonNullable<ReturnType<Model['applyChange']>>} ChangeResult */
/** @typedef {ChangeResult & { entry: import('./model.js').Entry }} LiveChange  a change that did not remove its service */

/**
 * The page's state, in one record (app.js holds the only copy).
 * @typedef {object} PageState
 * @property {boolean} snapshot  this socket sent a snapshot
 * @property {boolean} resumed  this socket resumed instead: it replays missed changes, no snapshot
 * @property {boolean} resuming  this socket's URL asked to resume (`since`/`epoch`)
 * @property {boolean} live  the view is current (the connection said "live")
 * @property {number | null} lastLiveAt  when the view was last live (ms), for "data as of"
 * @property {string | number | null} resumeEpoch  the server's epoch: a resume is only valid within it
 * @property {boolean} loadedRates  the chart's hour before this page (asked once)
 * @property {string} shown  the connection state as shown (`#conn`'s data-state)
 * @property {string | null} selectedKey  the service whose details are open
 * @property {string} view  'problems' | 'grid' | 'silences' | 'graphs'
 * @property {number} resolveGeneration  serial of the latest pass asking history when states began
 */

/**
 * What a step asks app.js to do, in order.
 * @typedef {{ kind: 'log', text: string, at: number }
 *   | { kind: 'banner', text: string }
 *   | { kind: 'go-live' }
 *   | { kind: 'filter-snapshot', frame: Frame, first: boolean, problems: number, reset: boolean, wasEver: boolean }
 *   | { kind: 'filter-socket' }
 *   | { kind: 'error', frame: Frame, text: string }
 *   | { kind: 'changed', key: string }
 *   | { kind: 'grid-snapshot' }
 *   | { kind: 'grid-update', entry: NonNullable<ChangeResult['entry']> }
 *   | { kind: 'removed', key: string, event: Record<string, any> }
 *   | { kind: 'silences' }
 *   | { kind: 'filtered' }
 *   | { kind: 'render', now: boolean }
 *   | { kind: 'details' }
 *   | { kind: 'details-change', frame: Frame }
 *   | { kind: 'notify', result: LiveChange, status: string, at: number }
 *   | { kind: 'stats', frame: Frame }
 *   | { kind: 'load-rates' }
 *   | { kind: 'resolve-since', generation: number }
 * } Effect
 */

/** @typedef {{ state: PageState, effects: Effect[] }} Step */

export const VIEWS = ['problems', 'grid', 'silences', 'graphs'];

/**
 * The state of a page that has not connected yet.
 * @param {string} view  from the URL's `?view=` (anything else is the problems view)
 * @returns {PageState}
 */
export function initialState(view) {
  return {
    snapshot: false,
    resumed: false,
    resuming: false,
    live: false,
    lastLiveAt: null,
    resumeEpoch: null,
    loadedRates: false,
    shown: 'connecting',
    selectedKey: null,
    view: VIEWS.includes(view) ? view : 'problems',
    resolveGeneration: 0,
  };
}

/**
 * "host · service" for the live log and notifications.
 * @param {{ host?: unknown, service?: unknown }} ev
 */
export const describe = (ev) => `${ev.host ?? '(no host)'} · ${ev.service ?? '(no service)'}`;

/**
 * The next socket's URL parameters: it resumes after the last `seq` seen when the server gave an
 * epoch (a resume across a server's restart would skip or repeat changes).
 * @param {PageState} state
 * @param {number | null} seq  the Model's last `seq`
 * @returns {{ state: PageState, since: number | null, epoch: string | number | null }}
 */
export function resumeFrom(state, seq) {
  const resuming = state.resumeEpoch !== null && seq !== null;
  return {
    state: { ...state, resuming },
    since: resuming ? seq : null,
    epoch: resuming ? state.resumeEpoch : null,
  };
}

/**
 * A new pass asking history when problems' states began; an older pass still running stops.
 * @param {PageState} state
 * @returns {Step}
 */
export function resolveSince(state) {
  const generation = state.resolveGeneration + 1;
  return { state: { ...state, resolveGeneration: generation }, effects: [{ kind: 'resolve-since', generation }] };
}

/**
 * One frame from the server.
 * @param {PageState} state
 * @param {Frame} frame
 * @param {{ model: Model, now: number }} ctx
 * @returns {Step}
 */
export function dispatch(state, frame, { model, now }) {
  /** @type {Effect[]} */
  const effects = [];
  let next = state;
  if (next.resuming && !next.live && frame.type !== 'snapshot') {
    // Resumed: whatever comes first (replayed changes, or just a heartbeat when nothing was
    // missed) means the view is current again.
    if (!next.resumed && frame.type !== 'change') {
      next = { ...next, resumed: true };
      effects.push({ kind: 'log', text: 'Reconnected: nothing was missed', at: now });
    }
    effects.push({ kind: 'go-live' });
  }
  /** @type {Step} */
  let step;
  switch (frame.type) {
    case 'snapshot': step = onSnapshot(next, frame, model, now); break;
    case 'change': step = onChange(next, frame, model, now); break;
    case 'ack': step = onAck(next, frame, model, now); break;
    case 'unack': step = onUnack(next, frame, model, now); break;
    case 'silence':
    case 'silences': step = onSilence(next, frame, model, now); break;
    case 'stats': step = { state: next, effects: [{ kind: 'stats', frame }] }; break;
    case 'metrics': step = onMetrics(next, frame, model); break;
    case 'error':
      step = { state: next, effects: [{ kind: 'error', frame, text: `Server error: ${String(frame.error ?? 'unknown')}` }] };
      break;
    default:
      step = { state: next, effects: [] }; // unknown types are ignored: newer servers may send more
  }
  // Most frames have no resume prelude: their step is the answer as it is (no copy per frame).
  return effects.length === 0 ? step : { state: step.state, effects: [...effects, ...step.effects] };
}

/**
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @param {number} now
 * @returns {Step}
 */
function onSnapshot(state, frame, model, now) {
  const first = !state.snapshot && !state.resumed;
  // `snapshot` is set before the filter's bookkeeping runs, which may subscribe on this socket.
  /** @type {PageState} */
  const next = { ...state, snapshot: true };
  if (typeof frame.epoch === 'string' || typeof frame.epoch === 'number') next.resumeEpoch = frame.epoch;
  const wasEver = model.haveSnapshot;
  const { changed, problems } = model.applySnapshot(frame, now);
  /** @type {Effect[]} */
  const effects = [{ kind: 'filter-snapshot', frame, first, problems, reset: frame.reset === true, wasEver }];
  for (const key of changed) effects.push({ kind: 'changed', key });
  effects.push({ kind: 'grid-snapshot' }, { kind: 'silences' }, { kind: 'filtered' });
  effects.push({ kind: 'render', now: true }); // snapshots are rare: render now rather than next frame
  if (next.selectedKey) effects.push({ kind: 'details' });
  if (first) effects.push({ kind: 'go-live' });
  if (!next.loadedRates) {
    next.loadedRates = true;
    effects.push({ kind: 'load-rates' });
  }
  const resolve = resolveSince(next);
  return { state: resolve.state, effects: [...effects, ...resolve.effects] };
}

/**
 * What the live log (and the banner) say about a snapshot, once the filter has said whether the
 * snapshot answers its subscribe (app.js performs `filter-snapshot`, then asks this).
 * @param {Extract<Effect, { kind: 'filter-snapshot' }>} snap
 * @param {{ answered: boolean, filtered: boolean, now: number }} filter  `filtered`: the server
 *   now filters by a query
 * @returns {Effect[]}
 */
export function snapshotNotes(snap, { answered, filtered, now }) {
  const n = snap.problems;
  const problemsText = `${n} problem${n === 1 ? '' : 's'}`;
  if (answered) {
    return [{ kind: 'log', text: filtered ? `Filter applied: ${problemsText}` : `Filter cleared: ${problemsText}`, at: now }];
  }
  if (snap.reset || !snap.first) {
    // The server could not replay what this page missed (or it fell behind): say so.
    return [
      { kind: 'log', text: `View reset: the server resent the full state (${problemsText})`, at: now },
      {
        kind: 'banner',
        text: `View reset at ${clock(now)}: the server could not replay the changes this page missed, `
          + 'so it resent the full state. The live log before this point may be incomplete.',
      },
    ];
  }
  return [{ kind: 'log', text: `${snap.wasEver ? 'Reconnected' : 'Connected'}: ${problemsText} in the snapshot`, at: now }];
}

/**
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @param {number} now
 * @returns {Step}
 */
function onChange(state, frame, model, now) {
  let next = state;
  /** @type {Effect[]} */
  const effects = [];
  if (!next.snapshot && !next.resumed) {
    next = { ...next, resumed: true }; // the server is replaying what we missed: no snapshot comes
    effects.push({ kind: 'log', text: 'Reconnected: replaying the changes missed meanwhile', at: now });
  }
  const result = model.applyChange(frame, now);
  if (!result) return { state: next, effects };
  const ev = frame.event;
  if (result.removed) {
    if (result.key === next.selectedKey) effects.push({ kind: 'details' });
    effects.push({ kind: 'removed', key: result.key, event: ev });
    effects.push({
      kind: 'log',
      text: result.clearedBy
        ? `${describe(ev)} cleared by ${result.clearedBy}`
        : `${describe(ev)} removed: expired for longer than the server keeps expired services`,
      at: now,
    });
    effects.push({ kind: 'render', now: false });
    return { state: next, effects };
  }
  if (!result.entry) return { state: next, effects }; // only a removal has no entry
  const live = /** @type {LiveChange} */ (result);
  effects.push({ kind: 'changed', key: live.key }, { kind: 'grid-update', entry: live.entry });
  effects.push({ kind: 'notify', result: live, status: model.status(live.key), at: now });
  effects.push({ kind: 'render', now: false });
  if (result.key === next.selectedKey) effects.push({ kind: 'details-change', frame });
  return { state: next, effects };
}

/**
 * Live values (`metrics`): the touched services' cells and the open details follow; no seq, no
 * live log, no notification, no flash — a value that moves is not an event for the operator.
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @returns {Step}
 */
function onMetrics(state, frame, model) {
  const updated = model.applyMetrics(frame);
  if (updated.length === 0) return { state, effects: [] };
  /** @type {Effect[]} */
  const effects = [];
  for (const entry of updated) effects.push({ kind: 'grid-update', entry });
  effects.push({ kind: 'render', now: false });
  if (state.selectedKey !== null && updated.some((entry) => entry.key === state.selectedKey)) {
    effects.push({ kind: 'details' });
  }
  return { state, effects };
}

/**
 * Views to refresh after an operator action on `key` (null: several services, e.g. a silence).
 * @param {PageState} state
 * @param {string | null} key
 * @returns {Effect[]}
 */
function afterAction(state, key) {
  /** @type {Effect[]} */
  const effects = [];
  if (key !== null) effects.push({ kind: 'changed', key });
  effects.push({ kind: 'render', now: false });
  if (state.selectedKey && (key === null || key === state.selectedKey)) effects.push({ kind: 'details' });
  return effects;
}

/**
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @param {number} now
 * @returns {Step}
 */
function onAck(state, frame, model, now) {
  const key = model.applyAck(frame);
  if (key === null) return { state, effects: [] };
  const ack = frame.ack ?? {};
  const text = `${describe(ack)} acknowledged by ${ack.by || 'someone'}${ack.note ? `: ${ack.note}` : ''}`;
  return { state, effects: [{ kind: 'log', text, at: now }, ...afterAction(state, key)] };
}

/** Why an acknowledgement ended, by the server's `reason`. */
const UNACK_REASONS = {
  resolved: 'it recovered',
  expired: 'it expired',
  removed: 'the service left the index',
};

/**
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @param {number} now
 * @returns {Step}
 */
function onUnack(state, frame, model, now) {
  const key = model.applyUnack(frame);
  if (key === null) return { state, effects: [] };
  const reason = String(frame.reason);
  const why = reason === 'deleted'
    ? (frame.by ? `removed by ${frame.by}` : 'removed')
    : Object.hasOwn(UNACK_REASONS, reason) ? UNACK_REASONS[/** @type {keyof UNACK_REASONS} */ (reason)] : 'ended';
  return { state, effects: [{ kind: 'log', text: `${describe(frame)} acknowledgement ended: ${why}`, at: now }, ...afterAction(state, key)] };
}

/**
 * A silence created, edited or deleted (`silence`), or the whole set (`silences`).
 * @param {PageState} state
 * @param {Frame} frame
 * @param {Model} model
 * @param {number} now
 * @returns {Step}
 */
function onSilence(state, frame, model, now) {
  const before = model.silences;
  const flipped = frame.type === 'silence' ? model.applySilence(frame) : model.applySilences(frame);
  if (flipped === null) return { state, effects: [] };
  /** @type {Effect[]} */
  const effects = [];
  for (const text of silenceNotes(before, model.silences, { now, by: frame.by, change: frame.change })) {
    effects.push({ kind: 'log', text, at: now });
  }
  effects.push({ kind: 'silences' }, ...afterAction(state, null));
  return { state, effects };
}

/**
 * The connection (connection.js) changed state: the page's bookkeeping and what `#conn` shows.
 * `ctx.attempt`, `ctx.retryIn`: the connection's; `ctx.haveSnapshot`: the Model's.
 * @param {PageState} state
 * @param {string} to  one of connection.js' STATES
 * @param {string} detail  why (a refusal's status, "closed by the server …", "no data for …")
 * @param {{ now: number, attempt: number, retryIn: number, haveSnapshot: boolean }} ctx
 * @returns {Step & { view: ConnView }}
 */
export function connectionChanged(state, to, detail, { now, attempt, retryIn, haveSnapshot }) {
  let shown = to;
  let text = to;
  if (to === 'connecting' || to === 'syncing') {
    shown = 'connecting';
    text = attempt ? 'reconnecting…' : 'connecting…';
  } else if (to === 'waiting') {
    shown = 'reconnecting';
    text = `reconnecting in ${retryIn}s`;
  } else if (to === 'refused') {
    text = detail.startsWith('401') ? 'refused: token' : 'refused: origin';
  }
  /** @type {Effect[]} */
  const effects = [];
  /** @type {PageState} */
  let next = { ...state, shown };
  if (to === 'syncing') {
    next.snapshot = false;
    next.resumed = false;
    effects.push({ kind: 'filter-socket' });
  }
  if (to === 'live') next.lastLiveAt = now;
  if (to === 'waiting' && detail.startsWith('closed by the server') && state.shown !== 'reconnecting') {
    // detail: "closed by the server: <the close frame's reason>".
    const reason = detail.slice('closed by the server'.length).replace(/^:\s*/, '') || 'policy violation';
    effects.push({ kind: 'banner', text: `The server closed the connection: ${reason}. Reconnecting.` });
  }
  if (to === 'waiting' && detail.startsWith('no data') && state.shown === 'live') {
    effects.push({ kind: 'log', text: `No data for ${detail.slice(12)}: reconnecting`, at: now });
  }
  /** @type {ConnView} */
  const view = { shown, text, retry: ['waiting', 'offline', 'refused'].includes(to), refused: to === 'refused', stale: null };
  // "waiting" is repeated every second (the countdown): once the view is stale it changes nothing.
  if (to !== 'waiting' || next.live) {
    next = { ...next, live: to === 'live' };
    view.stale = { stale: !next.live && haveSnapshot, asOf: !next.live ? next.lastLiveAt : null };
    effects.push({ kind: 'render', now: false });
  }
  return { state: next, effects, view };
}

/**
 * What `#conn` shows. `stale` is null when the view's freshness did not change.
 * @typedef {{ shown: string, text: string, retry: boolean, refused: boolean,
 *   stale: { stale: boolean, asOf: number | null } | null }} ConnView
 */
