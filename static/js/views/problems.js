// The problems table: one row per problem, created once and then only its changed cells touched;
// group rows (collapsible) and the acked / silenced sections come from order.js's layout.
// Rendering is coalesced to once per frame, and only the first `limit` problems get rows.

import { $, el, setText, setTitle, flash } from '../dom.js';
import { absolute, relative, formatMetric } from '../format.js';
import { attributesOf, parseTime } from '../model.js';
import { layout, parseSort, formatSort, parseGroup } from '../order.js';

export const RENDER_STEP = 200;

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
  const rows = new Map(); // key → { tr, cells, stamp }
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

  /** @param {string} key */
  function createRow(key) {
    const tr = el('tr', 'row');
    tr.dataset.key = key;
    tr.tabIndex = 0; // Enter opens the details
    /** @type {Record<string, any>} */
    const cells = {
      host: el('td', 'c-host'),
      service: el('td', 'c-service'),
      state: el('td', 'c-state'),
      metric: el('td', 'c-metric'),
      desc: el('td', 'c-desc'),
      age: el('td', 'c-age'),
      tags: el('td', 'c-tags'),
      act: el('td', 'c-act'),
    };
    cells.badge = el('span', 'badge');
    cells.state.append(cells.badge);
    cells.time = el('time');
    cells.age.append(cells.time);
    cells.descText = el('span', 'desc-text');
    cells.note = el('span', 'handled-note');
    cells.desc.append(cells.descText, cells.note);
    cells.ackButton = el('button', 'row-action ack-button', 'ack');
    cells.ackButton.type = 'button';
    cells.act.append(cells.ackButton);
    tr.append(cells.host, cells.service, cells.state, cells.metric, cells.desc, cells.age, cells.tags, cells.act);
    const row = { tr, cells, stamp: null };
    rows.set(key, row);
    return row;
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
   * @param {{ tr: HTMLElement, cells: Record<string, any>, stamp: any[] | null }} row
   * @param {import('../model.js').Entry} entry
   * @param {string} status
   */
  function fillRow(row, entry, status) {
    const ev = entry.event;
    const c = row.cells;
    const ack = model.acks.get(entry.key) ?? null;
    const stamp = [ev, status, ack];
    if (row.stamp && row.stamp[0] === stamp[0] && row.stamp[1] === stamp[1] && row.stamp[2] === stamp[2]) return;
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
    c.note.hidden = note === '';
    setText(c.ackButton, ack ? 'unack' : 'ack');
    c.ackButton.dataset.action = ack ? 'unack' : 'ack';
    c.ackButton.setAttribute('aria-label', `${ack ? 'Remove the acknowledgement of' : 'Acknowledge'} ${ev.host ?? '(no host)'} · ${ev.service ?? '(no service)'}`);
    fillAge(row, entry, Date.now(), true);
    // Tags, then custom attributes as key=value.
    c.tags.replaceChildren();
    if (Array.isArray(ev.tags)) for (const tag of ev.tags) c.tags.append(el('span', 'tag', tag));
    for (const [k, v] of attributesOf(ev)) {
      const attr = el('span', 'attr', `${k}=${v}`);
      attr.setAttribute('title', `${k}=${v}`);
      c.tags.append(attr);
    }
  }

  /**
   * @param {{ tr: HTMLElement, cells: Record<string, any>, stamp: any[] | null }} row
   * @param {import('../model.js').Entry} entry
   * @param {number} now
   * @param {boolean} [force]
   */
  function fillAge(row, entry, now, force = false) {
    const t = row.cells.time;
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

  function render() {
    const result = layout(model.problems(), {
      sort: view.sort, group: view.group, collapsed: view.collapsed, limit: view.limit,
      status: (key) => model.status(key),
    });
    view.order = result.order;
    view.hidden = result.hidden;
    view.total = result.total;
    /** @type {HTMLElement[]} */
    const wanted = [];
    const liveKeys = new Set();
    const liveGroups = new Set();
    const liveSections = new Set();
    for (const item of result.items) {
      if (item.kind === 'entry') {
        const key = item.entry.key;
        const row = rows.get(key) ?? createRow(key);
        fillRow(row, item.entry, item.status);
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
    }
    for (const [key, row] of rows) if (!liveKeys.has(key)) { row.tr.remove(); rows.delete(key); }
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
    for (const key of changed) {
      const row = rows.get(key);
      if (row) flash(row.tr);
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

  /** @param {number} now */
  function tickAges(now) {
    for (const [key, row] of rows) {
      const entry = model.entries.get(key);
      if (entry) fillAge(row, entry, now);
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
