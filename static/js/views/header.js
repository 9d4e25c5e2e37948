// Header: counts (problems that need someone, acked and silenced apart), the per-state summary,
// the document title and the favicon. "—" until the first snapshot: 0 would claim "all clear".

import { $, el, setText } from '../dom.js';
import { CLASS_ORDER } from '../model.js';

/** @type {Record<string, string>} */
const PALETTE = {
  critical: '#e03131', warning: '#f59f00', expired: '#6c757d', other: '#1c7ed6', ok: '#2b8a3e',
};

/**
 * "(3) statecast", "(3, 1 acked, 2 silenced) statecast", "statecast". Pure.
 * @param {{ active: number, acked: number, silenced: number }} counts
 * @param {boolean} haveSnapshot
 */
export function titleFor({ active, acked, silenced }, haveSnapshot) {
  if (!haveSnapshot) return 'statecast';
  const extra = [];
  if (acked) extra.push(`${acked} acked`);
  if (silenced) extra.push(`${silenced} silenced`);
  if (!active && !extra.length) return 'statecast';
  return `(${[String(active), ...extra].join(', ')}) statecast`;
}

/**
 * @param {object} deps
 * @param {import('../model.js').Model} deps.model
 * @param {{ hidden: number, total: number, limit: number }} deps.problemsView
 * @param {() => boolean} deps.isLive
 * @param {() => boolean} deps.filtered
 */
export function createHeader({ model, problemsView, isLive, filtered }) {
  let lastFavicon = '';

  function render() {
    const have = model.haveSnapshot;
    const handled = model.handledCounts();
    const n = model.problemCount();
    setText($('problem-count'), have ? String(handled.active) : '—');
    setText($('acked-count'), have ? String(handled.acked) : '—');
    setText($('silenced-count'), have ? String(handled.silenced) : '—');
    // Shown only when there are some: before a snapshot they would be two more "—" that
    // crowd the header onto a second line.
    /** @type {HTMLElement} */ ($('acked-count').parentElement).hidden = !have || handled.acked === 0;
    /** @type {HTMLElement} */ ($('silenced-count').parentElement).hidden = !have || handled.silenced === 0;
    const title = titleFor(handled, have);
    if (document.title !== title) document.title = title;

    const summary = $('summary');
    summary.replaceChildren();
    // Only non-ok counts: an event that arrives ok and stays ok is not a change, so the server
    // never pushes it and an "ok" count here would drift.
    for (const cls of CLASS_ORDER) {
      if (model.counts[cls] === 0 || cls === 'ok') continue;
      const li = el('li', `count s-${cls}`);
      li.dataset.state = cls;
      li.append(el('span', 'count-n', model.counts[cls]), el('span', 'count-label', ` ${cls}`));
      summary.append(li);
    }

    const more = $('more');
    const hidden = problemsView.hidden;
    more.hidden = hidden <= 0;
    if (hidden > 0) {
      setText($('more-text'), `Showing the worst ${problemsView.limit.toLocaleString()} of ${problemsView.total.toLocaleString()} problems.`);
    }
    $('waiting').hidden = have;
    $('empty').hidden = !have || n > 0;
    $('empty').textContent = filtered()
      ? 'Nothing matching this filter is in a non-ok state.'
      : 'All clear: nothing is in a non-ok state.';
    if (model.seq !== null) setText($('seq'), String(model.seq));

    // The favicon: the worst problem nobody has acked or silenced.
    const worst = !isLive() ? 'stale' : handled.worst === 'expired' ? 'other' : handled.worst;
    if (worst !== lastFavicon) {
      lastFavicon = worst;
      const colour = worst === 'stale' ? '#adb5bd' : PALETTE[worst];
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${colour}"/></svg>`;
      $('favicon').setAttribute('href', `data:image/svg+xml,${encodeURIComponent(svg)}`);
    }
  }

  return { render };
}
