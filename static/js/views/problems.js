// The problems table: one row per problem, created once and then only its changed cells touched;
// group rows (collapsible) and the acked / silenced sections come from order.js's layout.
// Rendering is coalesced to once per frame, and only the first `limit` problems get rows.
//
// At incident scale (10,000 problems, 1,000 changes/s) three things keep a frame cheap:
// - the order is kept incrementally (order.js LiveOrder): a change moves one entry by binary
//   search, the model says which keys changed (takeTouched), nothing is re-sorted per frame;
// - a long list is windowed: every listed problem has a <tr> (so keys, focus, selection and the
//   page's scroll height stay), but a row far from the viewport is a one-cell shell until it comes
//   near it, and a filled row out of view is not rewritten when its problem changes; it is
//   brought up to date (fillRow compares what it shows with the entry) when it comes into view;
// - DOM writes happen at most once per animation frame, 30 a second (app.js coalesces render),
//   and nothing here reads layout: where the viewport is comes from an IntersectionObserver, so
//   no forced layout; each row is its own paint-offset space (style.css), so a row inserted
//   above others does not make the browser record the whole table's paint again.

import { $, el, setText, setTitle, setHidden, flash } from '../dom.js';
import { absolute, relative, formatMetric } from '../format.js';
import { attributesOf, parseTime } from '../model.js';
import { LiveOrder, arrange, parseSort, formatSort, parseGroup } from '../order.js';

export const RENDER_STEP = 200;
/** Lists up to this many rows are drawn whole; longer ones are windowed. */
export const WINDOW_ROWS = 80;
/** Sort columns a `metrics` frame can reorder (the values it carries). */
const MOVED_SORTS = ['metric', 'description'];
/** Rows drawn beyond each edge of the viewport's estimated range. */
const OVERSCAN = 30;
/** How far outside the viewport a row counts as "near" (IntersectionObserver rootMargin). */
const NEAR = '100% 0px';

/** @typedef {import('../model.js').Entry} Entry */
/**
 * A problem row's cells, made when the row is first drawn (a shell has none).
 * @typedef {{ host: HTMLTableCellElement, service: HTMLTableCellElement, state: HTMLTableCellElement,
 *   metric: HTMLTableCellElement, desc: HTMLTableCellElement, age: HTMLTableCellElement, tags: HTMLTableCellElement,
 *   act: HTMLTableCellElement, badge: HTMLSpanElement, time: HTMLTimeElement, descText: HTMLSpanElement,
 *   note: HTMLSpanElement, ackButton: HTMLButtonElement }} Cells
 */
/**
 * What a row was last filled from (event, status, ack): compared by identity, so a row whose
 * problem did not change is not rewritten.
 * @typedef {[Record<string, any>, string, Record<string, any> | null]} Stamp
 */
/** @typedef {{ tr: HTMLTableRowElement, cells: Cells | null, stamp: Stamp | null }} Row */

/**
 * @param {object} deps
 * @param {import('../model.js').Model} deps.model
 * @param {(key: string) => void} deps.onOpen
 * @param {(key: string, action: string) => void} deps.onAck  a row's ack / unack button
 * @param {(key: string) => boolean} deps.isSelected
 * @param {(name: string) => string} deps.urlParam
 * @param {(name: string, value: string) => void} deps.setUrlParam
 */
export function createProblemsView({ model, onOpen, onAck, isSelected, urlParam, setUrlParam }) {
  const tbody = $('problem-rows');
  const panel = $('problems-panel');
  /** @type {Map<string, Row>} */
  const rows = new Map(); // key → { tr, cells (null while a shell), stamp }
  const groupRows = new Map(); // id → { tr, ... }
  const sectionRows = new Map();
  const changed = new Set();
  /** @type {{ sort: { column: string, desc: boolean }, group: string, collapsed: Set<string>, limit: number,
   *   order: import('../model.js').Entry[], hidden: number, total: number, onChange?: () => void }} */
  const view = {
    sort: parseSort(urlParam('sort')),
    group: parseGroup(urlParam('group')),
    collapsed: new Set(),
    limit: RENDER_STEP,
    order: [],
    hidden: 0,
    total: 0,
  };

  let live = new LiveOrder(view.sort);
  /** Keys of rows within NEAR of the viewport, as the observer last reported. */
  /** @type {Set<string>} */
  const near = new Set();
  const observer = typeof IntersectionObserver === 'function'
    ? new IntersectionObserver((seen) => {
      let wake = false;
      for (const e of seen) {
        // Only problem rows are observed, and createRow gives each its key.
        const key = /** @type {string} */ (/** @type {HTMLElement} */ (e.target).dataset.key);
        if (e.isIntersecting) {
          near.add(key);
          if (needsFill(key)) wake = true;
        } else near.delete(key);
      }
      if (wake) view.onChange?.();
    }, { rootMargin: NEAR })
    : null;

  /**
   * Whether the row of `key` shows something other than its entry now.
   * @param {string} key
   */
  function needsFill(key) {
    const row = rows.get(key);
    if (!row) return false;
    if (!row.cells) return true;
    const entry = model.entries.get(key);
    return !entry || !row.stamp || row.stamp[0] !== entry.event || row.stamp[1] !== model.status(key)
      || row.stamp[2] !== (model.acks.get(key) ?? null);
  }

  /**
   * A row as a shell: its key (for focus, selection, Enter) and one empty cell of a line's height.
   * @param {string} key
   * @returns {Row}
   */
  function createRow(key) {
    const tr = el('tr', 'row shell');
    tr.dataset.key = key;
    tr.tabIndex = 0; // Enter opens the details
    const blank = el('td', 'shell-cell', '\u00a0');
    blank.colSpan = 8;
    tr.append(blank);
    /** @type {Row} */
    const row = { tr, cells: null, stamp: null };
    rows.set(key, row);
    observer?.observe(tr);
    return row;
  }

  /**
   * The cells of a row, made the first time it is drawn.
   * @param {Row} row
   * @returns {Cells}
   */
  function buildCells(row) {
    const { tr } = row;
    /** @type {Cells} */
    const cells = {
      host: el('td', 'c-host'),
      service: el('td', 'c-service'),
      state: el('td', 'c-state'),
      metric: el('td', 'c-metric'),
      desc: el('td', 'c-desc'),
      age: el('td', 'c-age'),
      tags: el('td', 'c-tags'),
      act: el('td', 'c-act'),
      badge: el('span', 'badge'),
      time: el('time'),
      descText: el('span', 'desc-text'),
      note: el('span', 'handled-note'),
      ackButton: el('button', 'row-action ack-button', 'ack'),
    };
    cells.state.append(cells.badge);
    cells.age.append(cells.time);
    cells.desc.append(cells.descText, cells.note);
    cells.ackButton.type = 'button';
    cells.act.append(cells.ackButton);
    tr.replaceChildren(cells.host, cells.service, cells.state, cells.metric, cells.desc, cells.age, cells.tags, cells.act);
    tr.classList.remove('shell');
    row.cells = cells;
    return cells;
  }

  /**
   * @param {HTMLElement} td
   * @param {unknown} value
   * @param {string} label
   */
  function fillName(td, value, label) {
    if (value === undefined || value === null || value === '') {
      td.classList.add('none');
      setText(td, `(no ${label})`);
    } else {
      td.classList.remove('none');
      setText(td, String(value));
    }
    setTitle(td, value == null ? '' : String(value));
    td.dataset.label = label;
  }

  /**
   * @param {Row} row
   * @param {Entry} entry
   * @param {string} status
   */
  function fillRow(row, entry, status) {
    const ev = entry.event;
    const ack = model.acks.get(entry.key) ?? null;
    /** @type {Stamp} */
    const stamp = [ev, status, ack];
    if (row.stamp && row.stamp[0] === stamp[0] && row.stamp[1] === stamp[1] && row.stamp[2] === stamp[2]) return false;
    const c = row.cells ?? buildCells(row);
    row.stamp = stamp;
    row.tr.dataset.state = entry.cls;
    row.tr.dataset.status = status;
    row.tr.classList.toggle('handled', status !== 'active');
    fillName(c.host, ev.host, 'host');
    fillName(c.service, ev.service, 'service');
    c.badge.className = `badge s-${entry.cls}`;
    setText(c.badge, String(ev.state));
    const metric = formatMetric(ev.metric);
    setText(c.metric, metric);
    setTitle(c.metric, metric ? String(ev.metric) : '');
    const desc = ev.description == null ? '' : String(ev.description);
    setText(c.descText, desc);
    setTitle(c.desc, desc);
    let note = '';
    if (status === 'silenced') note = 'silenced';
    if (ack) note = `acked by ${ack.by || 'someone'}${ack.note ? `: ${ack.note}` : ''}`;
    setText(c.note, note);
    setHidden(c.note, note === '');
    setText(c.ackButton, ack ? 'unack' : 'ack');
    c.ackButton.dataset.action = ack ? 'unack' : 'ack';
    c.ackButton.setAttribute('aria-label', `${ack ? 'Remove the acknowledgement of' : 'Acknowledge'} ${ev.host ?? '(no host)'} · ${ev.service ?? '(no service)'}`);
    fillAge(c, entry, Date.now(), true);
    // Tags, then custom attributes as key=value.
    c.tags.replaceChildren();
    if (Array.isArray(ev.tags)) for (const tag of ev.tags) c.tags.append(el('span', 'tag', tag));
    for (const [k, v] of attributesOf(ev)) {
      const attr = el('span', 'attr', `${k}=${v}`);
      attr.setAttribute('title', `${k}=${v}`);
      c.tags.append(attr);
    }
    return true;
  }

  /**
   * @param {Cells} cells  of a row drawn (a shell has no age to tick)
   * @param {Entry} entry
   * @param {number} now
   * @param {boolean} [force]
   */
  function fillAge(cells, entry, now, force = false) {
    const t = cells.time;
    setText(t, (entry.sinceExact ? '' : '≥ ') + relative(now - entry.since));
    const stamp = `${entry.since}|${entry.sinceExact}|${entry.event.state}|${entry.event.time}`;
    if (force || t.dataset.stamp !== stamp) {
      t.dataset.stamp = stamp;
      t.setAttribute('datetime', new Date(entry.since).toISOString());
      const updated = parseTime(entry.event.time);
      let tip = entry.sinceExact
        ? `${entry.event.state} since ${absolute(entry.since)}`
        : `${entry.event.state} since at least ${absolute(entry.since)} (the state began before this dashboard connected)`;
      if (updated !== null && updated !== entry.since) tip += `\nlast update ${absolute(updated)}`;
      t.setAttribute('title', tip);
    }
  }

  /** @param {Record<string, any>} item  a 'group' item of order.js' layout */
  function groupRow(item) {
    let g = groupRows.get(item.id);
    if (!g) {
      const tr = el('tr', 'group-row');
      tr.dataset.group = item.id;
      const th = el('th', 'group-head');
      th.colSpan = 8;
      th.scope = 'rowgroup';
      const button = el('button', 'group-toggle');
      button.type = 'button';
      const caret = el('span', 'caret');
      caret.setAttribute('aria-hidden', 'true');
      const label = el('span', 'group-label');
      const badge = el('span', 'badge small');
      const counts = el('span', 'group-counts');
      button.append(caret, label);
      th.append(button, badge, counts);
      tr.append(th);
      g = { tr, button, label, badge, counts };
      groupRows.set(item.id, g);
    }
    g.tr.dataset.worst = item.worst;
    g.button.setAttribute('aria-expanded', String(!item.collapsed));
    const label = item.label === '' ? `(no ${view.group.startsWith('attr:') ? view.group.slice(5) : view.group})` : item.label;
    setText(g.label, label);
    g.label.classList.toggle('none', item.label === '');
    g.badge.className = `badge small s-${item.worst}`;
    setText(g.badge, item.worst);
    const parts = [];
    for (const cls of ['critical', 'warning', 'expired', 'other']) if (item.counts[cls]) parts.push(`${item.counts[cls]} ${cls}`);
    setText(g.counts, parts.join(' · '));
    g.tr.dataset.total = String(item.total);
    return g.tr;
  }

  /** @param {Record<string, any>} item  a 'section' item of order.js' layout */
  function sectionRow(item) {
    let s = sectionRows.get(item.id);
    if (!s) {
      const tr = el('tr', 'section-row');
      tr.dataset.section = item.id;
      const th = el('th', 'section-head');
      th.colSpan = 8;
      th.scope = 'rowgroup';
      const label = el('span');
      th.append(label);
      tr.append(th);
      s = { tr, label };
      sectionRows.set(item.id, s);
    }
    setText(s.label, `${item.id === 'acked' ? 'Acknowledged' : 'Silenced'} (${item.count})`);
    return s.tr;
  }

  /** Brings the incremental order up to date with what the model says changed. */
  function syncOrder() {
    const touched = model.takeTouched();
    const moved = model.takeMoved();
    if (touched.all || live.sort !== view.sort) {
      if (live.sort !== view.sort) live = new LiveOrder(view.sort);
      live.reset(model.problems(), (key) => model.status(key));
      return;
    }
    for (const key of touched.keys) {
      const entry = model.entries.get(key);
      if (entry && model.isProblem(entry)) live.set(entry, model.status(key));
      else live.delete(key);
    }
    // Live values move an entry only when the order is by what moved; otherwise its row is
    // redrawn where it stands (fillRow sees a new event) and nothing is re-sorted.
    if (!MOVED_SORTS.includes(view.sort.column)) return;
    for (const key of moved) {
      const entry = model.entries.get(key);
      if (!touched.keys.has(key) && entry && model.isProblem(entry)) live.set(entry, model.status(key));
    }
  }

  /** Item indexes to draw: around the rows the observer last saw near the viewport (at their
   *  places in the new order, widened by OVERSCAN rows for what moved meanwhile), or the top of
   *  the list before it has seen any. No layout is read here: the observer's answers come with
   *  the frame's own layout, so a frame's writes are never followed by a forced layout.
   * @param {ReturnType<typeof arrange>['items']} items
   * @returns {[number, number]}
   */
  function drawRange(items) {
    if (panel.hidden) return [0, -1]; // nothing is in view; the observer wakes us when shown
    let first = Infinity;
    let last = -Infinity;
    if (near.size) {
      items.forEach((item, i) => {
        if (item.kind === 'entry' && near.has(item.entry.key)) {
          if (i < first) first = i;
          last = i;
        }
      });
    }
    if (first === Infinity) return [0, Math.ceil(window.innerHeight / 32) + OVERSCAN];
    return [Math.max(0, first - OVERSCAN), last + OVERSCAN];
  }

  function render() {
    syncOrder();
    const result = arrange(live, { group: view.group, collapsed: view.collapsed, limit: view.limit });
    const [lo, hi] = drawRange(result.items);
    view.order = result.order;
    view.hidden = result.hidden;
    view.total = result.total;
    const windowed = result.items.length > WINDOW_ROWS;
    /** @type {HTMLElement[]} */
    const wanted = [];
    const liveKeys = new Set();
    const liveGroups = new Set();
    const liveSections = new Set();
    /** @type {string[]} */
    const drawn = [];
    result.items.forEach((item, i) => {
      if (item.kind === 'entry') {
        const key = item.entry.key;
        const row = rows.get(key) ?? createRow(key);
        if (!windowed || (i >= lo && i <= hi) || near.has(key)) {
          fillRow(row, item.entry, item.status);
          drawn.push(key);
        }
        row.tr.classList.toggle('selected', isSelected(key));
        liveKeys.add(key);
        wanted.push(row.tr);
      } else if (item.kind === 'group') {
        liveGroups.add(item.id);
        wanted.push(groupRow(item));
      } else {
        liveSections.add(item.id);
        wanted.push(sectionRow(item));
      }
    });
    for (const [key, row] of rows) {
      if (!liveKeys.has(key)) {
        observer?.unobserve(row.tr);
        near.delete(key);
        row.tr.remove();
        rows.delete(key);
      }
    }
    for (const [id, g] of groupRows) if (!liveGroups.has(id)) { g.tr.remove(); groupRows.delete(id); }
    for (const [id, s] of sectionRows) if (!liveSections.has(id)) { s.tr.remove(); sectionRows.delete(id); }
    // Reconcile with as few moves as possible: rows already in order stay where they are.
    let cursor = tbody.firstChild;
    for (const tr of wanted) {
      if (tr === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(tr, cursor);
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    // Only rows drawn now flash: one out of view shows its change when it is scrolled to.
    const drawnNow = new Set(drawn);
    for (const key of changed) {
      const row = rows.get(key);
      if (row && row.cells && drawnNow.has(key)) flash(row.tr);
    }
    changed.clear();
    renderSortHeads();
  }

  function renderSortHeads() {
    for (const th of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('#problems thead th[data-sort]'))) {
      const on = th.dataset.sort === view.sort.column;
      th.setAttribute('aria-sort', on ? (view.sort.desc ? 'descending' : 'ascending') : 'none');
    }
  }

  /** @param {string} column */
  function setSort(column) {
    view.sort = view.sort.column === column ? { column, desc: !view.sort.desc } : { column, desc: false };
    setUrlParam('sort', formatSort(view.sort));
  }

  /** @param {string} group */
  function setGroup(group) {
    view.group = parseGroup(group);
    view.collapsed.clear();
    setUrlParam('group', view.group);
  }

  /** @param {string} id */
  function toggleGroup(id) {
    if (view.collapsed.has(id)) view.collapsed.delete(id);
    else view.collapsed.add(id);
  }

  /**
   * Rewrites the drawn rows' ages. Only rows near the viewport (as the observer last reported):
   * a row further away gets its age at the first tick after it comes near, and writing up to
   * 1,200 rows' ages each second made the browser lay out and paint the whole table each time.
   * @param {number} now
   */
  function tickAges(now) {
    for (const [key, row] of rows) {
      if (observer && !near.has(key)) continue;
      const entry = model.entries.get(key);
      if (entry && row.cells && row.stamp) fillAge(row.cells, entry, now);
    }
  }

  tbody.addEventListener('click', (e) => {
    const target = /** @type {Element} */ (e.target);
    const button = /** @type {HTMLElement | null} */ (target.closest('button'));
    if (button && button.classList.contains('group-toggle')) {
      toggleGroup(/** @type {string} */ (/** @type {HTMLElement} */ (button.closest('tr')).dataset.group));
      view.onChange?.();
      return;
    }
    const tr = /** @type {HTMLElement | null} */ (target.closest('tr.row'));
    if (!tr) return;
    if (button && button.classList.contains('row-action')) {
      onAck(/** @type {string} */ (tr.dataset.key), /** @type {string} */ (button.dataset.action));
      return;
    }
    if (String(window.getSelection() ?? '') !== '') return; // selecting text is not a click
    onOpen(/** @type {string} */ (tr.dataset.key));
  });
  tbody.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target instanceof HTMLElement && e.target.matches('tr.row')) {
      e.preventDefault();
      onOpen(/** @type {string} */ (e.target.dataset.key));
    }
  });

  return Object.assign(view, {
    render,
    markChanged: (/** @type {string} */ key) => changed.add(key),
    rowOf: (/** @type {string} */ key) => rows.get(key)?.tr ?? null,
    setSort,
    setGroup,
    toggleGroup,
    tickAges,
    refill() { for (const row of rows.values()) row.stamp = null; },
  });
}
