// Grid: hosts × services, one cell per pair, coloured by state. Built lazily (the first time the
// grid is shown), a chunk of rows per frame, then kept current one cell per change: a new host
// appends a row, a new service appends a column (one cell per existing row). A snapshot rebuilds.

import { $, el, setText } from '../dom.js';
import { absolute } from '../format.js';
import { parseTime } from '../model.js';

/**
 * @param {object} deps
 * @param {import('../model.js').Model} deps.model
 * @param {(key: string) => void} deps.onOpen
 * @param {() => boolean} deps.haveSnapshot
 */
export function createGrid({ model, onOpen, haveSnapshot }) {
  const index = model.entries;
  const gridHead = $('grid-head');
  const gridBody = $('grid-rows');
  const gridPanel = $('grid-panel');
  const GRID_ROWS_PER_CHUNK = 60;
  const gridRowOf = new WeakMap(); // <tr> → its row record
  const gridCollator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  const nameKey = (/** @type {unknown} */ v) => JSON.stringify(v ?? null);
  const grid = {
    built: false,      // the DOM exists (or is being built) and is kept current
    /** @type {any[]} */
    hosts: [],         // [{ value, tr, cells }] in row order; tr null until its chunk is built
    hostIndex: new Map(), // nameKey(host) → row index
    /** @type {any[]} */
    services: [],      // service values in column order
    serviceIndex: new Map(), // nameKey(service) → column index
    builtRows: 0,      // rows [0, builtRows) have DOM
    building: false,
    generation: 0,
  };

  /**
   * @param {unknown} host
   * @param {unknown} service
   */
  function gridCellClass(host, service) {
    const entry = index.get(JSON.stringify([host ?? null, service ?? null]));
    return entry ? `cell s-${entry.cls}` : 'cell empty-cell';
  }

  /**
   * @param {unknown} host
   * @param {unknown} service
   */
  function gridCreateCell(host, service) {
    const td = document.createElement('td');
    td.className = gridCellClass(host, service);
    return td;
  }

  /** @param {any} service */
  function gridHeaderCell(service) {
    const th = el('th', 'grid-service');
    th.scope = 'col';
    const label = el('span', service == null ? 'none' : null, service ?? '(no service)');
    th.append(label);
    th.setAttribute('title', service ?? '(no service)');
    th.dataset.service = service ?? '';
    return th;
  }

  // Sticky host names only when the grid is wider than its box (see style.css `.wide`). A
  // ResizeObserver hears both sizes change without the page reading layout.
  const gridTable = $('grid');
  const gridWrap = /** @type {HTMLElement} */ (gridTable.parentElement);
  if (typeof ResizeObserver === 'function') {
    const wideness = new ResizeObserver(() => {
      gridTable.classList.toggle('wide', gridTable.offsetWidth > gridWrap.clientWidth);
    });
    wideness.observe(gridTable);
    wideness.observe(gridWrap);
  }

  /** Longest host label seen (in characters), for the host column's width. */
  let hostChars = 0;
  /**
   * Widens the host column to fit `host`'s label (rows are flex boxes, not table rows, so they
   * share a width only through this; at most 180 px, longer names end in an ellipsis).
   * @param {unknown} host
   */
  function fitHost(host) {
    const chars = Math.max(String(host ?? '(no host)').length, 'host \\ service'.length);
    if (chars <= hostChars) return;
    hostChars = chars;
    // In pixels, not `ch`: the corner and the host cells have different fonts, and must match.
    gridTable.style.setProperty('--grid-host-w', `${Math.min(180, Math.ceil(chars * 7.5) + 16)}px`);
  }

  /** @param {{ value: any, tr: HTMLElement | null, cells: HTMLElement[] | null }} row */
  function gridCreateRow(row) {
    const tr = document.createElement('tr');
    const th = el('th', row.value == null ? 'grid-host none' : 'grid-host', row.value ?? '(no host)');
    th.scope = 'row';
    th.setAttribute('title', row.value ?? '(no host)');
    tr.dataset.host = row.value ?? '';
    gridRowOf.set(tr, row);
    tr.append(th);
    row.cells = [];
    for (const service of grid.services) {
      const td = gridCreateCell(row.value, service);
      row.cells.push(td);
      tr.append(td);
    }
    row.tr = tr;
    return tr;
  }

  /**
   * Builds pending rows, a chunk per frame, so a 500 × 50 grid never blocks the page for long.
   * @param {number} generation
   */
  function gridBuildChunk(generation) {
    if (generation !== grid.generation) return;
    const frag = document.createDocumentFragment();
    const end = Math.min(grid.hosts.length, grid.builtRows + GRID_ROWS_PER_CHUNK);
    for (let i = grid.builtRows; i < end; i += 1) frag.append(gridCreateRow(grid.hosts[i]));
    gridBody.append(frag);
    grid.builtRows = end;
    if (grid.builtRows < grid.hosts.length) {
      requestAnimationFrame(() => gridBuildChunk(generation));
      setTimeout(() => gridBuildChunk(generation), 100); // rAF stalls in background tabs
    } else {
      grid.building = false;
      gridPanel.dataset.ready = 'true';
    }
    gridStatus();
  }

  function gridSchedule() {
    if (grid.building || grid.builtRows >= grid.hosts.length) return;
    grid.building = true;
    delete gridPanel.dataset.ready;
    const generation = grid.generation;
    requestAnimationFrame(() => gridBuildChunk(generation));
  }

  /** Throws the grid away and lays it out again from the index (sorted hosts and services). */
  function gridRebuild() {
    grid.generation += 1;
    grid.built = true;
    grid.building = false;
    const hosts = new Map();
    const services = new Map();
    for (const entry of index.values()) {
      const h = entry.event.host ?? null;
      const s = entry.event.service ?? null;
      hosts.set(nameKey(h), h);
      services.set(nameKey(s), s);
    }
    const order = (/** @type {unknown} */ a, /** @type {unknown} */ b) => (a === null ? -1 : b === null ? 1 : gridCollator.compare(String(a), String(b)));
    grid.hosts = [...hosts.values()].sort(order).map((value) => ({ value, tr: null, cells: null }));
    hostChars = 0;
    for (const row of grid.hosts) fitHost(row.value);
    grid.services = [...services.values()].sort(order);
    grid.hostIndex = new Map(grid.hosts.map((r, i) => [nameKey(r.value), i]));
    grid.serviceIndex = new Map(grid.services.map((s, i) => [nameKey(s), i]));
    grid.builtRows = 0;
    gridBody.replaceChildren();
    gridHead.replaceChildren(/** @type {Element} */ (gridHead.firstElementChild), ...grid.services.map(gridHeaderCell));
    gridSchedule();
    gridStatus();
  }

  /**
   * After a snapshot: when every host and service of the grid is still there, the grid is kept
   * (cells recoloured where they differ, new hosts and services appended); otherwise rebuilt.
   */
  function gridRefresh() {
    const hosts = new Map();
    const services = new Map();
    for (const entry of index.values()) {
      hosts.set(nameKey(entry.event.host), entry.event.host ?? null);
      services.set(nameKey(entry.event.service), entry.event.service ?? null);
    }
    const gone = grid.hosts.some((r) => !hosts.has(nameKey(r.value)))
      || grid.services.some((v) => !services.has(nameKey(v)));
    if (gone) {
      gridRebuild();
      return;
    }
    for (let i = 0; i < grid.builtRows; i += 1) {
      const row = grid.hosts[i];
      grid.services.forEach((service, col) => {
        const cls = gridCellClass(row.value, service);
        const td = row.cells[col];
        if (td.className !== cls) td.className = cls;
        if (td.hasAttribute('title')) td.removeAttribute('title'); // rewritten on the next hover
      });
    }
    for (const entry of index.values()) {
      if (!grid.hostIndex.has(nameKey(entry.event.host)) || !grid.serviceIndex.has(nameKey(entry.event.service))) {
        gridUpdate(entry);
      }
    }
    gridStatus();
  }

  /**
   * One (host, service) changed: touch its cell only (or append a row / a column).
   * @param {import('../model.js').Entry} entry
   */
  function gridUpdate(entry) {
    if (!grid.built) return;
    const host = entry.event.host ?? null;
    const service = entry.event.service ?? null;
    let col = grid.serviceIndex.get(nameKey(service));
    if (col === undefined) {
      col = grid.services.length;
      grid.services.push(service);
      grid.serviceIndex.set(nameKey(service), col);
      gridHead.append(gridHeaderCell(service));
      for (let i = 0; i < grid.builtRows; i += 1) {
        const row = grid.hosts[i];
        const td = gridCreateCell(row.value, service);
        row.cells.push(td);
        row.tr.append(td);
      }
    }
    let r = grid.hostIndex.get(nameKey(host));
    if (r === undefined) {
      r = grid.hosts.length;
      grid.hosts.push({ value: host, tr: null, cells: null });
      fitHost(host);
      grid.hostIndex.set(nameKey(host), r);
      if (!grid.building && grid.builtRows === r) {
        gridBody.append(gridCreateRow(grid.hosts[r]));
        grid.builtRows = r + 1;
      } else {
        gridSchedule();
      }
      gridStatus();
      return; // the new row reads its cells from the index
    }
    const row = grid.hosts[r];
    if (!row.tr) return; // its chunk is not built yet: it will read the index
    const td = row.cells[col];
    const cls = `cell s-${entry.cls}`;
    if (td.className !== cls) td.className = cls;
    if (td.hasAttribute('title')) td.setAttribute('title', gridTitle(entry));
  }

  /**
   * A key left the index: its cell empties now; a host or service with no cell left goes soon.
   * @type {ReturnType<typeof setTimeout> | null}
   */
  let gridTidyTimer = null;
  /** @param {Record<string, any>} ev */
  function gridForget(ev) {
    if (!grid.built) return;
    const r = grid.hostIndex.get(nameKey(ev.host));
    const col = grid.serviceIndex.get(nameKey(ev.service));
    const td = r === undefined || col === undefined ? null : grid.hosts[r].cells?.[col];
    if (td) {
      td.className = 'cell empty-cell';
      td.removeAttribute('title');
    }
    // Removals come in bursts (what expired together goes together): one relayout for the burst.
    if (gridTidyTimer === null) {
      gridTidyTimer = setTimeout(() => {
        gridTidyTimer = null;
        if (grid.built) gridRefresh();
      }, 1000);
    }
  }

  function gridStatus() {
    setText($('grid-size'), grid.hosts.length
      ? `${grid.hosts.length.toLocaleString()} hosts × ${grid.services.length.toLocaleString()} services`
      : '');
    $('grid-empty').hidden = grid.hosts.length > 0 || !haveSnapshot();
  }

  /** @param {import('../model.js').Entry} entry */
  function gridTitle(entry) {
    const ev = entry.event;
    const lines = [
      `host: ${ev.host ?? '(no host)'}`,
      `service: ${ev.service ?? '(no service)'}`,
      `state: ${ev.state}`,
    ];
    if (ev.metric !== undefined && ev.metric !== null) lines.push(`metric: ${String(ev.metric)}`);
    if (ev.description != null && ev.description !== '') lines.push(`description: ${String(ev.description)}`);
    const t = parseTime(ev.time);
    if (t !== null) lines.push(`time: ${absolute(t)}`);
    return lines.join('\n');
  }

  /**
   * The (host, service) key of a grid cell, or null.
   * @param {Element} td
   */
  function gridKeyOf(td) {
    if (!(td instanceof HTMLTableCellElement) || td.tagName !== 'TD') return null;
    const row = gridRowOf.get(/** @type {HTMLElement} */ (td.parentElement));
    const col = td.cellIndex - 1;
    if (!row || col < 0 || col >= grid.services.length) return null;
    return JSON.stringify([row.value ?? null, grid.services[col] ?? null]);
  }

  // Tooltips are written when the pointer (or focus) reaches a cell, not for 25,000 cells up front;
  // a cell that has one keeps it current on changes.
  /** @param {Event} e */
  function gridHover(e) {
    const td = /** @type {Element} */ (e.target).closest?.('td');
    const key = td && gridKeyOf(td);
    if (!key) return;
    const entry = index.get(key);
    if (entry) td.setAttribute('title', gridTitle(entry));
    else td.setAttribute('title', `${JSON.parse(key).map((/** @type {unknown} */ v) => v ?? '(none)').join(' · ')}: no event`);
  }
  gridBody.addEventListener('mouseover', gridHover);
  gridBody.addEventListener('focusin', gridHover);
  gridBody.addEventListener('click', (e) => {
    const td = /** @type {Element} */ (e.target).closest('td');
    const key = td && gridKeyOf(td);
    if (key && index.has(key)) onOpen(key);
  });


  return {
    grid,
    rebuild: gridRebuild,
    refresh: gridRefresh,
    update: gridUpdate,
    forget: gridForget,
  };
}
