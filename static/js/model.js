// The dashboard's model: every (host, service) the server told us about, the operator actions on
// them (acks, silences), and the counts. Pure: no DOM, no timers, no network; `now` is passed in.
// The page's views read it; tests/browser/model/*.test.mjs test it with `node --test`.
//
// entry = { key, event, cls, since, sinceExact }
//   since      ms when the current state began (change time), or a lower bound from a snapshot
//   sinceExact false when only a snapshot told us about it (the state began at or before `since`)

/**
 * One (host, service) the server told us about (see above).
 * @typedef {{ key: string, event: Record<string, any>, cls: string, since: number, sinceExact: boolean }} Entry
 */

/**
 * Riemann's states collapse into five display classes, in order of severity.
 * @param {unknown} state
 */
export function stateClass(state) {
  const s = String(state ?? '').trim().toLowerCase();
  if (s === 'ok') return 'ok';
  if (s === 'critical' || s === 'failure' || s === 'fatal' || s === 'error') return 'critical';
  if (s === 'warning' || s === 'warn') return 'warning';
  if (s === 'expired') return 'expired';
  return 'other';
}
/** @type {Record<string, number>} */
export const RANK = { critical: 0, warning: 1, expired: 2, other: 3, ok: 4 };
export const CLASS_ORDER = ['critical', 'warning', 'expired', 'other', 'ok'];

/** Fields of Riemann's JSON event form; every other top-level key is a custom attribute. */
export const STANDARD = new Set(['host', 'service', 'state', 'description', 'metric', 'tags', 'time', 'ttl']);

export const keyOfPair = (/** @type {unknown} */ host, /** @type {unknown} */ service) => JSON.stringify([host ?? null, service ?? null]);
export const keyOf = (/** @type {Record<string, any>} */ ev) => keyOfPair(ev.host, ev.service);
export const splitKey = (/** @type {string} */ key) => JSON.parse(key);

/**
 * Event time in ms since the epoch, or null. Accepts ISO strings and unix seconds.
 * @param {unknown} t
 */
export function parseTime(t) {
  if (typeof t === 'number' && Number.isFinite(t)) return t * 1000;
  if (typeof t === 'string') {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

/**
 * One key's live value, decoded from a `metrics` frame (see metricValues).
 * @typedef {{ host: string | null, service: string | null, metric: unknown, description: unknown, time: string | null, ms: number | null }} LiveValue
 */

/**
 * The values of a `metrics` frame, decoded from its compact shape
 * {"time":T,"hosts":[H…],"values":[[host, service, metric, description, age]…]}: `host` indexes
 * `hosts` (null: the event has none), the value's time is T − age ms. `time` comes back as an
 * event's (ISO-8601) and `ms` as a number, both null when unknown; malformed values are skipped.
 * @param {Record<string, any>} frame
 * @returns {LiveValue[]}
 */
export function metricValues(frame) {
  if (!frame || !Array.isArray(frame.values)) return [];
  const hosts = Array.isArray(frame.hosts) ? frame.hosts : [];
  const time = typeof frame.time === 'number' && Number.isFinite(frame.time) ? frame.time : null;
  /** @type {LiveValue[]} */
  const out = [];
  for (const value of frame.values) {
    if (!Array.isArray(value)) continue;
    const [h, service, metric, description, age] = value;
    const host = typeof h === 'number' && typeof hosts[h] === 'string' ? hosts[h] : null;
    const date = time !== null && typeof age === 'number' ? new Date(time - age) : null;
    const ms = date && !Number.isNaN(date.getTime()) ? date.getTime() : null;
    out.push({
      host,
      service: typeof service === 'string' ? service : null,
      metric: metric ?? null,
      description: description ?? null,
      time: ms === null || date === null ? null : date.toISOString(),
      ms,
    });
  }
  return out;
}

/**
 * Custom attributes of an event: [name, value] for scalar non-standard fields.
 * @param {Record<string, unknown>} ev
 * @returns {[string, unknown][]}
 */
export function attributesOf(ev) {
  /** @type {[string, unknown][]} */
  const out = [];
  for (const [k, v] of Object.entries(ev)) {
    if (STANDARD.has(k) || v === null || v === undefined || typeof v === 'object') continue;
    out.push([k, v]);
  }
  return out;
}

const validEvent = (/** @type {any} */ ev) => ev && typeof ev === 'object' && ev.state !== undefined && ev.state !== null && ev.state !== '';

export class Model {
  constructor() {
    /** key → entry */
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
    /** @type {Record<string, number>} */
    this.counts = { critical: 0, warning: 0, expired: 0, other: 0, ok: 0 };
    /** The last seq applied (snapshot or change), or null. */
    /** @type {number | null} */
    this.seq = null;
    this.haveSnapshot = false;
    /** key → ACK ({host, service, note, by, at, expires_at}) */
    /** @type {Map<string, Record<string, any>>} */
    this.acks = new Map();
    /** SILENCE list, as the server last sent it. */
    /** @type {Record<string, any>[]} */
    this.silences = [];
    /** Keys an active silence matches now. */
    /** @type {Set<string>} */
    this.silenced = new Set();
    /** Bumped on every mutation, so views can tell whether to re-render. */
    this.version = 0;
    /** Keys whose entry, ack or silenced flag changed since the last takeTouched(), so a view
     *  can keep its order incrementally; `touchedAll` when everything may have (a snapshot, or
     *  more keys than entries: the set stays bounded). */
    /** @type {Set<string>} */
    this.touched = new Set();
    this.touchedAll = true;
    /** Keys whose metric or description a `metrics` frame moved since the last takeMoved(): a
     *  view sorted by neither has nothing to re-sort for them (bounded by the entries). */
    /** @type {Set<string>} */
    this.moved = new Set();
  }

  /** @param {string} key */
  touch(key) {
    if (this.touchedAll) return;
    this.touched.add(key);
    if (this.touched.size > Math.max(1024, this.entries.size)) {
      this.touchedAll = true;
      this.touched.clear();
    }
  }

  /** What changed since the last call: { all, keys } (then forgotten). One reader: the
   *  problems view. */
  /** @returns {{ all: boolean, keys: Set<string> }} */
  takeTouched() {
    const out = { all: this.touchedAll, keys: this.touched };
    this.touchedAll = false;
    this.touched = new Set();
    return out;
  }

  /**
   * Replaces everything. Returns { changed: keys whose state differs, removed: keys gone, problems }.
   * @param {Record<string, any>} msg
   * @param {number} now
   */
  applySnapshot(msg, now) {
    const events = Array.isArray(msg.events) ? msg.events : [];
    const seen = new Set();
    const changed = new Set();
    for (const k of CLASS_ORDER) this.counts[k] = 0;
    // A snapshot says when each service last reported, not when its state began (the server
    // does not track that): a start already known for the same state is kept, otherwise the
    // event's time is a lower bound until history (app.js resolveSince) pins it.
    events.forEach((/** @type {any} */ ev) => {
      if (!validEvent(ev)) return;
      const key = keyOf(ev);
      seen.add(key);
      const prev = this.entries.get(key);
      const evTime = parseTime(ev.time) ?? now;
      let began = evTime;
      let exact = false;
      if (prev && prev.event.state === ev.state && prev.since <= evTime) {
        began = prev.since;
        exact = prev.sinceExact;
      }
      if (prev && prev.event.state !== ev.state) changed.add(key);
      const entry = prev ?? /** @type {Entry} */ ({ key });
      entry.event = ev;
      entry.cls = stateClass(ev.state);
      entry.since = began;
      entry.sinceExact = exact;
      this.entries.set(key, entry);
      this.counts[entry.cls] += 1;
    });
    const removed = [];
    for (const key of this.entries.keys()) {
      if (!seen.has(key)) removed.push(key);
    }
    for (const key of removed) this.entries.delete(key);
    if (Array.isArray(msg.acks)) {
      this.acks.clear();
      for (const ack of msg.acks) this.setAck(ack);
    }
    if (Array.isArray(msg.silences)) this.silences = msg.silences.filter((/** @type {unknown} */ s) => s && typeof s === 'object');
    if (Array.isArray(msg.silenced)) this.silenced = keySet(msg.silenced);
    if (typeof msg.seq === 'number') this.seq = msg.seq;
    this.haveSnapshot = true;
    this.version += 1;
    this.touchedAll = true;
    this.touched.clear();
    this.moved.clear();
    return { changed, removed, problems: this.problemCount() };
  }

  /**
   * Whether a frame with this seq is new (and records it); frames without a seq always are.
   * @param {Record<string, any>} msg
   */
  acceptSeq(msg) {
    if (typeof msg.seq !== 'number') return true;
    if (this.seq !== null && msg.seq <= this.seq) return false; // resume overlap
    this.seq = msg.seq;
    return true;
  }

  /**
   * One change frame. Returns null when it is a duplicate or malformed, else
   * { key, entry, previousState, previousClass, removed, clearedBy }.
   * @param {Record<string, any>} msg
   * @param {number} now
   */
  applyChange(msg, now) {
    const ev = msg.event;
    if (!validEvent(ev)) return null;
    if (!this.acceptSeq(msg)) return null;
    const key = keyOf(ev);
    let entry = this.entries.get(key);
    const previousState = msg.previous_state ?? entry?.event.state ?? null;
    const previousClass = entry ? entry.cls : null;
    this.version += 1;
    this.touch(key);
    if (msg.removed === true) {
      if (entry) {
        this.counts[entry.cls] -= 1;
        this.entries.delete(key);
      }
      this.acks.delete(key);
      this.silenced.delete(key);
      return {
        key, entry: null, previousState, previousClass, removed: true,
        clearedBy: typeof msg.cleared_by === 'string' ? msg.cleared_by : null,
      };
    }
    if (entry) this.counts[entry.cls] -= 1;
    else {
      entry = /** @type {Entry} */ ({ key });
      this.entries.set(key, entry);
    }
    entry.event = ev;
    entry.cls = stateClass(ev.state);
    entry.since = parseTime(ev.time) ?? now;
    entry.sinceExact = true;
    this.counts[entry.cls] += 1;
    if (msg.silenced === true) this.silenced.add(key);
    else this.silenced.delete(key);
    return { key, entry, previousState, previousClass, removed: false, clearedBy: null };
  }

  /**
   * {"type":"metrics","time","hosts","values":[[host, service, metric, description, age]…]} (see
   * metricValues): the live values of services whose metric or description moved without a
   * change of state. Not a
   * change: `seq` stays as it is, the state and its start too. A value of a service the model
   * does not hold (outside the view) is skipped, as is one older than the event it holds.
   * Each updated entry gets a new event object, so a view comparing events by identity redraws
   * that entry only. Returns the updated entries.
   * @param {Record<string, any>} msg
   * @returns {Entry[]}
   */
  applyMetrics(msg) {
    /** @type {Entry[]} */
    const updated = [];
    for (const value of metricValues(msg)) {
      const key = keyOfPair(value.host, value.service);
      const entry = this.entries.get(key);
      if (!entry) continue;
      const at = value.ms;
      const held = parseTime(entry.event.time);
      if (at !== null && held !== null && at < held) continue;
      const ev = { ...entry.event };
      // `null` is absent, as in an event.
      if (value.metric === null || value.metric === undefined) delete ev.metric;
      else ev.metric = value.metric;
      if (value.description === null || value.description === undefined) delete ev.description;
      else ev.description = value.description;
      if (at !== null) ev.time = value.time;
      entry.event = ev;
      this.moved.add(key);
      updated.push(entry);
    }
    if (updated.length) this.version += 1;
    return updated;
  }

  /** Keys a `metrics` frame moved since the last call (then forgotten). One reader: the
   *  problems view. */
  takeMoved() {
    const keys = this.moved;
    this.moved = new Set();
    return keys;
  }

  /** @param {any} ack */
  setAck(ack) {
    if (!ack || typeof ack !== 'object') return null;
    const key = keyOfPair(ack.host, ack.service);
    this.acks.set(key, ack);
    this.touch(key);
    return key;
  }

  /**
   * {"type":"ack",…}: returns the key, or null for a duplicate.
   * @param {Record<string, any>} msg
   */
  applyAck(msg) {
    if (!this.acceptSeq(msg)) return null;
    this.version += 1;
    return this.setAck(msg.ack);
  }

  /**
   * {"type":"unack",…}: returns the key, or null for a duplicate.
   * @param {Record<string, any>} msg
   */
  applyUnack(msg) {
    if (!this.acceptSeq(msg)) return null;
    this.version += 1;
    const key = keyOfPair(msg.host, msg.service);
    this.acks.delete(key);
    this.touch(key);
    return key;
  }

  /** {"type":"silences",…}: the whole silence set and silenced-key set (what servers before
   *  silence deltas sent, and history they wrote). Returns the keys whose silenced flag
   *  changed, or null for a duplicate.
   * @param {Record<string, any>} msg
   */
  applySilences(msg) {
    if (!this.acceptSeq(msg)) return null;
    this.version += 1;
    if (Array.isArray(msg.silences)) this.silences = msg.silences.filter((/** @type {unknown} */ s) => s && typeof s === 'object');
    if (!Array.isArray(msg.silenced)) return new Set();
    const next = keySet(msg.silenced);
    const flipped = new Set();
    for (const k of next) if (!this.silenced.has(k)) flipped.add(k);
    for (const k of this.silenced) if (!next.has(k)) flipped.add(k);
    this.silenced = next;
    for (const k of flipped) this.touch(k);
    return flipped;
  }

  /** {"type":"silence","change","id","silence","silenced","unsilenced"}: one silence changed
   *  (created, edited, started: `silence` is it; deleted, ended: `silence` is null) and the keys
   *  it silenced or released. Returns the keys whose silenced flag changed, or null for a
   *  duplicate.
   * @param {Record<string, any>} msg
   */
  applySilence(msg) {
    if (!this.acceptSeq(msg)) return null;
    this.version += 1;
    const id = String(msg.id);
    const rest = this.silences.filter((s) => String(s.id) !== id);
    if (msg.silence && typeof msg.silence === 'object') {
      const at = this.silences.findIndex((s) => String(s.id) === id);
      if (at >= 0) {
        rest.splice(at, 0, msg.silence);
      } else {
        // New ids are seqs, so in order at the end; keep the list ordered by id anyway.
        const after = rest.findIndex((s) => Number(s.id) > Number(id));
        rest.splice(after < 0 ? rest.length : after, 0, msg.silence);
      }
    }
    this.silences = rest;
    const flipped = new Set();
    for (const k of keySet(Array.isArray(msg.unsilenced) ? msg.unsilenced : [])) {
      if (this.silenced.delete(k)) flipped.add(k);
    }
    for (const k of keySet(Array.isArray(msg.silenced) ? msg.silenced : [])) {
      if (!this.silenced.has(k)) {
        this.silenced.add(k);
        flipped.add(k);
      }
    }
    for (const k of flipped) this.touch(k);
    return flipped;
  }

  /**
   * 'silenced' | 'acked' | 'active': how a problem is handled. A silence wins over an ack.
   * @param {string} key
   */
  status(key) {
    if (this.silenced.has(key)) return 'silenced';
    if (this.acks.has(key)) return 'acked';
    return 'active';
  }

  /** @param {Entry} entry */
  isProblem(entry) {
    return entry.cls !== 'ok';
  }

  /** Problem entries, in no particular order. */
  problems() {
    const out = [];
    for (const entry of this.entries.values()) if (entry.cls !== 'ok') out.push(entry);
    return out;
  }

  problemCount() {
    return this.entries.size - this.counts.ok;
  }

  /** Problems by handling: { active, acked, silenced, worst } — `worst` is the worst class of
   *  the active ones ('ok' when none): what the favicon shows, since a handled problem needs
   *  nobody's attention. */
  handledCounts() {
    const c = { active: 0, acked: 0, silenced: 0, worst: 'ok' };
    for (const entry of this.entries.values()) {
      if (entry.cls === 'ok') continue;
      const st = this.status(entry.key);
      c[st] += 1;
      if (st === 'active' && RANK[entry.cls] < RANK[c.worst]) c.worst = entry.cls;
    }
    return c;
  }

  /**
   * History says when an entry's current state began. Returns true when that moved it.
   * @param {string} key
   * @param {number | null} began
   */
  pinSince(key, began) {
    const entry = this.entries.get(key);
    if (!entry || entry.sinceExact || began === null) return false;
    entry.sinceExact = true;
    entry.since = began;
    this.version += 1;
    this.touch(key);
    return true;
  }

  /** Attribute names seen on problems (for "group by"), sorted. */
  attributeNames(limit = 50) {
    const names = new Set();
    for (const entry of this.entries.values()) {
      if (entry.cls === 'ok') continue;
      for (const [k] of attributesOf(entry.event)) {
        names.add(k);
        if (names.size >= limit) break;
      }
    }
    return [...names].sort();
  }
}

/** @param {unknown[]} pairs */
function keySet(pairs) {
  const out = new Set();
  for (const p of pairs) if (Array.isArray(p)) out.add(keyOfPair(p[0], p[1]));
  return out;
}
