// Live log: transitions and notes, newest first, capped; pausable (new items wait in a buffer).
// Times are on the page's clock (the UTC / local toggle), like the details.

import { $, el, timeEl, coalesce, setHidden } from '../dom.js';
import { stateClass } from '../model.js';

export const LOG_CAP = 200;
/** Transitions drawn per second at most, over bursts of up to LOG_BURST at once. */
export const LOG_RATE = 30;
export const LOG_BURST = 60;
/** In a storm the log draws at most once in this many ms (notes at once): each draw moves every
 *  item. */
export const LOG_INTERVAL = 250;

export function createLog() {
  const list = $('log');
  const pauseButton = $('pause');
  let paused = false;
  /** Builders of what came in while paused, oldest first, at most LOG_CAP.
   *  @type {(() => HTMLElement)[]} */
  let buffer = [];

  /**
   * @param {Record<string, any>} ev
   * @param {unknown} previousState
   * @param {number} at
   * @param {string} [extra]
   */
  function item(ev, previousState, at, extra = '') {
    const li = el('li', 'log-item');
    li.dataset.state = stateClass(ev.state);
    const states = el('span', 'log-states');
    if (previousState !== null && previousState !== undefined) {
      states.append(el('span', `badge small s-${stateClass(previousState)}`, previousState), el('span', 'arrow', '→'));
    }
    states.append(el('span', `badge small s-${stateClass(ev.state)}`, ev.state));
    if (extra) states.append(el('span', 'log-flag', extra));
    const who = el('span', 'log-who');
    who.append(
      el('span', ev.host == null ? 'log-host none' : 'log-host', ev.host ?? '(no host)'),
      el('span', 'sep', ' · '),
      el('span', ev.service == null ? 'log-service none' : 'log-service', ev.service ?? '(no service)'),
    );
    li.append(timeEl('log-time', at, 'clock'), states, who);
    if (ev.description != null && ev.description !== '') {
      const d = el('span', 'log-desc', ev.description);
      d.setAttribute('title', String(ev.description));
      li.append(d);
    }
    return li;
  }

  /**
   * @param {string} text
   * @param {number} at
   */
  function note(text, at) {
    const li = el('li', 'log-item note');
    li.append(timeEl('log-time', at, 'clock'), el('span', 'log-note', text));
    return li;
  }

  // Items are drawn in an animation frame, in a storm at most once per LOG_INTERVAL, and at
  // most LOG_RATE transitions a second (bursts of up to LOG_BURST): at 1,000 changes/s building
  // an item per change (and at once dropping as many off the end) was most of the page's work in
  // the storm, for a list that scrolled faster than anyone reads; and each draw moves every item
  // below the new ones, which the browser then visits again. The newest transitions are the ones
  // drawn; those left out are counted, and at most once a second one line says how many
  // (`skippedNote`). Notes (rare: connection, operator actions) and a resumed pause are drawn at
  // once. At a calm rate a transition is logged before the page asks to render it, so the log
  // draws in the same frame as the rows and the header.
  // `pending` holds builders, oldest first, bounded by 2 × LOG_CAP.
  /** @type {{ make: () => HTMLElement, counted: boolean }[]} */
  let pending = [];
  let tokens = LOG_BURST;
  let refilledAt = performance.now();
  let skipped = 0;
  let skippedSince = 0; // when the first transition not yet reported was left out
  /** @type {ReturnType<typeof setTimeout> | null} */
  let skippedTimer = null;
  let skippedDue = false; // the timer fired: say it now
  let drawnAt = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let intervalTimer = null;

  const draw = coalesce(() => {
    const now = performance.now();
    drawnAt = now;
    tokens = Math.min(LOG_BURST, tokens + ((now - refilledAt) * LOG_RATE) / 1000);
    refilledAt = now;
    // Newest first: each counted one takes a token while there are any.
    /** @type {(() => HTMLElement)[]} */
    const drawn = [];
    for (let i = pending.length - 1; i >= 0; i -= 1) {
      const { make, counted } = pending[i];
      if (!counted || (tokens >= 1 && drawn.length < LOG_CAP)) {
        if (counted) tokens -= 1;
        drawn.push(make);
      } else {
        if (!skipped) skippedSince = now;
        skipped += 1;
      }
    }
    pending = [];
    const frag = document.createDocumentFragment();
    for (const make of drawn) frag.append(make());
    if (skipped && (skippedDue || now - skippedSince >= 1000)) {
      frag.append(skippedNote(skipped, Date.now()));
      skipped = 0;
    }
    skippedDue = false;
    if (skipped && !skippedTimer) {
      // Said within a second even if the storm stops now.
      skippedTimer = setTimeout(() => {
        skippedTimer = null;
        skippedDue = true;
        scheduleDraw();
      }, 1000 - (now - skippedSince));
    }
    if (!frag.childElementCount) return;
    list.prepend(frag);
    while (list.childElementCount > LOG_CAP) list.lastElementChild?.remove();
    setHidden($('log-empty'), true);
  });

  /**
   * @param {number} count
   * @param {number} at
   */
  function skippedNote(count, at) {
    return note(`${count.toLocaleString()} more ${count === 1 ? 'transition' : 'transitions'} not shown (the log shows at most ${LOG_RATE} a second)`, at);
  }

  /**
   * @param {() => HTMLElement} make  builds the item (only if it is drawn)
   * @param {{ now?: boolean, counted?: boolean }} [how]  `now`: draw at once instead of in the
   *   next frame; `counted`: a transition, drawn within LOG_RATE
   */
  function push(make, { now = false, counted = false } = {}) {
    if (paused) {
      buffer.push(make);
      if (buffer.length > LOG_CAP) buffer.shift();
      updateButton();
      return;
    }
    pending.push({ make, counted });
    if (pending.length > 2 * LOG_CAP) {
      if (!skipped) skippedSince = performance.now();
      skipped += pending.length - LOG_CAP;
      pending = pending.slice(-LOG_CAP);
    }
    if (now) draw.now();
    else scheduleDraw();
  }

  /** The next frame; in a storm (less than half the burst left), the first frame at least
   *  LOG_INTERVAL after the last draw. */
  function scheduleDraw() {
    const now = performance.now();
    const wait = LOG_INTERVAL - (now - drawnAt);
    const left = tokens + ((now - refilledAt) * LOG_RATE) / 1000;
    if (wait <= 0 || left >= LOG_BURST / 2) draw();
    else intervalTimer ??= setTimeout(() => {
      intervalTimer = null;
      draw();
    }, wait);
  }

  function updateButton() {
    pauseButton.setAttribute('aria-pressed', String(paused));
    pauseButton.textContent = paused ? (buffer.length ? `Resume (${buffer.length} new)` : 'Resume') : 'Pause';
    list.classList.toggle('paused', paused);
  }

  function togglePause() {
    paused = !paused;
    if (!paused) {
      const buffered = buffer;
      buffer = [];
      for (const make of buffered) pending.push({ make, counted: false });
      if (buffered.length) draw.now();
    }
    updateButton();
  }
  pauseButton.addEventListener('click', togglePause);
  updateButton();

  return {
    transition: (/** @type {Record<string, any>} */ ev, /** @type {unknown} */ previousState, /** @type {number} */ at, /** @type {string} */ extra) => push(() => item(ev, previousState, at, extra), { counted: true }),
    // Notes (connection, operator actions) are rare and drawn at once, as they always were.
    note: (/** @type {string} */ text, /** @type {number} */ at) => push(() => note(text, at), { now: true }),
    togglePause,
  };
}
