// Unit tests of flap damping and the notification decision (static/js/flap.js), with node --test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlapTracker, decideNotification, FLAP_START, FLAP_WINDOW_MS, FLAP_STOP } from '../../../static/js/flap.js';

test(`more than ${FLAP_START} changes in ${FLAP_WINDOW_MS / 60000} minutes is flapping, reported once`, () => {
  const t = new FlapTracker();
  const results = [];
  for (let i = 0; i < FLAP_START + 3; i += 1) results.push(t.record('k', i * 1000));
  assert.deepEqual(results.map((r) => r.started), [false, false, false, false, false, true, false, false]);
  assert.equal(t.isFlapping('k'), true);
});

test('changes spread wider than the window never flap', () => {
  const t = new FlapTracker();
  for (let i = 0; i < 20; i += 1) assert.equal(t.record('k', i * (FLAP_WINDOW_MS / FLAP_START + 1000)).flapping, false);
});

test(`hysteresis: flapping stops once at most ${FLAP_STOP} changes are left in the window`, () => {
  const t = new FlapTracker();
  for (let i = 0; i <= FLAP_START; i += 1) t.record('k', i);
  assert.equal(t.isFlapping('k'), true);
  assert.deepEqual(t.tick(FLAP_WINDOW_MS / 2), [], 'still inside the window');
  assert.deepEqual(t.tick(FLAP_WINDOW_MS + 100), ['k']);
  assert.equal(t.isFlapping('k'), false);
});

test('the tracker is bounded', () => {
  const t = new FlapTracker({ maxKeys: 3 });
  for (const k of ['a', 'b', 'c', 'd']) t.record(k, 0);
  assert.deepEqual([...t.keys.keys()], ['b', 'c', 'd']);
});

test('what notifies: new or worse problems that are neither acked nor silenced nor flapping', () => {
  const calm = { flapping: false, started: false };
  assert.equal(decideNotification({ previousClass: null, cls: 'critical', status: 'active', flap: calm }), 'problem');
  assert.equal(decideNotification({ previousClass: 'ok', cls: 'warning', status: 'active', flap: calm }), 'problem');
  assert.equal(decideNotification({ previousClass: 'warning', cls: 'critical', status: 'active', flap: calm }), 'problem');
  assert.equal(decideNotification({ previousClass: 'critical', cls: 'warning', status: 'active', flap: calm }), null, 'better is not news');
  assert.equal(decideNotification({ previousClass: 'critical', cls: 'ok', status: 'active', flap: calm }), null);
  assert.equal(decideNotification({ previousClass: 'ok', cls: 'critical', status: 'acked', flap: calm }), null);
  assert.equal(decideNotification({ previousClass: 'ok', cls: 'critical', status: 'silenced', flap: calm }), null);
  assert.equal(decideNotification({ previousClass: 'ok', cls: 'critical', status: 'active', flap: { flapping: true, started: true } }), 'flapping');
  assert.equal(decideNotification({ previousClass: 'ok', cls: 'critical', status: 'active', flap: { flapping: true, started: false } }), null);
});
