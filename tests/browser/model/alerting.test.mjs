// Unit tests of what the header's notification indicator says (static/js/alerting.js), with
// node --test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe } from '../../../static/js/alerting.js';

const NOW = Date.parse('2026-12-07T15:00:00.000Z');
const am = (over = {}) => ({
  url: 'http://am:9093', sent: 10, failed: 0, dropped: 0, queue: 0,
  last_success: '2026-12-07T14:59:48.000Z', last_failure: null, failing: 0, ...over,
});

test('off without --alertmanager (or an answer without Alertmanagers)', () => {
  assert.equal(describe({ enabled: false }, NOW).state, 'off');
  assert.equal(describe({ enabled: true, alertmanagers: [] }, NOW).state, 'off');
});

test('ok says how many fire and when the last POST went through', () => {
  const view = describe({ enabled: true, firing: 3, alertmanagers: [am()] }, NOW);
  assert.deepEqual([view.state, view.text], ['ok', 'alerts: 3 firing, sent 12s ago']);
  assert.match(view.title, /^http:\/\/am:9093: last success 12s ago, 10 sent, 0 failed, 0 waiting, 0 dropped$/);
});

test('nothing sent and nothing failed yet is waiting, not failing', () => {
  assert.equal(describe({ enabled: true, firing: 0, alertmanagers: [am({ sent: 0, last_success: null })] }, NOW).state, 'waiting');
});

test('one failing Alertmanager of two makes it red, with the reason and the last success', () => {
  const down = am({ url: 'http://am2:9093', failing: 4, failed: 7, last_error: 'cannot connect to am2:9093: refused', last_success: null });
  const view = describe({ enabled: true, firing: 1, alertmanagers: [am(), down] }, NOW);
  assert.equal(view.state, 'failing');
  assert.equal(view.text, 'alerts not delivered to 1 of 2 Alertmanagers (last success never): cannot connect to am2:9093: refused');
  assert.match(view.title, /am2:9093: last success never, 10 sent, 7 failed.*; last error: cannot connect/);
});
