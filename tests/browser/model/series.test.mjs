// Unit tests of static/js/series.js: the /api/series answer and live `metrics` frames into chart
// columns, and the details graph's state bands and action marks from history records.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseSeriesAnswer, SeriesSet, stateBands, actionMarks, seriesLabel, concernsKey, MAX_POINTS,
} from '../../../static/js/series.js';
import { keyOfPair } from '../../../static/js/model.js';
import { metricsFrame } from './frames.mjs';

const MIN = 60_000;

const WEB_CPU = keyOfPair('web1', 'cpu');
const iso = (/** @type {number} */ ms) => new Date(ms).toISOString();

function answer() {
  return {
    from: 0,
    to: 10 * MIN,
    step: MIN,
    series: [
      { host: 'web1', service: 'cpu', points: [[2 * MIN, 1, 3, 2, 3, 2], [0, 5, 5, 5, 5, 1]] },
      { host: 'web2', service: 'cpu', points: [[MIN, 7, 9, 8, 9, 4], [2 * MIN, 1, 1, 1, 1, 1], ['bad', 1, 1, 1, 1, 1], [3 * MIN, 1, null, 1, 1, 1]] },
    ],
  };
}

test('an answer is checked: points sorted, malformed points dropped, labels named', () => {
  const { answer: a, error } = parseSeriesAnswer(answer());
  assert.equal(error, null);
  assert.ok(a);
  assert.deepEqual(a.series[0].points.map((p) => p[0]), [0, 2 * MIN]);
  assert.deepEqual(a.series[1].points.map((p) => p[0]), [MIN, 2 * MIN]);
  assert.equal(a.series[0].label, 'web1 · cpu');
  assert.equal(seriesLabel(null, 'disk'), '(no host) · disk');
  assert.match(String(parseSeriesAnswer({ error: 'x' }).error), /not a series list/);
  assert.match(String(parseSeriesAnswer({ series: [], from: 5, to: 1, step: 1 }).error), /from, to and step/);
  assert.match(String(parseSeriesAnswer({ series: [], from: 0, to: 1, step: 0 }).error), /from, to and step/);
});

test('columns align every series on the union of bucket times, gaps as null', () => {
  const set = new SeriesSet(/** @type {any} */ (parseSeriesAnswer(answer()).answer), 10 * MIN);
  const { x, columns } = set.columns([3]);
  assert.deepEqual(x, [0, MIN, 2 * MIN]);
  assert.deepEqual(columns, [[5, null, 2], [null, 8, 1]]);
  const one = set.columns([1, 2, 3], [WEB_CPU]);
  assert.deepEqual(one.x, [0, 2 * MIN]);
  assert.deepEqual(one.columns, [[5, 1], [5, 3], [5, 2]]);
});

test('live values fold into their bucket: min, max, last exact, avg over what was seen', () => {
  const set = new SeriesSet(/** @type {any} */ (parseSeriesAnswer(answer()).answer), 60 * MIN);
  // At or before the answer's `to`: already counted by the server.
  assert.equal(set.foldFrame(metricsFrame(0, [{ host: 'web1', service: 'cpu', metric: 100, time: iso(10 * MIN) }])), false);
  const t = 10 * MIN + 5_000;
  const frame = metricsFrame(t, [
    { host: 'web1', service: 'cpu', metric: 4, time: iso(t) },
    { host: 'web9', service: 'cpu', metric: 4, time: iso(t) }, // not on this graph
    { host: 'web2', service: 'cpu', metric: null, time: iso(t) }, // no metric: nothing to draw
  ]);
  assert.equal(set.foldFrame(frame), true);
  set.fold(WEB_CPU, 10, t + 20_000);
  set.fold(WEB_CPU, 1, t + 70_000); // the next minute
  const pts = /** @type {any} */ (set.series.get(WEB_CPU)).points;
  assert.deepEqual(pts.at(-2), [10 * MIN, 4, 10, 7, 10, 2]);
  assert.deepEqual(pts.at(-1), [11 * MIN, 1, 1, 1, 1, 1]);
  assert.equal(/** @type {any} */ (set.series.get(keyOfPair('web2', 'cpu'))).points.length, 2);
  // The frame's own time stands in for a value without one.
  set.fold(WEB_CPU, 2, 11 * MIN + 1);
  assert.equal(set.foldFrame(metricsFrame(11 * MIN + 2, [{ host: 'web1', service: 'cpu', metric: 3 }])), true);
  assert.deepEqual(pts.at(-1), [11 * MIN, 1, 3, 2, 3, 3]);
});

test('a live value into a bucket the answer holds updates that bucket', () => {
  const a = /** @type {any} */ (parseSeriesAnswer(answer()).answer);
  a.to = 2 * MIN + 10_000; // the open bucket is 2 min
  const set = new SeriesSet(a, 60 * MIN);
  set.fold(WEB_CPU, 9, 2 * MIN + 30_000);
  assert.deepEqual(/** @type {any} */ (set.series.get(WEB_CPU)).points.at(-1), [2 * MIN, 1, 9, (2 * 2 + 9) / 3, 9, 3]);
});

test('trim drops buckets that ended before the range; points are bounded', () => {
  const set = new SeriesSet(/** @type {any} */ (parseSeriesAnswer(answer()).answer), 2 * MIN);
  set.trim(3 * MIN + 1);
  assert.deepEqual(set.columns([3]).x, [MIN, 2 * MIN]); // the bucket at 1 min overlaps the range
  assert.equal(set.from, MIN + 1);
  const long = new SeriesSet({ from: 0, to: 0, step: 1, series: [{ key: WEB_CPU, host: 'web1', service: 'cpu', label: '', points: [] }] }, Infinity);
  for (let t = 1; t <= MAX_POINTS + 5; t += 1) long.fold(WEB_CPU, t, t);
  const pts = /** @type {any} */ (long.series.get(WEB_CPU)).points;
  assert.equal(pts.length, MAX_POINTS);
  assert.equal(pts[0][0], 6);
});

/** @param {number} seq @param {string} host @param {string} prev @param {string} state @param {number} at @param {object} [extra] */
const change = (seq, host, prev, state, at, extra = {}) => ({
  type: 'change', seq, previous_state: prev, event: { host, service: 'cpu', state, time: iso(at) }, ...extra,
});

test('state bands: the state before the first change, each change, clipped to the range', () => {
  const records = [
    change(12, 'web1', 'critical', 'ok', 50 * MIN),
    change(10, 'web1', 'ok', 'critical', 20 * MIN),
    change(11, 'web2', 'ok', 'critical', 30 * MIN),
    { type: 'ack', seq: 13, ack: { host: 'web1', service: 'cpu', at: iso(25 * MIN) } },
  ];
  assert.deepEqual(stateBands(records, WEB_CPU, 10 * MIN, 60 * MIN), [
    { from: 10 * MIN, to: 20 * MIN, state: 'ok', cls: 'ok' },
    { from: 20 * MIN, to: 50 * MIN, state: 'critical', cls: 'critical' },
    { from: 50 * MIN, to: 60 * MIN, state: 'ok', cls: 'ok' },
  ]);
  // Changes before the range still say what state it starts in.
  assert.deepEqual(stateBands(records, WEB_CPU, 30 * MIN, 40 * MIN), [{ from: 30 * MIN, to: 40 * MIN, state: 'critical', cls: 'critical' }]);
  // No change recorded: the current state throughout, or nothing when unknown.
  assert.deepEqual(stateBands([], WEB_CPU, 0, MIN, 'warning'), [{ from: 0, to: MIN, state: 'warning', cls: 'warning' }]);
  assert.deepEqual(stateBands([], WEB_CPU, 0, MIN), []);
});

test('state bands: a removal leaves a gap; a change timed before the previous one does not go back', () => {
  const records = [
    change(1, 'web1', 'ok', 'critical', 10 * MIN),
    change(2, 'web1', 'critical', 'expired', 20 * MIN, { removed: true }),
    change(3, 'web1', 'ok', 'warning', 30 * MIN),
    change(4, 'web1', 'warning', 'critical', 25 * MIN),
  ];
  assert.deepEqual(stateBands(records, WEB_CPU, 0, 40 * MIN).map((b) => [b.from / MIN, b.to / MIN, b.state]), [
    [0, 10, 'ok'], [10, 20, 'critical'], [30, 40, 'critical'],
  ]);
});

test('action marks: acks, their ends and silences of this key, timed as history allows', () => {
  const records = [
    change(1, 'web1', 'ok', 'critical', 10 * MIN),
    { type: 'ack', seq: 2, ack: { host: 'web1', service: 'cpu', note: 'on it', by: 'ann', at: iso(12 * MIN), expires_at: null } },
    { type: 'ack', seq: 3, ack: { host: 'web2', service: 'cpu', by: 'bob', at: iso(13 * MIN) } },
    change(4, 'web2', 'ok', 'critical', 14 * MIN),
    { type: 'unack', seq: 5, host: 'web1', service: 'cpu', reason: 'deleted', by: 'ann' },
    { type: 'silence', seq: 6, change: 'created', id: '6', silence: { query: 'host = "web1"', comment: 'maint', starts_at: iso(15 * MIN) }, silenced: [['web1', 'cpu']], unsilenced: [] },
    { type: 'silence', seq: 7, change: 'created', id: '7', silence: { query: 'host = "db1"', starts_at: iso(16 * MIN) }, silenced: [['db1', 'cpu']], unsilenced: [] },
    change(8, 'web1', 'critical', 'ok', 20 * MIN),
    { type: 'unack', seq: 9, host: 'web1', service: 'cpu', reason: 'resolved' },
    { type: 'silence', seq: 10, change: 'deleted', id: '6', silence: null, silenced: [], unsilenced: [['web1', 'cpu']] },
  ];
  const marks = actionMarks(records.reverse(), WEB_CPU);
  assert.deepEqual(marks.map((m) => [m.kind, m.at / MIN, m.approx]), [
    ['ack', 12, false], ['unack', 14, true], ['silence', 15, false], ['unack', 20, false], ['unsilence', 20, true],
  ]);
  assert.equal(marks[0].text, 'acknowledged by ann: on it');
  assert.equal(marks[1].text, 'acknowledgement removed by ann');
  assert.equal(marks[2].text, 'silenced by host = "web1" (maint)');
});

test('an action received live without a time of its own is marked when it arrived', () => {
  const records = [
    change(1, 'web1', 'ok', 'critical', 10 * MIN),
    { type: 'unack', seq: 2, host: 'web1', service: 'cpu', reason: 'deleted', by: 'ann', received: 30 * MIN },
  ];
  assert.deepEqual(actionMarks(records, WEB_CPU).map((m) => [m.kind, m.at / MIN, m.approx]), [['unack', 30, false]]);
});

test('a value that came with a change of state is folded from the change frame', () => {
  const set = new SeriesSet(/** @type {any} */ (parseSeriesAnswer(answer()).answer), 60 * MIN);
  const t = 12 * MIN;
  const changeFrame = { type: 'change', seq: 9, previous_state: 'ok', event: { host: 'web1', service: 'cpu', state: 'critical', metric: 42, time: iso(t) } };
  assert.equal(set.foldFrame(changeFrame), true);
  assert.deepEqual(/** @type {any} */ (set.series.get(WEB_CPU)).points.at(-1), [t, 42, 42, 42, 42, 1]);
  assert.equal(set.foldFrame({ ...changeFrame, removed: true }), false);
  assert.equal(set.foldFrame({ type: 'stats', values: [] }), false);
});

test('which records and frames concern a key', () => {
  const yes = [
    change(1, 'web1', 'ok', 'critical', 0),
    { type: 'ack', seq: 2, ack: { host: 'web1', service: 'cpu' } },
    { type: 'unack', seq: 3, host: 'web1', service: 'cpu', reason: 'resolved' },
    { type: 'silence', seq: 4, silenced: [], unsilenced: [['web1', 'cpu']] },
  ];
  const no = [
    change(5, 'web2', 'ok', 'critical', 0),
    { type: 'ack', seq: 6, ack: { host: 'web1', service: 'disk' } },
    { type: 'silence', seq: 7, silenced: [['web1', null]], unsilenced: [] },
    { type: 'stats' },
  ];
  assert.deepEqual(yes.map((r) => concernsKey(r, WEB_CPU)), [true, true, true, true]);
  assert.deepEqual(no.map((r) => concernsKey(r, WEB_CPU)), [false, false, false, false]);
});

test('columns: the union of times of series that share some buckets and not others', () => {
  /** @param {string} host @param {number[]} ts */
  const s = (host, ts) => ({ host, service: 'cpu', points: ts.map((t) => [t, t, t, t, t, 1]) });
  const a = /** @type {any} */ (parseSeriesAnswer({ from: 0, to: 9, step: 1, series: [s('a', [2, 4, 6]), s('b', [2, 4, 6]), s('c', [1, 4, 7, 8])] }).answer);
  const { x, columns } = new SeriesSet(a, Infinity).columns([3]);
  assert.deepEqual(x, [1, 2, 4, 6, 7, 8]);
  assert.deepEqual(columns, [[null, 2, 4, 6, null, null], [null, 2, 4, 6, null, null], [1, null, 4, null, 7, 8]]);
});
