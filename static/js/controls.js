// The page's controls that are not a view of their own: the Problems / Grid / Silences / Graphs tabs (kept
// in the URL as ?view=), the problems table's sort buttons and group-by select, "show more", and
// the keyboard shortcuts. Split from app.js so the wiring there stays about the protocol.

import { $ } from './dom.js';
import { VIEWS } from './dispatch.js';
import { RENDER_STEP } from './views/problems.js';

/**
 * A parameter of the page's own URL, or ''.
 * @param {string} name
 */
export function urlParam(name) {
  return new URLSearchParams(location.search).get(name) ?? '';
}

/**
 * Sets (or, empty, removes) a parameter of the page's URL without a navigation.
 * @param {string} name
 * @param {string} value
 */
export function setUrlParam(name, value) {
  const url = new URL(location.href);
  if (value) url.searchParams.set(name, value);
  else url.searchParams.delete(name);
  if (url.href !== location.href) history.replaceState(null, '', url);
}

/**
 * @typedef {object} ControlDeps
 * @property {import('./model.js').Model} model
 * @property {ReturnType<typeof import('./views/problems.js').createProblemsView>} problems
 * @property {(() => void) & { now: () => void }} render
 * @property {() => void} showMore  after more rows are shown (history may say when they began)
 * @property {() => string} view  the current view
 * @property {(view: string) => void} onView  a view was chosen
 * @property {() => boolean} hasDetails  whether a service's details are open
 * @property {() => void} closeDetails
 * @property {() => void} focusFilter
 * @property {() => void} togglePause  the live log's pause
 */

/**
 * Wires the controls; returns `setView` for the page's first view.
 * @param {ControlDeps} deps
 */
export function createControls(deps) {
  problemsControls(deps);
  const setView = tabs(deps);
  keyboard(deps, setView);
  return { setView };
}

/**
 * The problems table's sort buttons, group-by select and "show more".
 * @param {ControlDeps} deps
 */
function problemsControls({ model, problems, render, showMore }) {
  for (const button of document.querySelectorAll('#problems thead th[data-sort] button')) {
    button.addEventListener('click', () => {
      const th = /** @type {HTMLElement} */ (button.closest('th'));
      problems.setSort(/** @type {string} */ (th.dataset.sort));
      render();
    });
  }

  const groupSelect = /** @type {HTMLSelectElement} */ ($('group-by'));
  function refreshGroupOptions() {
    const current = problems.group;
    const attrs = new Set(model.attributeNames());
    if (current.startsWith('attr:')) attrs.add(current.slice(5));
    const existing = [...groupSelect.options].filter((o) => o.value.startsWith('attr:')).map((o) => o.value.slice(5));
    if (existing.join('\n') !== [...attrs].sort().join('\n')) {
      for (const o of [...groupSelect.options]) if (o.value.startsWith('attr:')) o.remove();
      for (const name of [...attrs].sort()) {
        const o = document.createElement('option');
        o.value = `attr:${name}`;
        o.textContent = `attribute ${name}`;
        groupSelect.append(o);
      }
    }
    groupSelect.value = current;
  }
  groupSelect.addEventListener('focus', refreshGroupOptions);
  groupSelect.addEventListener('pointerdown', refreshGroupOptions);
  groupSelect.addEventListener('change', () => {
    problems.setGroup(groupSelect.value);
    render();
  });
  refreshGroupOptions();

  $('show-more').addEventListener('click', () => {
    problems.limit += RENDER_STEP * 5;
    render.now();
    showMore();
  });
}

/**
 * The Problems / Grid / Silences / Graphs tabs (arrow keys move between them, as ARIA tabs do).
 * @param {ControlDeps} deps
 * @returns {(next: string | undefined, options?: { focus?: boolean }) => void} setView
 */
function tabs({ onView }) {
  /** @type {HTMLElement[]} */
  const all = [...document.querySelectorAll('.tabs [role="tab"]')].map((t) => /** @type {HTMLElement} */ (t));

  /**
   * @param {string | undefined} next
   * @param {{ focus?: boolean }} [options]
   */
  function setView(next, { focus = false } = {}) {
    const current = next !== undefined && VIEWS.includes(next) ? next : 'problems';
    for (const tab of all) {
      const on = tab.dataset.view === current;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
    }
    $('problems-panel').hidden = current !== 'problems';
    $('grid-panel').hidden = current !== 'grid';
    $('silences-panel').hidden = current !== 'silences';
    $('graphs-panel').hidden = current !== 'graphs';
    document.body.dataset.view = current;
    onView(current);
    setUrlParam('view', current === 'problems' ? '' : current);
  }

  for (const tab of all) {
    tab.addEventListener('click', () => setView(tab.dataset.view));
    tab.addEventListener('keydown', (e) => {
      const i = all.indexOf(tab);
      let j = null;
      if (e.key === 'ArrowRight') j = (i + 1) % all.length;
      else if (e.key === 'ArrowLeft') j = (i - 1 + all.length) % all.length;
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = all.length - 1;
      if (j === null) return;
      e.preventDefault();
      setView(all[j].dataset.view, { focus: true });
    });
  }
  return setView;
}

/**
 * The page's keys: Escape closes the details, / focuses the filter, p pauses the log, g toggles
 * the grid — except while typing in a field.
 * @param {ControlDeps} deps
 * @param {(next: string) => void} setView
 */
function keyboard({ view, hasDetails, closeDetails, focusFilter, togglePause }, setView) {
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t instanceof HTMLElement
      && (t.isContentEditable || t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
    if (typing) {
      if (e.key === 'Escape' && hasDetails() && t.closest('#details')) closeDetails();
      return;
    }
    if (e.key === 'Escape' && hasDetails()) {
      closeDetails();
    } else if (e.key === '/') {
      e.preventDefault();
      focusFilter();
    } else if (e.key === 'p') {
      togglePause();
    } else if (e.key === 'g') {
      setView(view() === 'grid' ? 'problems' : 'grid');
    }
  });
}
