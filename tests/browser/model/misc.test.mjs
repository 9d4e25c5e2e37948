// Unit tests of the small pure helpers: the query hint, durations, the connection's state
// machine and probe verdicts, the rates of /api/rates samples, the document title.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { queryHint } from '../../../static/js/query-hint.js';
import { parseDuration, relative } from '../../../static/js/format.js';
import { nextState, classifyProbe, backoffDelay, BACKOFF_MAX_MS } from '../../../static/js/connection.js';

test('an unquoted value gets a hint; quoted values, numbers, nil and field pairs do not', () => {
  assert.match(queryHint('state = critical'), /state = "critical"/);
  assert.match(queryHint('host =~ web% and state != ok'), /./);
  assert.equal(queryHint('state = "critical"'), '');
  assert.equal(queryHint('metric > 5 and host = nil'), '');
  assert.equal(queryHint('description = "state = ok"'), '');
  assert.equal(queryHint('host = service'), '');
  assert.equal(queryHint('tagged "prod"'), '');
});

test('durations and relative times', () => {
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration('30m'), 1_800_000);
  assert.equal(parseDuration('1d'), 86_400_000);
  assert.equal(parseDuration('soon'), null);
  assert.equal(relative(42_000), '42s');
  assert.equal(relative(3_725_000), '1h 02m');
});

test('the connection state machine', () => {
  assert.equal(nextState('connecting', 'open'), 'syncing');
  assert.equal(nextState('syncing', 'live'), 'live');
  assert.equal(nextState('live', 'close'), 'waiting');
  assert.equal(nextState('waiting', 'timer'), 'connecting');
  assert.equal(nextState('connecting', 'refused'), 'refused');
  assert.equal(nextState('refused', 'timer'), null, 'a refused page does not retry by itself');
  assert.equal(nextState('refused', 'retry'), 'connecting');
  assert.equal(nextState('offline', 'online'), 'connecting');
  assert.equal(nextState('live', 'open'), null);
  for (let n = 0; n < 20; n += 1) assert.ok(backoffDelay(n, () => 1) <= BACKOFF_MAX_MS);
  assert.equal(backoffDelay(0, () => 0), 250);
});

test('what a plain GET of the socket URL says', () => {
  assert.equal(classifyProbe(401, { error: 'invalid token' }).kind, 'token');
  assert.equal(classifyProbe(403, { error: 'origin "x" is not allowed' }).kind, 'forbidden');
  assert.equal(classifyProbe(400, { error: 'bad query' }).kind, 'query');
  assert.equal(classifyProbe(503, null).kind, 'unavailable');
  assert.equal(classifyProbe(426, null).kind, 'admitted');
  assert.equal(classifyProbe(400, null).kind, 'admitted', 'an upgrade refusal without an error sentence');
});

test('rates from /api/rates samples: per second and per minute; a counter going back starts over', async () => {
  const { ratesFromSamples } = await import('../../../static/js/views/chart.js');
  const r = ratesFromSamples([[1000, 0, 0], [2000, 10, 1], [3000, 30, 1], [4000, 5, 0], [5000, 15, 2]]);
  assert.deepEqual(r.events, [[2000, 10], [3000, 20], [5000, 10]]);
  assert.deepEqual(r.changes, [[2000, 60], [3000, 0], [5000, 120]]);
});

test('the document title counts acked and silenced problems apart', async () => {
  const { titleFor } = await import('../../../static/js/views/header.js');
  assert.equal(titleFor({ active: 3, acked: 0, silenced: 0 }, true), '(3) statecast');
  assert.equal(titleFor({ active: 0, acked: 0, silenced: 0 }, true), 'statecast');
  assert.equal(titleFor({ active: 2, acked: 1, silenced: 4 }, true), '(2, 1 acked, 4 silenced) statecast');
  assert.equal(titleFor({ active: 0, acked: 1, silenced: 0 }, true), '(0, 1 acked) statecast');
  assert.equal(titleFor({ active: 5, acked: 0, silenced: 0 }, false), 'statecast');
});

test('the UTC clock in a 12-hour locale reads 24-hour with Z, not "AMZ" (issue 24 item 2)', async () => {
  // In a child so the locale is a 12-hour one whatever this machine's default is.
  const { execFileSync } = await import('node:child_process');
  const url = new URL('../../../static/js/format.js', import.meta.url).href;
  const code = `const f = await import(${JSON.stringify(url)}); f.setClock('utc');
    console.log(JSON.stringify([f.clock(Date.UTC(2026, 0, 1, 2, 48, 14)), f.clock(Date.UTC(2026, 0, 1, 14, 48, 14)), f.clock(Date.UTC(2026, 0, 1, 0, 0, 1))]));`;
  const env = { ...process.env, LC_ALL: 'en_US.UTF-8', LANG: 'en_US.UTF-8' };
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', code], { env, encoding: 'utf8' }));
  assert.deepEqual(out, ['02:48:14Z', '14:48:14Z', '00:00:01Z']);
});

test('the live log\'s sentences for silences created, edited, started, deleted, ended (issue 24 item 6)', async () => {
  const { silenceNotes } = await import('../../../static/js/silence-log.js');
  const now = Date.parse('2026-12-07T12:00:00Z');
  const s = (id, extra = {}) => ({
    id, query: 'host =~ "db%"', comment: '', by: 'alice', created_at: '2026-12-07T11:00:00.000Z',
    starts_at: '2026-12-07T11:00:00.000Z', ends_at: '2026-12-07T14:00:00.000Z', active: true, ...extra,
  });
  assert.deepEqual(silenceNotes([], [s('1', { comment: 'disk swap' })], { now }), ['Silence created by alice: host =~ "db%" — disk swap']);
  assert.deepEqual(silenceNotes([s('1')], [s('1', { by: 'bob', ends_at: '2026-12-07T16:00:00.000Z' })], { now }), ['Silence edited by bob: host =~ "db%"']);
  assert.deepEqual(silenceNotes([s('1', { active: false })], [s('1')], { now }), ['Silence started: host =~ "db%"']);
  assert.deepEqual(silenceNotes([s('1')], [s('1')], { now }), [], 'an unchanged set says nothing');
  assert.deepEqual(silenceNotes([s('1'), s('2', { query: 'service = "disk"' })], [s('2', { query: 'service = "disk"' })], { now }), ['Silence deleted: host =~ "db%"']);
  assert.deepEqual(silenceNotes([s('1')], [], { now, by: 'carol' }), ['Silence deleted by carol: host =~ "db%"']);
  assert.deepEqual(silenceNotes([s('1', { ends_at: '2026-12-07T11:59:59.000Z' })], [], { now }), ['Silence ended: host =~ "db%"']);
  // A `silence` delta frame says itself whether the silence was deleted or ended.
  assert.deepEqual(silenceNotes([s('1', { ends_at: '2026-12-07T11:59:59.000Z' })], [], { now, change: 'deleted' }), ['Silence deleted: host =~ "db%"']);
  assert.deepEqual(silenceNotes([s('1')], [], { now, change: 'ended' }), ['Silence ended: host =~ "db%"']);
});
