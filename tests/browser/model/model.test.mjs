// Unit tests of the page's pure model (static/js/model.js), with node --test: no browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Model, stateClass, keyOfPair, parseTime } from '../../../static/js/model.js';

const ev = (host, service, state, extra = {}) => ({ host, service, state, ...extra });

test('state classes', () => {
  assert.equal(stateClass('CRITICAL'), 'critical');
  assert.equal(stateClass('failure'), 'critical');
  assert.equal(stateClass('warn'), 'warning');
  assert.equal(stateClass('ok'), 'ok');
  assert.equal(stateClass('expired'), 'expired');
  assert.equal(stateClass('degraded'), 'other');
  assert.equal(parseTime(10), 10_000);
  assert.equal(parseTime('1970-01-01T00:00:01Z'), 1000);
  assert.equal(parseTime('nope'), null);
});

test('a snapshot replaces everything and counts by class', () => {
  const m = new Model();
  const r = m.applySnapshot({ seq: 5, events: [ev('a', 'x', 'critical'), ev('b', 'x', 'ok'), ev('c', 'x', 'warning'), { host: 'bad' }] }, 1000);
  assert.equal(r.problems, 2);
  assert.equal(m.seq, 5);
  assert.equal(m.entries.size, 3);
  assert.deepEqual({ ...m.counts }, { critical: 1, warning: 1, expired: 0, other: 0, ok: 1 });
  assert.equal(m.haveSnapshot, true);
  const r2 = m.applySnapshot({ seq: 9, events: [ev('a', 'x', 'warning')] }, 2000);
  assert.deepEqual([...r2.changed], [keyOfPair('a', 'x')]);
  assert.deepEqual(r2.removed.sort(), [keyOfPair('b', 'x'), keyOfPair('c', 'x')].sort());
  assert.equal(m.problemCount(), 1);
});

test('a snapshot keeps a known start time while the state is the same', () => {
  const m = new Model();
  m.applyChange({ seq: 1, event: ev('a', 'x', 'critical', { time: '2026-01-01T00:00:00Z' }) }, 0);
  m.applySnapshot({ seq: 2, events: [ev('a', 'x', 'critical', { time: '2026-01-01T00:05:00Z' })] }, 0);
  const e = m.entries.get(keyOfPair('a', 'x'));
  assert.equal(e.since, Date.parse('2026-01-01T00:00:00Z'));
  assert.equal(e.sinceExact, true);
});

test('changes: duplicates by seq are dropped, removal forgets the key and its ack', () => {
  const m = new Model();
  m.applySnapshot({ seq: 10, events: [] }, 0);
  assert.equal(m.applyChange({ seq: 10, event: ev('a', 'x', 'critical') }, 0), null, 'seq already seen');
  const r = m.applyChange({ seq: 11, previous_state: 'ok', event: ev('a', 'x', 'critical') }, 0);
  assert.equal(r.previousState, 'ok');
  assert.equal(r.previousClass, null);
  assert.equal(m.counts.critical, 1);
  m.applyAck({ seq: 12, ack: { host: 'a', service: 'x', note: 'on it', by: 'ann' } });
  assert.equal(m.status(keyOfPair('a', 'x')), 'acked');
  const gone = m.applyChange({ seq: 13, removed: true, cleared_by: 'bob', event: ev('a', 'x', 'critical') }, 0);
  assert.equal(gone.removed, true);
  assert.equal(gone.clearedBy, 'bob');
  assert.equal(m.entries.size, 0);
  assert.equal(m.acks.size, 0);
  assert.equal(m.counts.critical, 0);
});

test('acks and silences: status, counts apart, silences replace the set', () => {
  const m = new Model();
  m.applySnapshot({
    seq: 1,
    events: [ev('a', 'x', 'critical'), ev('b', 'x', 'warning'), ev('c', 'x', 'critical'), ev('d', 'x', 'ok')],
    acks: [{ host: 'a', service: 'x', note: 'n', by: 'ann', at: '2026-12-01T13:00:00.000Z', expires_at: null }],
    silences: [{ id: '1', query: 'host = "b"', active: true }],
    silenced: [['b', 'x']],
  }, 0);
  assert.equal(m.status(keyOfPair('a', 'x')), 'acked');
  assert.equal(m.status(keyOfPair('b', 'x')), 'silenced');
  assert.equal(m.status(keyOfPair('c', 'x')), 'active');
  assert.deepEqual(m.handledCounts(), { active: 1, acked: 1, silenced: 1, worst: 'critical' });
  const flipped = m.applySilences({ seq: 2, silences: [], silenced: [['c', 'x']] });
  assert.deepEqual([...flipped].sort(), [keyOfPair('b', 'x'), keyOfPair('c', 'x')].sort());
  assert.deepEqual(m.handledCounts(), { active: 1, acked: 1, silenced: 1, worst: 'warning' }, 'b is active again: a warning');
  m.applyUnack({ seq: 3, host: 'a', service: 'x', reason: 'deleted', by: 'ann' });
  assert.deepEqual(m.handledCounts(), { active: 2, acked: 0, silenced: 1, worst: 'critical' });
  assert.equal(m.applyUnack({ seq: 3, host: 'a', service: 'x' }), null, 'duplicate seq');
  // A change frame carries the silenced flag of its key.
  m.applyChange({ seq: 4, event: ev('a', 'x', 'critical'), silenced: true }, 0);
  assert.equal(m.status(keyOfPair('a', 'x')), 'silenced');
  m.applyChange({ seq: 5, event: ev('a', 'x', 'warning') }, 0);
  assert.equal(m.status(keyOfPair('a', 'x')), 'active');
});

test('pinSince moves only a lower-bound start time', () => {
  const m = new Model();
  m.applySnapshot({ seq: 1, events: [ev('a', 'x', 'critical', { time: 100 })] }, 0);
  const key = keyOfPair('a', 'x');
  assert.equal(m.entries.get(key).sinceExact, false);
  assert.equal(m.pinSince(key, 50_000), true);
  assert.equal(m.entries.get(key).since, 50_000);
  assert.equal(m.pinSince(key, 10), false, 'already exact');
});

test('attribute names of problems, for grouping', () => {
  const m = new Model();
  m.applySnapshot({ seq: 1, events: [ev('a', 'x', 'critical', { team: 'db', tags: ['p'] }), ev('b', 'x', 'ok', { zone: 'eu' })] }, 0);
  assert.deepEqual(m.attributeNames(), ['team']);
});

test('a silence frame changes one silence and the keys it names; a whole-set frame still replaces', () => {
  const m = new Model();
  m.applySnapshot({
    seq: 1,
    events: [ev('a', 'x', 'critical'), ev('b', 'x', 'warning'), ev('c', 'x', 'critical')],
    silences: [{ id: '1', query: 'host = "b"', active: true }],
    silenced: [['b', 'x']],
  }, 0);
  const created = m.applySilence({ seq: 2, change: 'created', id: '2', silence: { id: '2', query: 'host = "a"', active: true }, silenced: [['a', 'x']], unsilenced: [] });
  assert.deepEqual([...created], [keyOfPair('a', 'x')]);
  assert.deepEqual(m.silences.map((s) => s.id), ['1', '2']);
  assert.equal(m.status(keyOfPair('a', 'x')), 'silenced');
  assert.equal(m.status(keyOfPair('b', 'x')), 'silenced', 'untouched');
  const edited = m.applySilence({ seq: 3, change: 'edited', id: '1', silence: { id: '1', query: 'host = "c"', active: true, comment: 'moved' }, silenced: [['c', 'x']], unsilenced: [['b', 'x']] });
  assert.deepEqual([...edited].sort(), [keyOfPair('b', 'x'), keyOfPair('c', 'x')].sort());
  assert.deepEqual(m.silences.map((s) => [s.id, s.comment]), [['1', 'moved'], ['2', undefined]], 'edited in place');
  assert.deepEqual(m.handledCounts(), { active: 1, acked: 0, silenced: 2, worst: 'warning' });
  const deleted = m.applySilence({ seq: 4, change: 'deleted', id: '2', silence: null, silenced: [], unsilenced: [['a', 'x']] });
  assert.deepEqual([...deleted], [keyOfPair('a', 'x')]);
  assert.deepEqual(m.silences.map((s) => s.id), ['1']);
  assert.equal(m.applySilence({ seq: 4, id: '2', silence: null }), null, 'duplicate seq');
  // History from an older server: the whole set.
  m.applySilences({ seq: 5, silences: [], silenced: [] });
  assert.deepEqual(m.silences, []);
  assert.equal(m.status(keyOfPair('c', 'x')), 'active');
});

test('takeTouched names the keys a change, ack or silence touched; a snapshot touches all (issue 24)', () => {
  const m = new Model();
  assert.equal(m.takeTouched().all, true, 'nothing seen yet: everything is new');
  m.applySnapshot({ seq: 1, events: [{ host: 'a', service: 's', state: 'critical' }] }, 0);
  assert.equal(m.takeTouched().all, true);
  assert.deepEqual(m.takeTouched(), { all: false, keys: new Set() });
  m.applyChange({ seq: 2, event: { host: 'b', service: 's', state: 'warning' } }, 0);
  m.applyAck({ seq: 3, ack: { host: 'a', service: 's', by: 'x' } });
  m.applyChange({ seq: 4, event: { host: 'c', service: 's', state: 'ok' }, removed: true }, 0);
  m.applySilence({ seq: 5, id: 1, silence: { id: 1 }, silenced: [['d', 's']] });
  const t = m.takeTouched();
  assert.equal(t.all, false);
  assert.deepEqual([...t.keys].sort(), [keyOfPair('a', 's'), keyOfPair('b', 's'), keyOfPair('c', 's'), keyOfPair('d', 's')].sort());
  // Bounded: past max(1024, entries) keys it gives up naming them and says "all".
  for (let i = 0; i < 1100; i += 1) m.applyChange({ seq: 10 + i, event: { host: `h${i}`, service: 's', state: 'ok' }, removed: true }, 0);
  assert.equal(m.takeTouched().all, true);
});
