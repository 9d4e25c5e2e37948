// Live log: transitions and notes, newest first, capped; pausable (new items wait in a buffer).
// Times are on the page's clock (the UTC / local toggle), like the details.

import { $, el, timeEl } from '../dom.js';
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

  /** @param {HTMLElement} li */
  function push(li) {
    if (paused) {
      buffer.push(li);
      if (buffer.length > LOG_CAP) buffer.shift();
      updateButton();
      return;
    }
    list.prepend(li);
    while (list.childElementCount > LOG_CAP) list.lastElementChild?.remove();
    $('log-empty').hidden = true;
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
      for (const li of buffered) push(li);
    }
    updateButton();
  }
  pauseButton.addEventListener('click', togglePause);
  updateButton();

  return {
    transition: (/** @type {Record<string, any>} */ ev, /** @type {unknown} */ previousState, /** @type {number} */ at, /** @type {string} */ extra) => push(item(ev, previousState, at, extra)),
    note: (/** @type {string} */ text, /** @type {number} */ at) => push(note(text, at)),
    togglePause,
  };
}
