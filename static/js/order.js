// Display order of the problems table: sorting by column, grouping by host / service / state /
// tags / an attribute, and the acked and silenced problems set apart. Pure (no DOM), so
// `node --test` checks it; the problems view only turns its items into rows.

import { RANK, CLASS_ORDER } from './model.js';

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {(a: Entry, b: Entry) => number} Cmp */

export const SORT_COLUMNS = ['state', 'host', 'service', 'metric', 'description', 'age'];
export const GROUP_FIELDS = ['host', 'service', 'state', 'tags'];

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const text = (/** @type {unknown} */ v) => (v === undefined || v === null ? '' : String(v));
const cmpText = (/** @type {string} */ a, /** @type {string} */ b) => {
  // Missing names last, whatever the direction of the rest.
  if (a === '' || b === '') return Number(a === '') - Number(b === '');
  return collator.compare(a, b);
};
const cmpKey = (/** @type {Entry} */ a, /** @type {Entry} */ b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/**
 * The default order: worst state first, then longest-standing, then by name.
 * @param {Entry} a
 * @param {Entry} b
 */
export function compareDefault(a, b) {
  return (RANK[a.cls] - RANK[b.cls])
    || (a.since - b.since)
    || cmpText(text(a.event.host), text(b.event.host))
    || cmpText(text(a.event.service), text(b.event.service))
    || cmpKey(a, b);
}

/**
 * "state", "-host", …: a column and a direction. Unknown columns fall back to the default.
 * Ascending means the natural reading: worst state first, A→Z, smallest metric first, longest
 * in state first.
 * @param {unknown} s
 */
export function parseSort(s) {
  const raw = String(s ?? '');
  const desc = raw.startsWith('-');
  const column = desc ? raw.slice(1) : raw;
  return SORT_COLUMNS.includes(column) ? { column, desc } : { column: 'state', desc: false };
}

export const formatSort = (/** @type {{ column: string, desc: boolean }} */ { column, desc }) => (column === 'state' && !desc ? '' : `${desc ? '-' : ''}${column}`);

/** @param {Entry} e */
function metricOf(e) {
  const m = e.event.metric;
  return typeof m === 'number' && Number.isFinite(m) ? m : null;
}

/** Entries without a value in a column: they go last whatever the direction (`missingLast`). */
const missingText = (/** @type {string} */ field) => (/** @type {Entry} */ e) => text(e.event[field]) === '';
const missingLast = (/** @type {(e: Entry) => boolean} */ isMissing) => /** @type {Cmp} */ ((a, b) => Number(isMissing(a)) - Number(isMissing(b)));

/** A comparator for a sort ({column, desc}); ties fall back to the default order. Entries
 *  without the column's value come last in both directions: the direction orders values, and
 * @param {{ column: string, desc: boolean }} sort
 * @returns {Cmp}
 *  "no metric" is not a value smaller than every other. */
export function comparator({ column, desc }) {
  const sign = desc ? -1 : 1;
  /** @type {Cmp} */
  let primary;
  /** @type {Cmp} */
  let missing = () => 0;
  switch (column) {
    case 'host':
    case 'service':
    case 'description':
      primary = (a, b) => collator.compare(text(a.event[column]), text(b.event[column]));
      missing = missingLast(missingText(column));
      break;
    case 'age': primary = (a, b) => a.since - b.since; break;
    case 'metric':
      primary = (a, b) => Number(metricOf(a)) - Number(metricOf(b)); // both numbers: `missing` sorted the rest
      missing = missingLast((e) => metricOf(e) === null);
      break;
    default: primary = (a, b) => RANK[a.cls] - RANK[b.cls] || a.since - b.since;
  }
  return (a, b) => missing(a, b) || sign * primary(a, b) || compareDefault(a, b);
}

/**
 * "host", "service", "state", "tags" or "attr:NAME"; anything else is no grouping ('').
 * @param {unknown} g
 */
export function parseGroup(g) {
  const s = String(g ?? '');
  if (GROUP_FIELDS.includes(s)) return s;
  if (s.startsWith('attr:') && s.length > 5) return s;
  return '';
}

/**
 * The group an entry belongs to, as a label ('' stands for "none").
 * @param {Entry} entry
 * @param {string} group
 */
export function groupLabel(entry, group) {
  const ev = entry.event;
  if (group === 'host') return text(ev.host);
  if (group === 'service') return text(ev.service);
  if (group === 'state') return entry.cls;
  if (group === 'tags') return Array.isArray(ev.tags) && ev.tags.length ? [...ev.tags].map(String).sort().join(', ') : '';
  if (group.startsWith('attr:')) {
    const v = ev[group.slice(5)];
    return v === undefined || v === null || typeof v === 'object' ? '' : String(v);
  }
  return '';
}

/**
 * The rows of the problems table, in order:
 *   { kind: 'group', id, label, worst, counts: {critical…}, total, collapsed }
 *   { kind: 'section', id: 'acked' | 'silenced', count }
 *   { kind: 'entry', entry, status }
 * Only the first `limit` entry rows are listed (a meltdown must not become 20,000 rows); `order`
 * holds every problem in display order, `hidden` how many entries the limit left out.
 * Active problems come first (grouped when asked); acked, then silenced ones follow, each under a
 * section row, in the same sort.
 * @param {Iterable<any>} entries  the Model's entries
 * @param {{ sort?: { column: string, desc: boolean }, group?: string, collapsed?: Set<string>, limit?: number,
 *   status?: (key: string) => string }} [options]
 */
export function layout(entries, { sort = { column: 'state', desc: false }, group = '', collapsed = new Set(), limit = Infinity, status = () => 'active' } = {}) {
  const cmp = comparator(sort);
  /** @type {Record<string, any[]>} */
  const buckets = { active: [], acked: [], silenced: [] };
  for (const e of entries) buckets[status(e.key)].push(e);
  for (const list of Object.values(buckets)) list.sort(cmp);

  const items = [];
  const order = [];
  let shown = 0;
  let hidden = 0;
  const pushEntry = (/** @type {Entry} */ entry, /** @type {string} */ st) => {
    order.push(entry);
    if (shown < limit) {
      items.push({ kind: 'entry', entry, status: st });
      shown += 1;
    } else hidden += 1;
  };

  if (group) {
    const groups = new Map();
    for (const e of buckets.active) {
      const label = groupLabel(e, group);
      let g = groups.get(label);
      if (!g) {
        g = { kind: 'group', id: `${group}=${label}`, label, worst: 'ok', counts: { critical: 0, warning: 0, expired: 0, other: 0 }, total: 0, entries: [] };
        groups.set(label, g);
      }
      g.entries.push(e);
      g.counts[e.cls] += 1;
      g.total += 1;
      if (RANK[e.cls] < RANK[g.worst]) g.worst = e.cls;
    }
    const sorted = [...groups.values()].sort((a, b) => RANK[a.worst] - RANK[b.worst]
      || b.counts[b.worst] - a.counts[a.worst] // same worst class: more of it first
      || b.total - a.total
      || cmpText(a.label, b.label));
    for (const g of sorted) {
      g.collapsed = collapsed.has(g.id);
      const { entries: members, ...head } = g;
      items.push(head);
      for (const e of members) {
        if (g.collapsed) order.push(e);
        else pushEntry(e, 'active');
      }
    }
  } else {
    for (const e of buckets.active) pushEntry(e, 'active');
  }
  for (const st of ['acked', 'silenced']) {
    if (!buckets[st].length) continue;
    items.push({ kind: 'section', id: st, count: buckets[st].length });
    for (const e of buckets[st]) pushEntry(e, st);
  }
  return { items, order, shown, hidden, total: order.length };
}

/**
 * Counts by state class of a list of entries (for a group's summary).
 * @param {Iterable<Entry>} entries
 */
export function countByClass(entries) {
  const c = Object.fromEntries(CLASS_ORDER.map((k) => [k, 0]));
  for (const e of entries) c[e.cls] += 1;
  return c;
}
