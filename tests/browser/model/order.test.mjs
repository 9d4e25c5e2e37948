// Unit tests of sorting and grouping (static/js/order.js), with node --test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layout, parseSort, formatSort, parseGroup, groupLabel } from '../../../static/js/order.js';
import { stateClass, keyOfPair } from '../../../static/js/model.js';

const entry = (host, service, state, since, extra = {}) => ({
  key: keyOfPair(host, service), event: { host, service, state, ...extra }, cls: stateClass(state), since, sinceExact: true,
});
const names = (items) => items.filter((i) => i.kind === 'entry').map((i) => `${i.entry.event.host}/${i.entry.event.service}`);

const entries = [
  entry('web-10', 'cpu', 'warning', 100, { metric: 5 }),
  entry('web-2', 'disk', 'critical', 300, { metric: 1, team: 'infra', tags: ['prod'] }),
  entry('db-1', 'lag', 'critical', 200, { team: 'data', tags: ['prod', 'db'] }),
  entry('lb', 'tls', 'expired', 50, { metric: 9 }),
];

test('default order: worst first, then longest-standing', () => {
  assert.deepEqual(names(layout(entries).items), ['db-1/lag', 'web-2/disk', 'web-10/cpu', 'lb/tls']);
});

test('sorting by column, both directions; numbers sort naturally, missing values last', () => {
  assert.deepEqual(names(layout(entries, { sort: parseSort('host') }).items), ['db-1/lag', 'lb/tls', 'web-2/disk', 'web-10/cpu']);
  assert.deepEqual(names(layout(entries, { sort: parseSort('-host') }).items), ['web-10/cpu', 'web-2/disk', 'lb/tls', 'db-1/lag']);
  assert.deepEqual(names(layout(entries, { sort: parseSort('metric') }).items), ['web-2/disk', 'web-10/cpu', 'lb/tls', 'db-1/lag']);
  assert.deepEqual(names(layout(entries, { sort: parseSort('age') }).items), ['lb/tls', 'web-10/cpu', 'db-1/lag', 'web-2/disk']);
  assert.deepEqual(parseSort('bogus'), { column: 'state', desc: false });
  assert.equal(formatSort(parseSort('state')), '');
  assert.equal(formatSort(parseSort('-metric')), '-metric');
});

test('grouping: one row per group with its worst state and counts; collapsed groups hide their rows', () => {
  const byTeam = layout(entries, { group: 'attr:team' });
  const groups = byTeam.items.filter((i) => i.kind === 'group');
  assert.deepEqual(groups.map((g) => [g.label, g.worst, g.total]), [['data', 'critical', 1], ['infra', 'critical', 1], ['', 'warning', 2]]);
  assert.deepEqual(groups[2].counts, { critical: 0, warning: 1, expired: 1, other: 0 });
  const collapsed = layout(entries, { group: 'attr:team', collapsed: new Set(['attr:team=']) });
  assert.deepEqual(names(collapsed.items), ['db-1/lag', 'web-2/disk']);
  assert.equal(collapsed.order.length, 4, 'collapsed entries still count');
  assert.equal(groupLabel(entries[2], 'tags'), 'db, prod');
  assert.equal(parseGroup('host'), 'host');
  assert.equal(parseGroup('attr:'), '');
  assert.equal(parseGroup('nonsense'), '');
});

test('acked and silenced problems come after the others, each under a section row', () => {
  const status = (key) => (key === keyOfPair('db-1', 'lag') ? 'acked' : key === keyOfPair('lb', 'tls') ? 'silenced' : 'active');
  const { items } = layout(entries, { status });
  assert.deepEqual(items.map((i) => (i.kind === 'entry' ? i.entry.event.host : `[${i.id} ${i.count}]`)),
    ['web-2', 'web-10', '[acked 1]', 'db-1', '[silenced 1]', 'lb']);
});

test('the window limits rows, not the order', () => {
  const r = layout(entries, { limit: 2 });
  assert.equal(r.shown, 2);
  assert.equal(r.hidden, 2);
  assert.equal(r.order.length, 4);
});

test('missing values sort last in both directions (issue 24 item 1)', () => {
  const hostless = entry('', 'orphan', 'warning', 10, { metric: 3 });
  const list = [...entries, hostless];
  // Descending puts the largest first, and still the entries without a value last.
  assert.deepEqual(names(layout(list, { sort: parseSort('-metric') }).items), ['lb/tls', 'web-10/cpu', '/orphan', 'web-2/disk', 'db-1/lag']);
  assert.deepEqual(names(layout(list, { sort: parseSort('metric') }).items), ['web-2/disk', '/orphan', 'web-10/cpu', 'lb/tls', 'db-1/lag']);
  assert.deepEqual(names(layout(list, { sort: parseSort('-host') }).items).at(-1), '/orphan');
  assert.deepEqual(names(layout(list, { sort: parseSort('host') }).items).at(-1), '/orphan');
  const described = [entry('a', 'x', 'ok', 1, { description: 'alpha' }), entry('b', 'y', 'ok', 1), entry('c', 'z', 'ok', 1, { description: 'beta' })];
  assert.deepEqual(names(layout(described, { sort: parseSort('-description') }).items), ['c/z', 'a/x', 'b/y']);
});
