// Display order of the problems table: sorting by column, grouping by host / service / state /
// tags / an attribute, and the acked and silenced problems set apart. Pure (no DOM), so
// `node --test` checks it; the problems view only turns its items into rows.

import { RANK, CLASS_ORDER } from './model.js';

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {(a: Entry, b: Entry) => number} Cmp */
/**
 * One entry as a sort placed it (see sortRecord).
 * @typedef {{ entry: Entry, key: string, rank: number, since: number, host: string, service: string,
 *   value: string | number | null, missing: boolean }} SortRecord
 */
/** @typedef {(a: SortRecord, b: SortRecord) => number} RecCmp */
/** @typedef {{ column: string, desc: boolean }} Sort */
/** @typedef {'active' | 'acked' | 'silenced'} Status */

export const SORT_COLUMNS = ['state', 'host', 'service', 'metric', 'description', 'age'];
export const GROUP_FIELDS = ['host', 'service', 'state', 'tags'];

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const text = (/** @type {unknown} */ v) => (v === undefined || v === null ? '' : String(v));
const cmpText = (/** @type {string} */ a, /** @type {string} */ b) => {
  // Missing names last, whatever the direction of the rest.
  if (a === '' || b === '') return Number(a === '') - Number(b === '');
  return collator.compare(a, b);
};
const cmpKey = (/** @type {{ key: string }} */ a, /** @type {{ key: string }} */ b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

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

/**
 * What a sort compares of one entry, read once when the entry takes its place: the comparisons
 * of a binary search then touch plain fields, and the record keeps the values the entry was
 * placed by, so it can be found again after the model has changed the entry in place.
 * `value` is the sort column's value ('' / null when missing), `missing` whether it is missing.
 * @param {Entry} entry
 * @param {string} column
 * @returns {SortRecord}
 */
function sortRecord(entry, column) {
  const ev = entry.event;
  /** @type {SortRecord} */
  const rec = {
    entry,
    key: entry.key,
    rank: RANK[entry.cls],
    since: entry.since,
    host: text(ev.host),
    service: text(ev.service),
    value: null,
    missing: false,
  };
  switch (column) {
    case 'host': rec.value = rec.host; rec.missing = rec.value === ''; break;
    case 'service': rec.value = rec.service; rec.missing = rec.value === ''; break;
    case 'description': rec.value = text(ev.description); rec.missing = rec.value === ''; break;
    case 'metric': rec.value = metricOf(entry); rec.missing = rec.value === null; break;
    default: break;
  }
  return rec;
}

/**
 * The default order on records: worst state first, then longest-standing, then by name.
 * @param {SortRecord} a
 * @param {SortRecord} b
 */
function compareDefaultRec(a, b) {
  return (a.rank - b.rank)
    || (a.since - b.since)
    || cmpText(a.host, b.host)
    || cmpText(a.service, b.service)
    || cmpKey(a, b);
}

/**
 * The record comparator of a sort: a total order (the key breaks every tie).
 * @param {Sort} sort
 * @returns {RecCmp}
 */
function recordComparator({ column, desc }) {
  const sign = desc ? -1 : 1;
  /** @type {RecCmp} */
  let primary;
  switch (column) {
    case 'host':
    case 'service':
    case 'description':
      // Text columns: sortRecord put a string there.
      primary = (a, b) => collator.compare(/** @type {string} */ (a.value), /** @type {string} */ (b.value));
      break;
    case 'age': primary = (a, b) => a.since - b.since; break;
    // Numbers, or null on both sides (one missing is decided before `primary`; null - null is 0).
    case 'metric': primary = (a, b) => /** @type {number} */ (a.value) - /** @type {number} */ (b.value); break;
    default: primary = (a, b) => a.rank - b.rank || a.since - b.since;
  }
  // Entries without the column's value come last in both directions: the direction orders
  // values, and "no metric" is not a value smaller than every other.
  return (a, b) => (Number(a.missing) - Number(b.missing)) || sign * primary(a, b) || compareDefaultRec(a, b);
}

/**
 * A comparator of entries for a sort ({column, desc}); ties fall back to the default order. Entries
 * without the column's value come last in both directions.
 * @param {Sort} sort
 * @returns {Cmp}
 */
export function comparator(sort) {
  const cmp = recordComparator(sort);
  return (a, b) => cmp(sortRecord(a, sort.column), sortRecord(b, sort.column));
}

/** @type {readonly Status[]} */
const STATUSES = ['active', 'acked', 'silenced'];
/** A known status, or 'active' for anything else (as the model's status() may answer). */
const statusOf = (/** @type {string} */ s) => /** @type {Status} */ (STATUSES.includes(/** @type {Status} */ (s)) ? s : 'active');

/**
 * First index in a sorted `list` whose record is not before `rec`.
 * @param {SortRecord[]} list
 * @param {SortRecord} rec
 * @param {RecCmp} cmp
 */
function lowerBound(list, rec, cmp) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(list[mid], rec) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The problems in display order, kept incrementally: a change moves one entry (a binary search
 * out, a binary search in) instead of re-sorting every entry each frame, which is what a storm
 * of 1,000 changes/s over 10,000 problems cannot afford. Three sorted lists, one per status
 * (active, acked, silenced), of sort records. After any sequence of `set` / `delete` the lists
 * equal a full sort of the same entries with `comparator(sort)` (tests/browser/model/).
 */
export class LiveOrder {
  /** @param {Sort} [sort] */
  constructor(sort = { column: 'state', desc: false }) {
    this.sort = sort;
    this.cmp = recordComparator(sort);
    /** status → sorted records */
    /** @type {Record<Status, SortRecord[]>} */
    this.buckets = { active: [], acked: [], silenced: [] };
    /** key → { rec, status } where it stands now */
    /** @type {Map<string, { rec: SortRecord, status: Status }>} */
    this.placed = new Map();
  }

  get size() { return this.placed.size; }

  /**
   * Takes the entry out of the order (no-op when it is not in it).
   * @param {string} key
   */
  delete(key) {
    const at = this.placed.get(key);
    if (!at) return;
    const list = this.buckets[at.status];
    const i = lowerBound(list, at.rec, this.cmp);
    // The record is found by the values it was placed with; the fallback scan only guards
    // against a comparator that is not a total order (it is one: the key breaks ties).
    const j = list[i] === at.rec ? i : list.indexOf(at.rec);
    if (j >= 0) list.splice(j, 1);
    this.placed.delete(key);
  }

  /**
   * Puts a problem entry at its place for its current values and `status`.
   * @param {Entry} entry
   * @param {string} [status]
   */
  set(entry, status = 'active') {
    this.delete(entry.key);
    const rec = sortRecord(entry, this.sort.column);
    const s = statusOf(status);
    const list = this.buckets[s];
    list.splice(lowerBound(list, rec, this.cmp), 0, rec);
    this.placed.set(entry.key, { rec, status: s });
  }

  /**
   * Replaces everything with `entries` (one full sort).
   * @param {Iterable<Entry>} entries
   * @param {(key: string) => string} [status]
   */
  reset(entries, status = () => 'active') {
    this.placed.clear();
    for (const st of STATUSES) this.buckets[st] = [];
    for (const entry of entries) {
      const rec = sortRecord(entry, this.sort.column);
      const s = statusOf(status(entry.key));
      this.buckets[s].push(rec);
      this.placed.set(entry.key, { rec, status: s });
    }
    for (const st of STATUSES) this.buckets[st].sort(this.cmp);
  }

  /**
   * Entries of one status, in order.
   * @param {Status} status
   * @returns {Entry[]}
   */
  entries(status) { return this.buckets[status].map((r) => r.entry); }
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
  const live = new LiveOrder(sort);
  live.reset(entries, status);
  return arrange(live, { group, collapsed, limit });
}

/**
 * layout's rows from an order kept by LiveOrder (sorted already): the grouping and the window.
 * @param {LiveOrder} live
 * @param {{ group?: string, collapsed?: Set<string>, limit?: number }} [options]
 */
export function arrange(live, { group = '', collapsed = new Set(), limit = Infinity } = {}) {
  /** @type {Record<string, Entry[]>} */
  const buckets = { active: live.entries('active'), acked: live.entries('acked'), silenced: live.entries('silenced') };

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
