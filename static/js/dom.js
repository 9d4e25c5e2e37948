// DOM helpers. Event text is attacker-controlled: it only ever goes in as text (textContent) or
// as a plain attribute (title, datetime, data-*), never as HTML and never as a URL.

import { formatTime } from './format.js';

/**
 * An element of index.html by id. The page's ids are fixed, so it is typed as present: a missing
 * one is a bug in index.html that the browser tests catch.
 * @param {string} id
 * @returns {HTMLElement}
 */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Creates an element with a class and optional text (always set as text).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string | null} [className]
 * @param {unknown} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/**
 * @param {Node} node
 * @param {string} text
 */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Command-line flags and the token parameter in a sentence ("--allowed-origin", "?token=…"). */
const FLAG = /(--[a-z][a-z-]*[a-z]|\?token=(?:…)?)/;

/**
 * Sets a sentence that names flags as text, each flag in a <code> that never breaks across
 * lines: "--allowed-origin" split after its hyphens reads as something else.
 * @param {Element} node
 * @param {unknown} text
 */
export function setSentence(node, text) {
  const parts = String(text).split(FLAG);
  node.replaceChildren(...parts.map((part, i) => (i % 2 ? el('code', 'flag', part) : document.createTextNode(part))));
}

/**
 * Shows or hides an element, writing only a change: assigning `hidden` the value it already has
 * still makes the browser recalculate the element's style, and the header does it every frame
 * in a storm.
 * @param {HTMLElement} node
 * @param {boolean} hidden
 */
export function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

/**
 * @param {Element} node
 * @param {string} text
 */
export function setTitle(node, text) {
  if (text) node.setAttribute('title', text);
  else node.removeAttribute('title');
}

/**
 * A <time> on the page's clock: `kind` is 'clock' | 'short' | 'absolute'. The clock toggle
 * rewrites every such element (refreshTimes), so the log and the details always agree.
 * @param {string} className
 * @param {number} ms
 * @param {string} [kind]
 */
export function timeEl(className, ms, kind = 'clock') {
  const t = el('time', className, formatTime(kind, ms));
  t.dataset.at = String(ms);
  t.dataset.fmt = kind;
  t.setAttribute('datetime', new Date(ms).toISOString());
  t.setAttribute('title', formatTime('absolute', ms));
  return t;
}

export function refreshTimes(root = document) {
  for (const t of /** @type {NodeListOf<HTMLElement>} */ (root.querySelectorAll('time[data-fmt]'))) {
    const ms = Number(t.dataset.at);
    setText(t, formatTime(t.dataset.fmt, ms));
    t.setAttribute('title', formatTime('absolute', ms));
  }
}

/** Highlights a row that just changed. Alternating between two identically animated classes
 *  restarts the animation without forcing a layout. The class goes when its animation ends (or
 *  is cancelled): a class left on the row would flash it again each time a sort or regroup
 *  moves it, since re-inserting a node restarts its CSS animations.
 * @param {HTMLElement} row
 */
export function flash(row) {
  const next = row.classList.contains('flash-a') ? 'flash-b' : 'flash-a';
  row.classList.remove('flash-a', 'flash-b');
  row.classList.add(next);
  // The same listener function each time: adding it again is a no-op.
  row.addEventListener('animationend', endFlash);
  row.addEventListener('animationcancel', endFlash);
}

/** @param {AnimationEvent} e */
function endFlash(e) {
  if (e.animationName === 'flash-a' || e.animationName === 'flash-b') /** @type {Element} */ (e.currentTarget).classList.remove(e.animationName);
}

/**
 * Runs `fn` once per frame at most, and at most once per `minGapMs` (a call sooner waits for the
 * first frame after the gap); a timer backs rAF up in background tabs.
 * @param {() => void} fn
 * @param {number} [fallbackMs]
 * @param {number} [minGapMs]
 * @returns {(() => void) & { now: () => void }}
 */
export function coalesce(fn, fallbackMs = 250, minGapMs = 0) {
  let scheduled = false;
  let ranAt = -Infinity;
  const run = () => {
    if (!scheduled) return;
    scheduled = false;
    ranAt = performance.now();
    fn();
  };
  const request = () => {
    requestAnimationFrame(run);
    setTimeout(run, fallbackMs);
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    const wait = minGapMs - (performance.now() - ranAt);
    if (wait > 0) setTimeout(request, wait);
    else request();
  };
  schedule.now = () => {
    scheduled = true;
    run();
  };
  return schedule;
}
