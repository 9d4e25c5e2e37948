// Property-style tests of the incrementally kept problems order (static/js/order.js LiveOrder):
// after any sequence of inserts, in-place updates and removals, its lists equal a full sort of
// the same entries, in every sort column and both directions, missing values last both ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveOrder, SORT_COLUMNS, layout, arrange } from '../../../static/js/order.js';
import { stateClass, keyOfPair, RANK } from '../../../static/js/model.js';

/** Deterministic generator (a failing seed reproduces). */
function rng(seed) {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

const HOSTS = ['web-1', 'web-2', 'web-10', 'Web-2', 'db', 'DB', 'élan', 'elan', '', undefined, null, 'a b', 'z'];
const SERVICES = ['cpu', 'disk', 'disk 10', 'disk 9', '', undefined, 'Mem'];
const STATES = ['critical', 'warning', 'expired', 'unknown', 'error', 'warn'];
const METRICS = [0, 1, -1, 2.5, 1e9, null, undefined, NaN, Infinity, 'x', 7];
const DESCRIPTIONS = ['', undefined, 'alpha', 'Alpha', 'beta 2', 'beta 10', 'ü'];
const STATUSES = ['active', 'active', 'active', 'acked', 'silenced'];

/** The order the README promises, written out independently of order.js: the column's value
 *  (missing values last in both directions), then worst state, longest-standing, host, service
 *  (missing names last), then the key. */
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const str = (v) => (v === undefined || v === null ? '' : String(v));
const names = (a, b) => (a === '' || b === '' ? (a === '') - (b === '') : collator.compare(a, b));
const metric = (e) => (typeof e.event.metric === 'number' && Number.isFinite(e.event.metric) ? e.event.metric : null);
function oracle({ column, desc }) {
  const sign = desc ? -1 : 1;
  const base = (a, b) => RANK[a.cls] - RANK[b.cls] || a.since - b.since
    || names(str(a.event.host), str(b.event.host)) || names(str(a.event.service), str(b.event.service))
    || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  return (a, b) => {
    let missA = false;
    let missB = false;
    let primary = 0;
    if (column === 'host' || column === 'service' || column === 'description') {
      const [x, y] = [str(a.event[column]), str(b.event[column])];
      [missA, missB] = [x === '', y === ''];
      if (!missA && !missB) primary = collator.compare(x, y);
    } else if (column === 'metric') {
      const [x, y] = [metric(a), metric(b)];
      [missA, missB] = [x === null, y === null];
      if (!missA && !missB) primary = x - y;
    } else if (column === 'age') primary = a.since - b.since;
    else primary = RANK[a.cls] - RANK[b.cls] || a.since - b.since;
    if (missA !== missB) return missA ? 1 : -1;
    return sign * primary || base(a, b);
  };
}

const keysOf = (list) => list.map((e) => e.key);

function run(seed, sort, steps) {
  const r = rng(seed);
  const pick = (xs) => xs[r(xs.length)];
  const entries = new Map(); // key → entry (mutated in place, as model.js does)
  const status = new Map();
  const live = new LiveOrder(sort);
  for (let i = 0; i < steps; i += 1) {
    const op = r(10);
    const host = pick(HOSTS);
    const service = pick(SERVICES);
    const key = keyOfPair(host, service);
    if (op < 2) {
      entries.delete(key);
      status.delete(key);
      live.delete(key);
    } else {
      let entry = entries.get(key);
      if (!entry) {
        entry = { key };
        entries.set(key, entry);
      }
      const state = pick(STATES);
      entry.event = { host, service, state, metric: pick(METRICS), description: pick(DESCRIPTIONS) };
      entry.cls = stateClass(state);
      entry.since = r(5) * 1000; // few distinct values: ties are the point
      entry.sinceExact = true;
      const st = op < 8 ? (status.get(key) ?? 'active') : pick(STATUSES);
      status.set(key, st);
      live.set(entry, st);
    }
    if (i % 7 === 0 || i === steps - 1) {
      assert.equal(live.size, entries.size, `seed ${seed} step ${i}: size`);
      const cmp = oracle(sort);
      for (const st of ['active', 'acked', 'silenced']) {
        const want = [...entries.values()].filter((e) => status.get(e.key) === st).sort(cmp);
        assert.deepEqual(keysOf(live.entries(st)), keysOf(want), `seed ${seed} step ${i} ${JSON.stringify(sort)} ${st}`);
      }
    }
  }
  return { live, entries, status };
}

test('after any sequence of inserts, updates and removes the order equals a full sort (every column, both directions)', () => {
  for (const column of SORT_COLUMNS) {
    for (const desc of [false, true]) {
      for (let seed = 1; seed <= 25; seed += 1) run(seed * 7919 + column.length, { column, desc }, 120);
    }
  }
});

test('entries without the column value stay last in both directions', () => {
  for (const column of ['host', 'service', 'description', 'metric']) {
    for (const desc of [false, true]) {
      const { live } = run(99, { column, desc }, 300);
      for (const st of ['active', 'acked', 'silenced']) {
        const list = live.entries(st);
        const missing = list.map((e) => (column === 'metric' ? metric(e) === null : str(e.event[column]) === ''));
        const firstMissing = missing.indexOf(true);
        if (firstMissing >= 0) assert.ok(missing.slice(firstMissing).every(Boolean), `${column} desc=${desc} ${st}: a value after a missing one`);
      }
    }
  }
});

test('rows arranged from the live order equal layout() of the same entries', () => {
  const { live, entries, status } = run(4242, { column: 'state', desc: false }, 400);
  const opts = { group: 'host', collapsed: new Set(['host=db']), limit: 17 };
  const full = layout([...entries.values()], { ...opts, status: (k) => status.get(k) });
  const incremental = arrange(live, opts);
  const flat = (r) => r.items.map((i) => (i.kind === 'entry' ? i.entry.key : `${i.kind}:${i.id}`));
  assert.deepEqual(flat(incremental), flat(full));
  assert.deepEqual(keysOf(incremental.order), keysOf(full.order));
  assert.equal(incremental.hidden, full.hidden);
});
