// Metric series for the graphs (the details panel's and the Graphs tab's): a `GET /api/series`
// answer, extended by the live `metrics` frames (and changes' events), turned into the columns a chart draws; and the
// details graph's state bands and action marks, from history. Pure: no DOM, no fetch, no clock
// (tests/browser/model/series.test.mjs runs it under node).
//
// /api/series answers {"from":F,"to":T,"step":S,"series":[{"host","service","points":[[t,min,max,avg,last,count],…]}]}
// with buckets of `step` ms starting at multiples of it (only buckets with data; the open one too).
// A live value folds into the bucket its event time falls in, so a graph left open keeps the
// server's bucketing: min, max and last are exact, avg is the mean of the values this page saw
// (the server's mean for the buckets it answered, the live values' mean for the ones after).

import { keyOf, keyOfPair, metricValues, parseTime, stateClass } from './model.js';

/** The time ranges a graph offers, in ms (the details panel's buttons and the Graphs tab's select). */
export const RANGES = /** @type {Record<string, number>} */ ({ '1h': 3_600_000, '6h': 21_600_000, '24h': 86_400_000, '7d': 604_800_000 });
export const DEFAULT_RANGE = '1h';
/** The Graphs tab draws at most this many series; past it, a note says how many were left out. */
export const MAX_GRAPH_SERIES = 50;
/** Points kept per series (a 7-day range at 1-minute buckets is 10,080): live buckets past it push out the oldest. */
export const MAX_POINTS = 20_000;

/**
 * @typedef {[number, number, number, number, number, number]} Point  [t ms, min, max, avg, last, count]
 * @typedef {{ key: string, host: string | null, service: string | null, label: string, points: Point[] }} Series
 * @typedef {{ from: number, to: number, step: number, series: Series[] }} SeriesAnswer
 */

/** A series' name in a legend: "host · service", absent parts named as such. */
export function seriesLabel(/** @type {unknown} */ host, /** @type {unknown} */ service) {
  return `${host == null ? '(no host)' : String(host)} · ${service == null ? '(no service)' : String(service)}`;
}

/** @param {unknown} p */
function validPoint(p) {
  return Array.isArray(p) && p.length >= 6 && p.slice(0, 6).every((v) => typeof v === 'number' && Number.isFinite(v));
}

/**
 * Checks an /api/series answer. A malformed point is dropped (the rest of its series stays);
 * a malformed answer is an error sentence the page shows.
 * @param {unknown} body
 * @returns {{ answer: SeriesAnswer, error: null } | { answer: null, error: string }}
 */
export function parseSeriesAnswer(body) {
  const b = /** @type {Record<string, any>} */ (body);
  if (!b || typeof b !== 'object' || !Array.isArray(b.series)) {
    return { answer: null, error: 'The server answered /api/series with something that is not a series list.' };
  }
  const numbers = [b.from, b.to, b.step];
  if (!numbers.every((v) => typeof v === 'number' && Number.isFinite(v)) || b.step <= 0 || b.to < b.from) {
    return { answer: null, error: 'The server answered /api/series without a valid from, to and step.' };
  }
  /** @type {Series[]} */
  const series = [];
  for (const s of b.series) {
    if (!s || typeof s !== 'object' || !Array.isArray(s.points)) continue;
    const host = s.host ?? null;
    const service = s.service ?? null;
    const points = /** @type {Point[]} */ (s.points.filter(validPoint).map((/** @type {number[]} */ p) => p.slice(0, 6)));
    points.sort((x, y) => x[0] - y[0]);
    series.push({ key: keyOfPair(host, service), host, service, label: seriesLabel(host, service), points });
  }
  return { answer: { from: b.from, to: b.to, step: b.step, series }, error: null };
}

/**
 * Index of the point with time `t` in `points` (sorted), or where it goes (negative: -(i + 1)).
 * Live buckets are nearly always the last one or one past it, so the search starts at the end.
 * @param {Point[]} points
 * @param {number} t
 */
function findBucket(points, t) {
  const n = points.length;
  if (n === 0 || points[n - 1][0] < t) return -(n + 1);
  if (points[n - 1][0] === t) return n - 1;
  let lo = 0;
  let hi = n - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = points[mid][0];
    if (m === t) return mid;
    if (m < t) lo = mid + 1;
    else hi = mid - 1;
  }
  return -(lo + 1);
}

/**
 * The sorted union of `times` (sorted, distinct) and the times of `points` (sorted). Returns
 * `times` itself when the points add none (the common case: series share their buckets).
 * @param {number[]} times
 * @param {Point[]} points
 */
function mergeTimes(times, points) {
  if (times.length === points.length && times.every((t, i) => t === points[i][0])) return times;
  /** @type {number[]} */
  const out = [];
  let i = 0;
  let j = 0;
  while (i < times.length || j < points.length) {
    const a = i < times.length ? times[i] : Infinity;
    const b = j < points.length ? points[j][0] : Infinity;
    if (a <= b) {
      out.push(a);
      i += 1;
      if (a === b) j += 1;
    } else {
      if (out.length === 0 || out[out.length - 1] !== b) out.push(b);
      j += 1;
    }
  }
  return out;
}

/**
 * The series of one graph: the stored answer, the live values folded in since, trimmed to the
 * graph's range. The page redraws from `columns()` at most once a frame.
 */
export class SeriesSet {
  /**
   * @param {SeriesAnswer} answer
   * @param {number} rangeMs  how far back the graph looks from "now"
   */
  constructor(answer, rangeMs) {
    this.step = answer.step;
    this.rangeMs = rangeMs;
    /** Live values at or before this time are in the answer already. */
    this.coveredTo = answer.to;
    this.from = answer.from;
    this.to = answer.to;
    /** @type {Map<string, Series>} */
    this.series = new Map(answer.series.map((s) => [s.key, { ...s, points: s.points.map((p) => /** @type {Point} */ ([...p])) }]));
  }

  /** Keys in the answer's order. */
  keys() {
    return [...this.series.keys()];
  }

  /**
   * Folds a live frame into the series it names (other keys are ignored): the values of a
   * `metrics` frame, or the event of a `change` (a value that came with a change of state is
   * in the change frame, not in a metrics frame). Returns whether anything changed.
   * @param {Record<string, any>} frame  {"type":"metrics",…} (see metricValues) or a change
   */
  foldFrame(frame) {
    if (frame?.type === 'change') {
      const t = frame.event && frame.removed !== true ? parseTime(frame.event.time) : null;
      return t !== null && this.fold(keyOf(frame.event), frame.event.metric, t);
    }
    if (!frame || frame.type !== 'metrics' || !Array.isArray(frame.values)) return false;
    const frameTime = typeof frame.time === 'number' && Number.isFinite(frame.time) ? frame.time : null;
    let changed = false;
    for (const v of metricValues(frame)) {
      const t = v.ms ?? frameTime;
      if (t === null) continue;
      changed = this.fold(keyOfPair(v.host, v.service), v.metric, t) || changed;
    }
    return changed;
  }

  /**
   * One live value of `key` at `t`. A null metric (the key's event has none) adds nothing.
   * @param {string} key
   * @param {unknown} metric
   * @param {number} t
   */
  fold(key, metric, t) {
    const s = this.series.get(key);
    if (!s || typeof metric !== 'number' || !Number.isFinite(metric) || t <= this.coveredTo) return false;
    const b = t - (((t % this.step) + this.step) % this.step);
    const i = findBucket(s.points, b);
    if (i >= 0) {
      const p = s.points[i];
      const count = p[5] + 1;
      s.points[i] = [b, Math.min(p[1], metric), Math.max(p[2], metric), (p[3] * p[5] + metric) / count, metric, count];
    } else {
      s.points.splice(-i - 1, 0, [b, metric, metric, metric, metric, 1]);
      if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    }
    if (t > this.to) this.to = t;
    return true;
  }

  /**
   * Drops buckets that ended before the range's start as of `now`, and moves the window.
   * @param {number} now
   */
  trim(now) {
    const start = now - this.rangeMs;
    for (const s of this.series.values()) {
      let drop = 0;
      while (drop < s.points.length && s.points[drop][0] + this.step <= start) drop += 1;
      if (drop) s.points.splice(0, drop);
    }
    this.from = start;
    if (now > this.to) this.to = now;
  }

  /**
   * The chart's columns, aligned on the union of every series' bucket times (a series without a
   * bucket at a time has null there: a gap). `pick` chooses the value (3 = avg, 1 = min, 2 = max).
   * @param {number[]} picks  point indexes, one column per series and pick
   * @param {string[]} [keys]  which series, in order (default: all)
   * @returns {{ x: number[], columns: (number | null)[][] }}  columns[k * picks.length + j]: series k, pick j
   */
  columns(picks, keys = this.keys()) {
    const chosen = keys.map((k) => this.series.get(k)).filter((s) => s !== undefined);
    // Each series is sorted: the union is a merge per series, and each column is filled by
    // walking its points and the union together (a redraw a second of 50 × 1,440 points).
    /** @type {number[]} */
    let x = [];
    for (const s of chosen) x = mergeTimes(x, s.points);
    /** @type {(number | null)[][]} */
    const columns = [];
    for (const s of chosen) {
      const cols = picks.map(() => /** @type {(number | null)[]} */ (new Array(x.length).fill(null)));
      let i = 0;
      for (const p of s.points) {
        while (x[i] < p[0]) i += 1;
        for (let j = 0; j < picks.length; j += 1) cols[j][i] = p[picks[j]];
      }
      columns.push(...cols);
    }
    return { x, columns };
  }
}

/**
 * @typedef {{ from: number, to: number, state: string, cls: string }} Band
 */

/**
 * The key's state over [from, to] as bands, from its history (change records; other records and
 * other keys are skipped). Before the first change the key was in that change's previous state;
 * with no change in the history at all it was in `current` (null: no band). A removal ends the
 * band (nothing is drawn until the key comes back). Times are the events' own: one earlier than
 * the change before it (a sender's clock) is taken as that change's time.
 * @param {Record<string, any>[]} records  history records, any order
 * @param {string} key
 * @param {number} from
 * @param {number} to
 * @param {string | null} [current]  the key's state now
 * @returns {Band[]}
 */
export function stateBands(records, key, from, to, current = null) {
  const mine = records
    .filter((r) => r && r.type === 'change' && r.event && keyOf(r.event) === key && parseTime(r.event.time) !== null)
    .sort((a, b) => a.seq - b.seq);
  /** @type {Band[]} */
  const bands = [];
  /** @param {string | null} state @param {number} a @param {number} b */
  const push = (state, a, b) => {
    const lo = Math.max(a, from);
    const hi = Math.min(b, to);
    if (state == null || hi <= lo) return;
    const last = bands.at(-1);
    if (last && last.state === state && last.to === lo) last.to = hi;
    else bands.push({ from: lo, to: hi, state, cls: stateClass(state) });
  };
  if (mine.length === 0) {
    push(current, from, to);
    return bands;
  }
  /** @type {string | null} */
  let state = typeof mine[0].previous_state === 'string' ? mine[0].previous_state : null;
  let start = -Infinity;
  for (const c of mine) {
    const t = Math.max(/** @type {number} */ (parseTime(c.event.time)), start);
    push(state, start, t);
    state = c.removed === true ? null : (typeof c.event.state === 'string' ? c.event.state : null);
    start = t;
  }
  push(state, start, to);
  return bands;
}

/**
 * @typedef {{ at: number, kind: 'ack' | 'unack' | 'silence' | 'unsilence', text: string, approx: boolean }} Mark
 */

/** @param {unknown} pairs  [[host, service]…] @param {string} key */
const listsKey = (pairs, key) => Array.isArray(pairs) && pairs.some((p) => Array.isArray(p) && keyOfPair(p[0], p[1]) === key);

/**
 * Whether a history record or live frame is about `key`: its change, an ack or unack of it, a
 * silence that started or stopped silencing it.
 * @param {Record<string, any>} r
 * @param {string} key
 */
export function concernsKey(r, key) {
  if (!r) return false;
  if (r.type === 'change') return Boolean(r.event) && keyOf(r.event) === key;
  if (r.type === 'ack') return Boolean(r.ack) && keyOf(r.ack) === key;
  if (r.type === 'unack') return keyOf(r) === key;
  if (r.type === 'silence') return listsKey(r.silenced, key) || listsKey(r.unsilenced, key);
  return false;
}

/**
 * The operator actions on `key` in its history, as marks on its graph: acks and their ends,
 * silences that started or stopped silencing it. Records that carry no time of their own (an
 * unack, a silence that started or ended on the server's tick) take the best time history gives:
 * the resolving change for an ack ended by recovery, the ack's expiry for an expired one, the
 * time the page received it live (`received`, ms, set by the page), else the time of the record
 * before it (`approx`: the action happened at or after it).
 * @param {Record<string, any>[]} records  history records, any order
 * @param {string} key
 * @returns {Mark[]}
 */
export function actionMarks(records, key) {
  const sorted = records.filter((r) => r && typeof r.seq === 'number').sort((a, b) => a.seq - b.seq);
  /** @type {Mark[]} */
  const marks = [];
  /** @type {number | null} */
  let lastTime = null;
  /** @type {number | null} */
  let keyChangeTime = null;
  /** @type {number | null} */
  let ackExpires = null;
  /** @type {number | null} */
  let received = null;
  /** @param {Mark['kind']} kind @param {number | null} own @param {string} text */
  const mark = (kind, own, text) => {
    const exact = own ?? received;
    const at = exact ?? lastTime;
    if (at !== null) marks.push({ at, kind, text, approx: exact === null });
  };
  for (const r of sorted) {
    received = typeof r.received === 'number' && Number.isFinite(r.received) ? r.received : null;
    if (r.type === 'change' && r.event) {
      const t = parseTime(r.event.time);
      if (t !== null) lastTime = t;
      if (t !== null && keyOf(r.event) === key) keyChangeTime = t;
    } else if (r.type === 'ack' && r.ack && keyOf(r.ack) === key) {
      const at = parseTime(r.ack.at);
      ackExpires = parseTime(r.ack.expires_at);
      mark('ack', at, `acknowledged by ${r.ack.by || 'someone'}${r.ack.note ? `: ${r.ack.note}` : ''}`);
      if (at !== null) lastTime = at;
    } else if (r.type === 'unack' && keyOf(r) === key) {
      const own = r.reason === 'resolved' ? keyChangeTime : r.reason === 'expired' ? ackExpires : null;
      mark('unack', own, r.reason === 'deleted' ? `acknowledgement removed by ${r.by || 'someone'}` : `acknowledgement ended (${r.reason ?? 'ended'})`);
    } else if (r.type === 'silence') {
      const s = r.silence;
      const own = s && (r.change === 'created' || r.change === 'started') ? parseTime(s.starts_at) : null;
      if (listsKey(r.silenced, key)) mark('silence', own, `silenced${s?.query ? ` by ${s.query}` : ''}${s?.comment ? ` (${s.comment})` : ''}`);
      if (listsKey(r.unsilenced, key)) mark('unsilence', null, `silence ${r.change ?? 'ended'}`);
    }
  }
  return marks;
}
