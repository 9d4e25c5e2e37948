// Text formatting shared by the views: durations, metrics, and times on one clock (the viewer's
// time zone or UTC, a toggle the page remembers). No DOM.

let utc = false;
/** @type {{ absolute: Intl.DateTimeFormat, clock: Intl.DateTimeFormat, short: Intl.DateTimeFormat }} */
let formats = /** @type {any} */ (null); // built below, before any use

function build() {
  const zone = utc ? { timeZone: 'UTC' } : {};
  formats = {
    absolute: new Intl.DateTimeFormat(undefined, {
      weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short', ...zone,
    }),
    // UTC reads as Zulu time, 24-hour with a "Z" ("14:48:14Z"): a day period would land
    // between the seconds and the Z ("02:48:14 PMZ") in a 12-hour locale.
    clock: new Intl.DateTimeFormat(undefined, {
      hour: '2-digit', minute: '2-digit', second: '2-digit', ...(utc ? { hourCycle: 'h23' } : {}), ...zone,
    }),
    short: new Intl.DateTimeFormat(undefined, {
      month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', ...zone,
    }),
  };
}
build();

/**
 * 'local' or 'utc'.
 * @param {string} mode
 */
export function setClock(mode) {
  utc = mode === 'utc';
  build();
}
export const clockMode = () => (utc ? 'utc' : 'local');

export const absolute = (/** @type {number} */ ms) => formats.absolute.format(new Date(ms));
/** Time of day; in UTC mode 24-hour with a "Z" so a reader knows which clock it is. */
export const clock = (/** @type {number} */ ms) => formats.clock.format(new Date(ms)) + (utc ? 'Z' : '');
export const shortTime = (/** @type {number} */ ms) => formats.short.format(new Date(ms)) + (utc ? ' UTC' : '');
export const formatTime = (/** @type {string | undefined} */ kind, /** @type {number} */ ms) => (kind === 'clock' ? clock(ms) : kind === 'short' ? shortTime(ms) : absolute(ms));

const pad2 = (/** @type {number} */ n) => String(n).padStart(2, '0');
/**
 * "42s", "5m 03s", "2h 07m", "3d 04h".
 * @param {number} ms
 */
export function relative(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad2(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${pad2(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${pad2(h % 24)}h`;
}

/** @param {unknown} m */
export function formatMetric(m) {
  if (m === undefined || m === null) return '';
  if (typeof m !== 'number' || !Number.isFinite(m)) return String(m);
  if (Number.isInteger(m)) return m.toLocaleString();
  const a = Math.abs(m);
  if (a !== 0 && a < 0.001) return m.toPrecision(3);
  return m.toLocaleString(undefined, { maximumFractionDigits: a >= 100 ? 1 : a >= 1 ? 2 : 4 });
}

export const fmtRate = (/** @type {number} */ v) => (v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/**
 * "2h", "30m", "90s", "1d" → ms, or null.
 * @param {unknown} s
 */
export function parseDuration(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$/i.exec(String(s ?? ''));
  if (!m) return null;
  return Number(m[1]) * /** @type {Record<string, number>} */ ({ s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 })[m[2].toLowerCase()];
}
