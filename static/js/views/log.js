// Live log: transitions and notes, newest first, capped; pausable (new items wait in a buffer).
// Times are on the page's clock (the UTC / local toggle), like the details.

import { $, el, timeEl, coalesce } from '../dom.js';
import { stateClass } from '../model.js';

export const LOG_CAP = 200;

export function createLog() {
  const list = $('log');
  const pauseButton = $('pause');
  let paused = false;
  /** @type {HTMLElement[]} */
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

  // Items are drawn once per animation frame, and only the newest LOG_CAP of those that came in
  // meanwhile: at 1,000 changes/s building (and at once dropping) an item per change, each its
  // own DOM write, cost more than the rest of the page. A transition is logged before the page
  // asks to render it, so the log draws in the same frame as the rows and the header; a note
  // (rare) draws at once, with what is pending. `pending` holds builders, oldest first, bounded
  // by 2 × LOG_CAP.
  /** @type {(() => HTMLElement)[]} */
  let pending = [];
  const draw = coalesce(() => {
    if (!pending.length) return;
    const builders = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (let i = builders.length - 1; i >= 0; i -= 1) frag.append(builders[i]());
    list.prepend(frag);
    while (list.childElementCount > LOG_CAP) list.lastElementChild?.remove();
    $('log-empty').hidden = true;
  });

  /**
   * @param {() => HTMLElement} make  builds the item (only if it is drawn or buffered)
   * @param {boolean} [now]  draw at once instead of in the next frame
   */
  function push(make, now = false) {
    if (paused) {
      buffer.push(make());
      if (buffer.length > LOG_CAP) buffer.shift();
      updateButton();
      return;
    }
    pending.push(make);
    if (pending.length > 2 * LOG_CAP) pending = pending.slice(-LOG_CAP);
    if (now) draw.now();
    else draw();
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
      for (const li of buffered) push(() => li);
    }
    updateButton();
  }
  pauseButton.addEventListener('click', togglePause);
  updateButton();

  return {
    transition: (/** @type {Record<string, any>} */ ev, /** @type {unknown} */ previousState, /** @type {number} */ at, /** @type {string} */ extra) => push(() => item(ev, previousState, at, extra)),
    // Notes (connection, operator actions) are rare and drawn at once, as they always were.
    note: (/** @type {string} */ text, /** @type {number} */ at) => push(() => note(text, at), true),
    togglePause,
  };
}
