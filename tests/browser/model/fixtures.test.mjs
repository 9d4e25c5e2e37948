// The server's example frames (tests/fixtures/frames/*.json, written by `cargo test --lib
// protocol::` from the types in src/protocol/) fed to the page's own parsing and model code: both
// ends are checked against the same examples. Every fixture must be consumed here: a new frame or
// answer fails this test until the page is taught it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Model, keyOfPair, parseTime, stateClass } from '../../../static/js/model.js';
import { ratesFromSamples } from '../../../static/js/views/chart.js';
import { silenceNotes } from '../../../static/js/silence-log.js';
import { framesOf } from '../../../static/js/connection.js';

const dir = fileURLToPath(new URL('../../fixtures/frames/', import.meta.url));
const fixtures = new Map(
  readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .map((name) => [name.slice(0, -5), JSON.parse(readFileSync(dir + name, 'utf8'))]),
);
const used = new Set();
const fixture = (name) => {
  assert.ok(fixtures.has(name), `fixture ${name} exists`);
  used.add(name);
  return structuredClone(fixtures.get(name));
};

const web1 = keyOfPair('web1', 'cpu');
const db1 = keyOfPair('db1', 'disk');

/** A model that has the snapshot (seq 41: web1 critical and acked, db1 warning and silenced). */
function started() {
  const m = new Model();
  m.applySnapshot(fixture('ws-snapshot'), 0);
  return m;
}

test('the snapshot fills the model: events, acks, silences, silenced keys', () => {
  const m = started();
  assert.equal(m.seq, 41);
  assert.equal(m.haveSnapshot, true);
  assert.equal(m.entries.size, 2);
  const entry = m.entries.get(web1);
  assert.equal(entry.cls, 'critical');
  assert.equal(entry.event.team, 'db', 'custom attributes are top-level keys');
  assert.equal(entry.since, parseTime(entry.event.time), 'a snapshot start is the event time');
  assert.equal(entry.sinceExact, false, 'a snapshot does not say when the state began');
  assert.equal(m.status(web1), 'acked');
  assert.equal(m.acks.get(web1).note, 'on it');
  assert.equal(m.status(db1), 'silenced');
  assert.deepEqual(m.silences.map((s) => s.id), ['40']);
  assert.deepEqual(m.handledCounts(), { active: 0, acked: 1, silenced: 1, worst: 'ok' });
  const reset = fixture('ws-snapshot-reset');
  assert.equal(reset.reset, true);
  m.applySnapshot(reset, 0);
  assert.equal(m.entries.size, 2, 'a reset snapshot replaces the same view');
});

test('change frames: plain, silenced, expired and removed, cleared', () => {
  const m = started();
  const plain = m.applyChange(fixture('ws-change'), 0);
  assert.equal(plain.key, web1);
  assert.equal(plain.previousState, 'ok');
  assert.equal(plain.entry.sinceExact, true);
  assert.equal(m.status(web1), 'acked', 'a change keeps the ack');
  const silenced = m.applyChange(fixture('ws-change-silenced'), 0);
  assert.equal(silenced.key, db1);
  assert.equal(m.status(db1), 'silenced');
  const removed = m.applyChange(fixture('ws-change-removed'), 0);
  assert.equal(removed.removed, true);
  assert.equal(removed.clearedBy, null);
  assert.equal(removed.previousState, 'expired');
  const cleared = m.applyChange(fixture('ws-change-cleared'), 0);
  assert.equal(cleared.removed, true);
  assert.equal(cleared.clearedBy, 'ann');
  assert.equal(m.entries.has(web1), false);
  assert.equal(m.acks.has(web1), false, 'a cleared key loses its ack');
  assert.equal(m.seq, 45);
  assert.equal(m.applyChange(fixture('ws-change'), 0), null, 'seq 42 again is a duplicate');
});

test('operator-action frames: ack, unack, silence deltas, the old whole set', () => {
  const m = started();
  m.acks.clear();
  assert.equal(m.applyAck(fixture('ws-ack')), web1);
  assert.equal(m.status(web1), 'acked');
  assert.equal(parseTime(m.acks.get(web1).expires_at) - parseTime(m.acks.get(web1).at), 3600_000);
  assert.equal(m.applyUnack(fixture('ws-unack')), web1);
  assert.equal(m.status(web1), 'active');
  const resolved = fixture('ws-unack-resolved');
  assert.equal(resolved.reason, 'resolved');
  assert.equal('by' in resolved, false, 'only an operator end names who');
  assert.equal(m.applyUnack(resolved), web1);

  const before = m.silences.slice();
  const created = fixture('ws-silence');
  assert.equal(created.change, 'created');
  assert.equal(m.applySilence(created).size, 0, 'db1 was silenced already');
  assert.deepEqual(m.silences.map((s) => s.id), ['40', '49']);
  const notes = silenceNotes(before, m.silences, { now: Date.now(), by: created.silence.by, change: created.change });
  assert.ok(notes.some((n) => n.startsWith('Silence created by bob')), notes.join('; '));
  const ended = fixture('ws-silence-ended');
  assert.equal(ended.silence, null);
  assert.deepEqual([...m.applySilence(ended)], [db1]);
  assert.deepEqual(m.silences.map((s) => s.id), ['49']);
  assert.equal(m.status(db1), 'active');

  const whole = m.applySilences(fixture('ws-silences'));
  assert.deepEqual([...whole], [db1]);
  assert.deepEqual(m.silences.map((s) => s.id), ['49']);
  assert.equal(m.seq, 51);
});

test('stats and error frames carry what the page reads', () => {
  const stats = fixture('ws-stats');
  for (const field of ['time', 'interval_ms', 'clients', 'events', 'changes']) {
    assert.equal(typeof stats[field], 'number', field);
  }
  const error = fixture('ws-error');
  assert.equal(typeof error.error, 'string');
  const subscribe = fixture('ws-client-subscribe');
  assert.deepEqual(Object.keys(subscribe).sort(), ['query', 'type']);
});

test('a batch unwraps into its frames, in order, each one the page applies', () => {
  const m = started();
  const frames = framesOf(fixture('ws-batch'));
  assert.deepEqual(frames.map((f) => f.type), ['change', 'ack']);
  assert.notEqual(m.applyChange(frames[0], 0), null);
  assert.equal(m.applyAck(frames[1]), web1);
  assert.equal(m.seq, 46);
  assert.deepEqual(framesOf({ type: 'batch', frames: 'no' }), []);
  assert.deepEqual(framesOf({ type: 'batch', frames: [null, 3, { type: 'batch', frames: [] }] }), []);
  assert.deepEqual(framesOf(fixture('ws-stats')).map((f) => f.type), ['stats']);
});

test('metrics frames update the live values of the services the model holds, seq untouched', () => {
  const m = started();
  const frame = fixture('ws-metrics');
  assert.equal(typeof frame.time, 'number');
  const before = m.entries.get(web1);
  const { since } = before;
  const updated = m.applyMetrics(frame);
  assert.deepEqual(updated.map((e) => e.key), [web1, db1], 'web2 · ping is not in the view: skipped');
  assert.equal(m.seq, 41, 'not a change');
  const cpu = m.entries.get(web1).event;
  assert.equal(cpu.metric, 0.99);
  assert.equal(cpu.description, 'load 14');
  assert.equal(cpu.time, '2026-12-01T12:00:01.000Z');
  assert.equal(cpu.state, 'critical', 'the state stays');
  assert.equal(cpu.team, 'db', 'attributes stay');
  assert.equal(m.entries.get(web1).since, since, 'the state did not begin again');
  const disk = m.entries.get(db1).event;
  assert.ok(!('metric' in disk) && !('description' in disk), 'null is absent');
  assert.deepEqual([...m.takeMoved()].sort(), [db1, web1].sort());
  // An older value than the one held is not applied.
  const stale = fixture('ws-metrics');
  stale.values[0][2] = 0.1; // [host, service, metric, description, age]
  stale.values[0][4] = stale.time - Date.parse('2026-12-01T11:00:00.000Z');
  assert.deepEqual(m.applyMetrics(stale).map((e) => e.key), [db1]);
  assert.equal(m.entries.get(web1).event.metric, 0.99);
});

test('every /ws frame type has a page handler, and the fixtures cover them', () => {
  // The types app.js dispatches on (its switch), which must be what the server sends.
  const handled = ['snapshot', 'change', 'ack', 'unack', 'silence', 'silences', 'stats', 'metrics', 'error', 'batch'];
  const sent = new Set(
    [...fixtures.entries()].filter(([name]) => name.startsWith('ws-') && name !== 'ws-client-subscribe').map(([, f]) => f.type),
  );
  assert.deepEqual([...sent].sort(), handled.slice().sort());
});

test('HTTP answers: history replays into the model, rates chart, actions and refusals', () => {
  const m = started();
  const page = fixture('http-history');
  assert.equal(typeof page.epoch, 'string');
  assert.equal(page.more, true);
  assert.deepEqual(page.gap, { from: 43, to: 45 });
  for (const change of page.changes) assert.notEqual(m.applyChange(change, 0), null);
  assert.equal(stateClass(m.entries.get(web1).event.state), 'critical');

  const rates = fixture('http-rates');
  const { events, changes } = ratesFromSamples(rates.samples);
  assert.deepEqual(events, [[1_796_126_402_000, 100]]);
  assert.deepEqual(changes, [[1_796_126_402_000, 60]]);

  // GET /api/series: the shape the page's charts read (points are [t_ms, min, max, avg, last, count]).
  const series = fixture('http-series');
  assert.deepEqual(Object.keys(series), ['from', 'to', 'step', 'series']);
  assert.deepEqual(Object.keys(series.series[0]), ['host', 'service', 'points']);
  assert.equal(series.series[0].points[0].length, 6);
  assert.deepEqual(fixture('http-action-done'), { ok: true, seq: 46 });
  const silence = fixture('http-silence-done');
  assert.equal(silence.id, String(silence.seq), 'a new silence id is its seq, as a string');
  assert.deepEqual(fixture('http-failed').ok, false);
  assert.equal(typeof fixture('http-failed').error, 'string');
  const list = fixture('http-silences');
  m.applySilences({ ...list, seq: 99 });
  assert.deepEqual(m.silences.map((s) => s.id), ['49']);
  assert.deepEqual(fixture('http-accepted'), { ok: true, accepted: 1 });
  assert.deepEqual(fixture('http-healthz'), { ok: true });
  assert.deepEqual(fixture('http-readyz'), { ready: true });
  assert.equal(fixture('http-readyz-not').ready, false);
});

test('/events acks and /index events', () => {
  assert.deepEqual(fixture('events-accepted'), { id: 'b1', ok: true, accepted: 1 });
  const refused = fixture('events-refused');
  assert.equal(refused.id, null);
  assert.equal(refused.ok, false);
  const event = fixture('index-event');
  const m = new Model();
  m.applySnapshot({ seq: 1, events: [event] }, 0);
  assert.equal(m.entries.size, 1, 'an /index event is the same event form');
});

test('every fixture is consumed by a test above', () => {
  // Runs last (node --test runs a file's tests in order).
  assert.deepEqual([...fixtures.keys()].filter((name) => !used.has(name)), []);
});
