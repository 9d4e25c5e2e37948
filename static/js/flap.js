// Flap damping for notifications, modelled on Icinga's flap detection: a service whose state
// keeps changing is marked "flapping", notifies once that it is, and stays quiet until it
// settles. Icinga looks at the last 21 check results and compares the share of state changes
// with a high threshold (start flapping) and a lower one (stop): the gap between the two
// (hysteresis) keeps a service near the limit from toggling in and out of "flapping".
//
// Riemann events are not periodic check results, so the window here is time, not a number of
// checks: a key that changes state more than FLAP_START times within FLAP_WINDOW_MS is
// flapping; it stops flapping once it changed at most FLAP_STOP times within the last window.
// Pure: `now` is passed in.

import { RANK } from './model.js';

/** N: more state changes than this within the window start flapping. */
export const FLAP_START = 5;
/** M: the window, 10 minutes. */
export const FLAP_WINDOW_MS = 10 * 60_000;
/** At most this many changes within the window (and not flapping any more). */
export const FLAP_STOP = 2;
/** Keys tracked at most; past it the least recently changed key is forgotten. */
export const FLAP_MAX_KEYS = 10_000;

/** @typedef {{ changes: number[], flapping: boolean }} FlapState */

export class FlapTracker {
  constructor({ start = FLAP_START, stop = FLAP_STOP, windowMs = FLAP_WINDOW_MS, maxKeys = FLAP_MAX_KEYS } = {}) {
    this.start = start;
    this.stop = stop;
    this.windowMs = windowMs;
    this.maxKeys = maxKeys;
    /**
     * key → { changes: [ms…], flapping: bool }; Map order = least recently changed first.
     * @type {Map<string, FlapState>}
     */
    this.keys = new Map();
  }

  /**
   * A state change of `key` at `now`. Returns { flapping, started } (started: just began).
   * @param {string} key
   * @param {number} now
   */
  record(key, now) {
    let k = this.keys.get(key);
    if (k) this.keys.delete(key);
    else k = { changes: [], flapping: false };
    this.keys.set(key, k); // most recent last
    k.changes.push(now);
    this.trim(k, now);
    let started = false;
    if (!k.flapping && k.changes.length > this.start) {
      k.flapping = true;
      started = true;
    } else if (k.flapping && k.changes.length <= this.stop) {
      k.flapping = false;
    }
    while (this.keys.size > this.maxKeys) this.keys.delete(/** @type {string} */ (this.keys.keys().next().value));
    return { flapping: k.flapping, started };
  }

  /**
   * @param {FlapState} k
   * @param {number} now
   */
  trim(k, now) {
    const from = now - this.windowMs;
    let drop = 0;
    while (drop < k.changes.length && k.changes[drop] <= from) drop += 1;
    if (drop) k.changes.splice(0, drop);
  }

  /** @param {string} key */
  isFlapping(key) {
    return this.keys.get(key)?.flapping === true;
  }

  /**
   * Settles keys that stopped changing. Returns the keys that stopped flapping.
   * @param {number} now
   */
  tick(now) {
    const stopped = [];
    for (const [key, k] of this.keys) {
      this.trim(k, now);
      if (k.flapping && k.changes.length <= this.stop) {
        k.flapping = false;
        stopped.push(key);
      }
      if (!k.flapping && k.changes.length === 0) this.keys.delete(key);
    }
    return stopped;
  }

  /** @param {string} key */
  forget(key) {
    this.keys.delete(key);
  }
}

/**
 * Whether a live change deserves a notification:
 *   'flapping' when the key just started flapping (once), 'problem' when it newly became a
 *   problem or got worse, null otherwise — and always null for an acked or silenced key, and
 *   while it flaps.
 * @param {{ previousClass: string | null | undefined, cls: string, status: string,
 * flap?: { flapping: boolean, started: boolean } | null }} change
 */
export function decideNotification({ previousClass, cls, status, flap }) {
  if (status !== 'active') return null;
  if (flap?.started) return 'flapping';
  if (flap?.flapping) return null;
  if (cls === 'ok') return null;
  if (previousClass === null || previousClass === undefined || previousClass === 'ok') return 'problem';
  return RANK[cls] < RANK[previousClass] ? 'problem' : null;
}
