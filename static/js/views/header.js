// Header: counts (problems that need someone, acked and silenced apart), the per-state summary,
// the document title and the favicon. "—" until the first snapshot: 0 would claim "all clear".

import { $, el, setText, setHidden } from '../dom.js';
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
  /** The summary's items by state class, made when a state has problems and removed at 0: the
   *  header renders every frame in a storm, and rebuilding the list each time made the browser
   *  lay out and paint the header every frame even when no count had changed.
   *  @type {Map<string, { li: HTMLElement, n: HTMLElement }>} */
  const counts = new Map();

  /** Per-state counts; only the figures that changed are written. */
  function renderSummary() {
    const summary = $('summary');
    // Only non-ok counts: an event that arrives ok and stays ok is not a change, so the server
    // never pushes it and an "ok" count here would drift.
    for (const cls of CLASS_ORDER) {
      if (cls === 'ok') continue;
      const n = model.counts[cls];
      let item = counts.get(cls);
      if (n === 0) {
        item?.li.remove();
        counts.delete(cls);
        continue;
      }
      if (!item) {
        const li = el('li', `count s-${cls}`);
        li.dataset.state = cls;
        item = { li, n: el('span', 'count-n') };
        li.append(item.n, el('span', 'count-label', ` ${cls}`));
        // In CLASS_ORDER: before the first item of a later class.
        const later = CLASS_ORDER.slice(CLASS_ORDER.indexOf(cls) + 1).map((c) => counts.get(c)?.li).find(Boolean) ?? null;
        summary.insertBefore(li, later);
        counts.set(cls, item);
      }
      setText(item.n, String(n));
    }
  }

  function render() {
    const have = model.haveSnapshot;
    const handled = model.handledCounts();
    const n = model.problemCount();
    setText($('problem-count'), have ? String(handled.active) : '—');
    setText($('acked-count'), have ? String(handled.acked) : '—');
    setText($('silenced-count'), have ? String(handled.silenced) : '—');
    // Shown only when there are some: before a snapshot they would be two more "—" that
    // crowd the header onto a second line.
    setHidden(/** @type {HTMLElement} */ ($('acked-count').parentElement), !have || handled.acked === 0);
    setHidden(/** @type {HTMLElement} */ ($('silenced-count').parentElement), !have || handled.silenced === 0);
    const title = titleFor(handled, have);
    if (document.title !== title) document.title = title;

    renderSummary();

    const hidden = problemsView.hidden;
    setHidden($('more'), hidden <= 0);
    if (hidden > 0) {
      setText($('more-text'), `Showing the worst ${problemsView.limit.toLocaleString()} of ${problemsView.total.toLocaleString()} problems.`);
    }
    setHidden($('waiting'), have);
    setHidden($('empty'), !have || n > 0);
    setText($('empty'), filtered()
      ? 'Nothing matching this filter is in a non-ok state.'
      : 'All clear: nothing is in a non-ok state.');
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
