// Unit tests of the page's protocol steps (static/js/dispatch.js), with node --test: what a frame
// or a connection state does to the page's state, and which effects (log lines, banners, views to
// refresh) it asks for — without a browser. The input state is frozen: a step must not change it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Model, keyOfPair } from '../../../static/js/model.js';
import {
  initialState, dispatch, connectionChanged, snapshotNotes, resumeFrom, resolveSince, describe,
} from '../../../static/js/dispatch.js';
import { metricsFrame } from './frames.mjs';

const ev = (host, service, state, extra = {}) => ({ host, service, state, ...extra });
const kinds = (effects) => effects.map((e) => e.kind);
const logs = (effects) => effects.filter((e) => e.kind === 'log').map((e) => e.text);
const frozen = (state) => Object.freeze({ ...state });
const NOW = 1_000_000;

/** Runs frames through dispatch as app.js does, and returns the last step. */
function run(state, model, ...frames) {
  let step = { state, effects: [] };
  for (const frame of frames) step = dispatch(frozen(step.state), frame, { model, now: NOW });
  return step;
}

test('the initial state: nothing synced, the view from the URL when it is one', () => {
  assert.equal(initialState('grid').view, 'grid');
  assert.equal(initialState('nonsense').view, 'problems');
  assert.equal(initialState('').view, 'problems');
  const s = initialState('problems');
  assert.deepEqual([s.snapshot, s.resumed, s.live, s.resumeEpoch, s.selectedKey], [false, false, false, null, null]);
});

test('the first snapshot: applied, the filter told it is the first, live, rates loaded once, history asked', () => {
  const model = new Model();
  const frame = { type: 'snapshot', seq: 4, epoch: 'e1', events: [ev('a', 'x', 'critical'), ev('b', 'x', 'ok')] };
  const { state, effects } = run(initialState(''), model, frame);
  assert.equal(state.snapshot, true);
  assert.equal(state.resumeEpoch, 'e1');
  assert.equal(state.loadedRates, true);
  assert.equal(state.resolveGeneration, 1);
  assert.equal(model.seq, 4);
  assert.deepEqual(kinds(effects), [
    'filter-snapshot', 'grid-snapshot', 'silences', 'filtered', 'render', 'go-live', 'load-rates', 'resolve-since',
  ]);
  assert.deepEqual(effects[0], { kind: 'filter-snapshot', frame, first: true, problems: 1, reset: false, wasEver: false });
  assert.deepEqual(effects.find((e) => e.kind === 'render'), { kind: 'render', now: true });
  assert.deepEqual(effects.at(-1), { kind: 'resolve-since', generation: 1 });

  // A second snapshot on the same socket (a subscribe's answer): not first, no second rates load,
  // a newer history pass; services whose state changed are marked.
  const again = dispatch(frozen(state), { type: 'snapshot', seq: 9, events: [ev('a', 'x', 'warning')] }, { model, now: NOW });
  assert.equal(again.effects[0].first, false);
  assert.equal(again.effects[0].wasEver, true);
  assert.equal(again.state.resumeEpoch, 'e1', 'a snapshot without an epoch keeps the one known');
  assert.ok(!kinds(again.effects).includes('load-rates'));
  assert.ok(!kinds(again.effects).includes('go-live'));
  assert.deepEqual(again.effects.filter((e) => e.kind === 'changed'), [{ kind: 'changed', key: keyOfPair('a', 'x') }]);
  assert.deepEqual(again.effects.at(-1), { kind: 'resolve-since', generation: 2 });
});

test('a snapshot with details open re-renders them', () => {
  const model = new Model();
  const state = { ...initialState(''), selectedKey: keyOfPair('a', 'x') };
  const { effects } = run(state, model, { type: 'snapshot', seq: 1, events: [] });
  assert.ok(kinds(effects).includes('details'));
});

test('what the log and banner say about a snapshot, once the filter has answered', () => {
  const snap = (extra) => ({ kind: 'filter-snapshot', frame: {}, first: true, problems: 2, reset: false, wasEver: false, ...extra });
  assert.deepEqual(logs(snapshotNotes(snap({}), { answered: false, filtered: false, now: NOW })), ['Connected: 2 problems in the snapshot']);
  assert.deepEqual(logs(snapshotNotes(snap({ wasEver: true, problems: 1 }), { answered: false, filtered: false, now: NOW })),
    ['Reconnected: 1 problem in the snapshot']);
  assert.deepEqual(logs(snapshotNotes(snap({ first: false }), { answered: true, filtered: true, now: NOW })), ['Filter applied: 2 problems']);
  assert.deepEqual(logs(snapshotNotes(snap({ first: false }), { answered: true, filtered: false, now: NOW })), ['Filter cleared: 2 problems']);
  for (const reset of [snap({ reset: true }), snap({ first: false })]) {
    const notes = snapshotNotes(reset, { answered: false, filtered: false, now: NOW });
    assert.deepEqual(kinds(notes), ['log', 'banner']);
    assert.equal(notes[0].text, 'View reset: the server resent the full state (2 problems)');
    assert.match(notes[1].text, /^View reset at .*: the server could not replay the changes this page missed/);
  }
});

test('the next socket resumes only with an epoch and a seq', () => {
  const fresh = resumeFrom(frozen(initialState('')), 7);
  assert.deepEqual([fresh.state.resuming, fresh.since, fresh.epoch], [false, null, null]);
  const noSeq = resumeFrom(frozen({ ...initialState(''), resumeEpoch: 'e' }), null);
  assert.equal(noSeq.state.resuming, false);
  const resume = resumeFrom(frozen({ ...initialState(''), resumeEpoch: 'e' }), 7);
  assert.deepEqual([resume.state.resuming, resume.since, resume.epoch], [true, 7, 'e']);
});

test('a resume with nothing missed: the first heartbeat makes the view live', () => {
  const model = new Model();
  model.applySnapshot({ seq: 3, events: [] }, NOW);
  const state = { ...initialState(''), resuming: true, resumeEpoch: 'e' };
  const { state: next, effects } = run(state, model, { type: 'stats', clients: 1 });
  assert.equal(next.resumed, true);
  assert.deepEqual(kinds(effects), ['log', 'go-live', 'stats']);
  assert.deepEqual(logs(effects), ['Reconnected: nothing was missed']);
  // Live again: later frames are plain frames.
  const later = dispatch(frozen({ ...next, live: true }), { type: 'stats' }, { model, now: NOW });
  assert.deepEqual(kinds(later.effects), ['stats']);
});

test('a resume that replays: the first change makes the view live and says so once', () => {
  const model = new Model();
  model.applySnapshot({ seq: 3, events: [ev('a', 'x', 'ok')] }, NOW);
  const state = { ...initialState(''), resuming: true, resumeEpoch: 'e' };
  const first = dispatch(frozen(state), { type: 'change', seq: 4, event: ev('a', 'x', 'critical') }, { model, now: NOW });
  assert.equal(first.state.resumed, true);
  assert.deepEqual(logs(first.effects), ['Reconnected: replaying the changes missed meanwhile']);
  assert.equal(kinds(first.effects)[0], 'go-live');
  assert.ok(kinds(first.effects).includes('notify'));
  const second = dispatch(frozen({ ...first.state, live: true }), { type: 'change', seq: 5, event: ev('a', 'x', 'ok') }, { model, now: NOW });
  assert.deepEqual(logs(second.effects), []);
});

test('a change: marked, drawn in the grid, offered to notifications, added to open details', () => {
  const model = new Model();
  model.applySnapshot({ seq: 1, events: [ev('a', 'x', 'ok')] }, NOW);
  const key = keyOfPair('a', 'x');
  const state = { ...initialState(''), snapshot: true, live: true, selectedKey: key };
  const frame = { type: 'change', seq: 2, previous_state: 'ok', event: ev('a', 'x', 'critical') };
  const { effects } = run(state, model, frame);
  assert.deepEqual(kinds(effects), ['changed', 'grid-update', 'notify', 'render', 'details-change']);
  const notify = effects[2];
  assert.equal(notify.result.key, key);
  assert.equal(notify.result.previousState, 'ok');
  assert.equal(notify.status, 'active');
  // A duplicate (a resume's overlap) does nothing at all.
  assert.deepEqual(run(state, model, frame).effects, []);
});

test('a removed service: forgotten by the grid and the flap tracker, the log says who cleared it', () => {
  const model = new Model();
  model.applySnapshot({ seq: 1, events: [ev('a', 'x', 'critical'), ev('b', 'y', 'expired')] }, NOW);
  const state = { ...initialState(''), snapshot: true, live: true, selectedKey: keyOfPair('a', 'x') };
  const cleared = run(state, model, { type: 'change', seq: 2, removed: true, cleared_by: 'bob', event: ev('a', 'x', 'critical') });
  assert.deepEqual(kinds(cleared.effects), ['details', 'removed', 'log', 'render']);
  assert.equal(cleared.effects[1].key, keyOfPair('a', 'x'));
  assert.deepEqual(logs(cleared.effects), ['a · x cleared by bob']);
  const expired = run(state, model, { type: 'change', seq: 3, removed: true, event: ev('b', 'y', 'expired') });
  assert.deepEqual(logs(expired.effects), ['b · y removed: expired for longer than the server keeps expired services']);
  assert.ok(!kinds(expired.effects).includes('details'), 'details of another service stay as they are');
});

test('acks and their ends: a log line, and the open details re-rendered when they are that service', () => {
  const model = new Model();
  model.applySnapshot({ seq: 1, events: [ev('a', 'x', 'critical')] }, NOW);
  const key = keyOfPair('a', 'x');
  const state = { ...initialState(''), snapshot: true, live: true, selectedKey: key };
  const ack = run(state, model, { type: 'ack', seq: 2, ack: { host: 'a', service: 'x', by: 'ann', note: 'on it' } });
  assert.deepEqual(logs(ack.effects), ['a · x acknowledged by ann: on it']);
  assert.deepEqual(kinds(ack.effects), ['log', 'changed', 'render', 'details']);
  assert.equal(model.status(key), 'acked');
  assert.deepEqual(run(state, model, { type: 'ack', seq: 2, ack: { host: 'a', service: 'x' } }).effects, [], 'duplicate');
  const unack = (seq, extra) => logs(run(state, model, { type: 'unack', seq, host: 'a', service: 'x', ...extra }).effects);
  assert.deepEqual(unack(3, { reason: 'resolved' }), ['a · x acknowledgement ended: it recovered']);
  assert.deepEqual(unack(4, { reason: 'expired' }), ['a · x acknowledgement ended: it expired']);
  assert.deepEqual(unack(5, { reason: 'removed' }), ['a · x acknowledgement ended: the service left the index']);
  assert.deepEqual(unack(6, { reason: 'deleted', by: 'ann' }), ['a · x acknowledgement ended: removed by ann']);
  assert.deepEqual(unack(7, { reason: 'deleted' }), ['a · x acknowledgement ended: removed']);
  assert.deepEqual(unack(8, {}), ['a · x acknowledgement ended: ended']);
  // A reason that names an Object.prototype member is still "ended", not a function's source.
  assert.deepEqual(unack(9, { reason: 'constructor' }), ['a · x acknowledgement ended: ended']);
  const other = run({ ...state, selectedKey: keyOfPair('b', 'y') }, model, { type: 'ack', seq: 10, ack: { host: 'a', service: 'x' } });
  assert.deepEqual(kinds(other.effects), ['log', 'changed', 'render']);
  assert.deepEqual(logs(other.effects), ['a · x acknowledged by someone']);
});

test('a silence: the log says what changed, the silence list and open details are redrawn', () => {
  const model = new Model();
  model.applySnapshot({ seq: 1, events: [ev('a', 'x', 'critical')] }, NOW);
  const state = { ...initialState(''), snapshot: true, live: true, selectedKey: keyOfPair('b', 'y') };
  const silence = { id: '2', query: 'host = "a"', by: 'ann', comment: '', active: true };
  const created = run(state, model, { type: 'silence', change: 'created', seq: 2, id: '2', silence, silenced: [['a', 'x']] });
  assert.deepEqual(logs(created.effects), ['Silence created by ann: host = "a"']);
  assert.deepEqual(kinds(created.effects), ['log', 'silences', 'render', 'details']);
  assert.equal(model.status(keyOfPair('a', 'x')), 'silenced');
  const deleted = run(state, model, { type: 'silence', change: 'deleted', seq: 3, id: '2', silence: null, unsilenced: [['a', 'x']] });
  assert.deepEqual(logs(deleted.effects), ['Silence deleted: host = "a"']);
  assert.deepEqual(run(state, model, { type: 'silences', seq: 3, silences: [] }).effects, [], 'duplicate');
});

test('an error frame goes to the filter first; unknown frames change nothing', () => {
  const model = new Model();
  const state = frozen({ ...initialState(''), snapshot: true, live: true });
  const error = dispatch(state, { type: 'error', error: 'bad query' }, { model, now: NOW });
  assert.deepEqual(error.effects.map((e) => [e.kind, e.text]), [['error', 'Server error: bad query']]);
  assert.equal(dispatch(state, { type: 'error' }, { model, now: NOW }).effects[0].text, 'Server error: unknown');
  const unknown = dispatch(state, { type: 'hologram', seq: 99 }, { model, now: NOW });
  assert.deepEqual(unknown, { state, effects: [] });
  assert.equal(model.seq, null);
});

test('connection states: what #conn shows and the bookkeeping per socket', () => {
  const ctx = { now: NOW, attempt: 0, retryIn: 3, haveSnapshot: true };
  const s0 = frozen({ ...initialState(''), snapshot: true, resumed: true });
  const connecting = connectionChanged(s0, 'connecting', '', ctx);
  assert.deepEqual([connecting.view.shown, connecting.view.text, connecting.view.retry], ['connecting', 'connecting…', false]);
  const syncing = connectionChanged(s0, 'syncing', '', { ...ctx, attempt: 2 });
  assert.equal(syncing.view.text, 'reconnecting…');
  assert.deepEqual([syncing.state.snapshot, syncing.state.resumed], [false, false], 'a new socket has sent nothing yet');
  assert.deepEqual(kinds(syncing.effects), ['filter-socket', 'render']);

  const live = connectionChanged(frozen(syncing.state), 'live', '', ctx);
  assert.deepEqual([live.state.live, live.state.lastLiveAt, live.state.shown], [true, NOW, 'live']);
  assert.deepEqual(live.view.stale, { stale: false, asOf: null });

  // connection.js' detail for a 1008 close; the banner used to read "The server sed by the server: …".
  const closed = connectionChanged(frozen(live.state), 'waiting', 'closed by the server: too many pings', { ...ctx, now: NOW + 5 });
  assert.deepEqual([closed.view.shown, closed.view.text, closed.view.retry], ['reconnecting', 'reconnecting in 3s', true]);
  assert.equal(closed.state.live, false);
  assert.deepEqual(closed.view.stale, { stale: true, asOf: NOW }, 'stale, showing data as of the last live moment');
  assert.deepEqual(closed.effects.find((e) => e.kind === 'banner'), { kind: 'banner', text: 'The server closed the connection: too many pings. Reconnecting.' });
  // The countdown repeats "waiting": no second banner, nothing re-rendered.
  const tick = connectionChanged(frozen(closed.state), 'waiting', 'closed by the server: too many pings', ctx);
  assert.deepEqual(tick.effects, []);
  assert.equal(tick.view.stale, null);

  const silent = connectionChanged(frozen(live.state), 'waiting', 'no data for 30s', ctx);
  assert.deepEqual(logs(silent.effects), ['No data for 30s: reconnecting']);
  assert.deepEqual(logs(connectionChanged(frozen(closed.state), 'waiting', 'no data for 30s', ctx).effects), [], 'only when it was live');

  const refused = connectionChanged(s0, 'refused', '401 unauthorized', ctx);
  assert.deepEqual([refused.view.text, refused.view.refused, refused.view.retry], ['refused: token', true, true]);
  assert.equal(connectionChanged(s0, 'refused', '403 origin', ctx).view.text, 'refused: origin');
});

test('each history pass has a newer generation than the last', () => {
  const a = resolveSince(frozen(initialState('')));
  const b = resolveSince(frozen(a.state));
  assert.deepEqual([a.effects, b.effects], [[{ kind: 'resolve-since', generation: 1 }], [{ kind: 'resolve-since', generation: 2 }]]);
});

test('services are described by host and service, with placeholders', () => {
  assert.equal(describe({ host: 'a', service: 'x' }), 'a · x');
  assert.equal(describe({}), '(no host) · (no service)');
});

test('a metrics frame: live values of held services, grid cells and open details follow, no seq, log or flash', () => {
  const model = new Model();
  const snap = { type: 'snapshot', seq: 4, epoch: 'e1', events: [ev('a', 'disk', 'critical', { metric: 91 }), ev('b', 'disk', 'warning')] };
  const { state } = run(initialState(''), model, snap);
  const values = [
    { host: 'a', service: 'disk', metric: 99.1, description: '99.1% used', time: '2026-12-01T12:00:00.000Z' },
    { host: 'zz', service: 'disk', metric: 1, description: null, time: '2026-12-01T12:00:00.000Z' },
  ];
  const frame = metricsFrame(NOW, values);
  const step = dispatch(frozen(state), frame, { model, now: NOW });
  assert.equal(model.seq, 4, 'not a change');
  assert.equal(model.entries.get(keyOfPair('a', 'disk')).event.metric, 99.1);
  assert.deepEqual(kinds(step.effects), ['grid-update', 'render']);
  assert.equal(step.effects[0].entry.key, keyOfPair('a', 'disk'));
  assert.deepEqual(step.effects[1], { kind: 'render', now: false });

  const open = { ...state, selectedKey: keyOfPair('a', 'disk') };
  assert.ok(kinds(dispatch(frozen(open), frame, { model, now: NOW }).effects).includes('details'));
  const other = { ...state, selectedKey: keyOfPair('b', 'disk') };
  assert.ok(!kinds(dispatch(frozen(other), frame, { model, now: NOW }).effects).includes('details'));
  // Values of services outside the view change nothing.
  const outside = dispatch(frozen(state), metricsFrame(NOW, [values[1]]), { model, now: NOW });
  assert.deepEqual(outside.effects, []);
});
