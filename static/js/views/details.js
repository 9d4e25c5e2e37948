// Details: one (host, service) with its metric graph (views/key-graph.js), its recent transitions
// (from /api/history when the server keeps history) and its operator actions (ack with a note,
// unack, clear). Opened by clicking a row or pressing Enter on it.

import { $, el, setText, timeEl } from '../dom.js';
import { absolute, relative, parseDuration } from '../format.js';
import { keyOf, parseTime, splitKey, stateClass, attributesOf } from '../model.js';
import { rememberedBy } from '../actions.js';
import { createKeyGraph } from './key-graph.js';

export const HISTORY_SHOWN = 50;
/** How far back (in seq) to look for a service's transitions. */
export const HISTORY_WINDOW = 100_000;
/** History records kept for the graph's state bands and action marks (the list shows the last HISTORY_SHOWN). */
export const GRAPH_RECORDS = 2_000;

/** A Riemann query literal: JSON string escapes are the query language's; absent is nil. */
export const queryLiteral = (/** @type {unknown} */ v) => (v === null || v === undefined ? 'nil' : JSON.stringify(String(v)));

/** @param {string} key */
export function keyQuery(key) {
  const [host, service] = splitKey(key);
  return `host = ${queryLiteral(host)} and service = ${queryLiteral(service)}`;
}

/** @param {{ token: string }} deps */
export function createHistory({ token }) {
  const h = {
    /** Whether /api/history answered (it is absent on old servers and with --data-dir off). */
    available: true,
    /**
     * Reads `/api/history` for `query` from seq `since` onwards, page by page (oldest first),
     * keeping at most `keepLast` changes. Resolves to { changes, complete, note }.
     * @param {string} query
     * @param {number} since
     * @param {number} keepLast
     * @param {number} [maxPages]
     * @param {boolean} [actionsToo]  keep operator-action records (any key's: the page picks) too
     * @returns {Promise<{ changes: Record<string, any>[], complete: boolean, note: string }>}
     */
    async fetch(query, since, keepLast, maxPages = 5, actionsToo = false) {
      const PAGE = 10_000;
      /** @type {Record<string, any>[]} */
      let changes = [];
      let from = since;
      for (let page = 0; page < maxPages; page += 1) {
        const url = new URL('api/history', location.href);
        url.searchParams.set('query', query);
        url.searchParams.set('since', String(from));
        url.searchParams.set('limit', String(PAGE));
        if (token) url.searchParams.set('token', token);
        let body = null;
        let res;
        try {
          res = await fetch(url, { headers: { Accept: 'application/json' } });
          if ((res.headers.get('content-type') ?? '').includes('json')) body = await res.json();
        } catch (err) {
          return { changes, complete: false, note: `Could not load history: ${err instanceof Error ? err.message : String(err)}` };
        }
        if (!res.ok || !body || !Array.isArray(body.changes)) {
          if (res.status === 404) h.available = false; // no endpoint, or --data-dir off
          const note = body?.error ? `No history: ${body.error}` : 'This server does not keep transition history.';
          return { changes, complete: false, note };
        }
        changes = changes.concat(body.changes.filter((/** @type {any} */ c) => c && (c.event || actionsToo) && typeof c.seq === 'number'));
        if (changes.length > keepLast) changes = changes.slice(-keepLast);
        if (body.changes.length < PAGE) return { changes, complete: true, note: '' };
        from = body.changes.at(-1).seq;
      }
      return { changes, complete: false, note: '' };
    },
  };
  return h;
}

const EXPIRY_CHOICES = [['', 'until it recovers'], ['1h', '1 hour'], ['4h', '4 hours'], ['1d', '1 day'], ['7d', '7 days']];

/**
 * @param {object} deps
 * @param {import('../model.js').Model} deps.model
 * @param {ReturnType<typeof createHistory>} deps.history
 * @param {string} deps.token  the page's `?token=`, for /api/series
 * @param {ReturnType<typeof import('../actions.js').createActions>} deps.actions
 * @param {(key: string) => void} deps.onClose
 * @param {(key: string) => void} deps.onOpened
 * @param {() => void} deps.onPinned  history moved when a state began
 */
export function createDetails({ model, history, token, actions, onClose, onOpened, onPinned }) {
  const panel = $('details');
  /**
   * A control of the panel (rebuilt by each render, so looked up each time), or null.
   * @param {string} id
   */
  const control = (id) => /** @type {HTMLInputElement | null} */ (panel.querySelector(`#${id}`));
  const body = $('details-body');
  const d = {
    /** @type {string | null} */
    key: null,
    /** @type {Record<string, any>[] | null} change messages newest first, or null */
    history: null,
    note: '',
    /** @type {Element | null} */
    sinceNode: null,
    actionMessage: '',
    graph: createKeyGraph({ token, keyQuery, currentState: (key) => model.entries.get(key)?.event.state ?? null }),
  };

  /**
   * @param {string} key
   * @param {{ focusAck?: boolean }} [options]
   */
  function open(key, { focusAck = false } = {}) {
    d.key = key;
    d.history = null;
    d.note = 'Loading history…';
    d.actionMessage = '';
    panel.hidden = false;
    document.body.classList.add('details-open');
    render();
    if (focusAck) control('ack-note')?.focus();
    else panel.focus();
    onOpened(key);
    d.graph.open(key);
    load(key);
  }

  function close() {
    if (!d.key) return;
    const key = d.key;
    d.key = null;
    d.graph.close();
    panel.hidden = true;
    document.body.classList.remove('details-open');
    onClose(key);
  }

  /** @param {string} key */
  async function load(key) {
    const since = Math.max(0, (model.seq ?? 0) - HISTORY_WINDOW);
    const { changes, complete, note } = await history.fetch(keyQuery(key), since, GRAPH_RECORDS, 5, true);
    if (key !== d.key) return; // the user moved on
    d.graph.setHistory(changes);
    const mine = changes.filter((c) => c.event && keyOf(c.event) === key).slice(-HISTORY_SHOWN);
    const failed = note !== '';
    d.history = failed && mine.length === 0 ? null : mine.reverse();
    d.note = failed ? note
      : mine.length === 0 ? 'No transitions recorded recently.'
        : !complete ? 'Older transitions not shown.' : '';
    // History pins down when the current state began, which a snapshot alone cannot say.
    const entry = model.entries.get(key);
    const latest = d.history?.[0];
    if (complete && entry && latest && latest.event.state === entry.event.state) {
      if (model.pinSince(key, parseTime(latest.event.time))) onPinned();
    }
    render();
  }

  /**
   * A live change of the open key.
   * @param {Record<string, any>} msg
   */
  function addChange(msg) {
    if (Array.isArray(d.history)) {
      d.history.unshift(msg);
      d.history.length = Math.min(d.history.length, HISTORY_SHOWN);
    }
    render();
  }

  /**
   * @param {HTMLElement} dl
   * @param {string} label
   * @param {unknown} value
   */
  function field(dl, label, value) {
    if (value === undefined || value === null || value === '') return;
    const dt = el('dt', null, label);
    const dd = el('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = String(value);
    dl.append(dt, dd);
  }

  /**
   * @param {import('../model.js').Entry} entry
   * @param {number} now
   */
  function sinceText(entry, now) {
    return entry.sinceExact
      ? ` for ${relative(now - entry.since)}, since ${absolute(entry.since)}`
      : ` for at least ${relative(now - entry.since)}, since ${absolute(entry.since)} or earlier`;
  }

  /** @param {import('../model.js').Entry | undefined} entry */
  function actionsBlock(entry) {
    const wrap = el('div', 'details-actions');
    const ack = model.acks.get(/** @type {string} */ (d.key));
    const status = model.status(/** @type {string} */ (d.key));
    if (status === 'silenced') wrap.append(el('p', 'handled-info', 'Silenced: a silence matches this service, so it does not notify.'));
    if (ack) {
      const info = el('p', 'handled-info');
      info.append(`Acknowledged by ${ack.by || 'someone'}`);
      const at = parseTime(ack.at);
      if (at !== null) info.append(' at ', timeEl('ack-at', at, 'short'));
      if (ack.expires_at) {
        const ex = parseTime(ack.expires_at);
        if (ex !== null) info.append(', until ', timeEl('ack-until', ex, 'short'));
      }
      if (ack.note) info.append(el('span', 'ack-note-text', ack.note));
      const unack = el('button', 'action-button', 'Remove acknowledgement');
      unack.type = 'button';
      unack.id = 'unack';
      unack.addEventListener('click', () => run(() => actions.unack(/** @type {string} */ (d.key), byValue())));
      wrap.append(info, unack);
    } else if (entry && entry.cls !== 'ok') {
      const form = el('form', 'ack-form');
      form.id = 'ack-form';
      const note = el('input');
      note.id = 'ack-note';
      note.placeholder = 'Note (what is being done)';
      note.maxLength = 1024;
      note.setAttribute('aria-label', 'Acknowledgement note');
      const expiry = el('select');
      expiry.id = 'ack-expiry';
      expiry.setAttribute('aria-label', 'Acknowledgement ends');
      for (const [value, label] of EXPIRY_CHOICES) {
        const o = el('option', null, label);
        o.value = value;
        expiry.append(o);
      }
      const submit = el('button', 'action-button primary', 'Acknowledge');
      submit.type = 'submit';
      form.append(note, expiry, submit);
      form.addEventListener('submit', (/** @type {Event} */ e) => {
        e.preventDefault();
        const ms = parseDuration(expiry.value);
        const expiresAt = ms === null ? null : new Date(Date.now() + ms).toISOString();
        run(() => actions.ack(/** @type {string} */ (d.key), { note: note.value.trim(), by: byValue(), expiresAt }));
      });
      wrap.append(form);
    }
    const by = el('input', 'by-input');
    by.id = 'details-by';
    by.placeholder = 'Your name';
    by.maxLength = 128;
    by.value = rememberedBy();
    by.setAttribute('aria-label', 'Your name (remembered)');
    const row = el('div', 'action-row');
    const byLabel = el('label', 'by-label', 'by ');
    byLabel.append(by);
    const clear = el('button', 'action-button danger', 'Clear from the index');
    clear.type = 'button';
    clear.id = 'clear-key';
    clear.title = 'Remove this service from the index now (it comes back with its next event)';
    clear.addEventListener('click', () => run(() => actions.clear(/** @type {string} */ (d.key), byValue())));
    row.append(byLabel, clear);
    wrap.append(row);
    const msg = el('p', 'action-message', d.actionMessage);
    msg.id = 'action-message';
    msg.setAttribute('role', 'status');
    msg.hidden = d.actionMessage === '';
    wrap.append(msg);
    return wrap;
  }

  function byValue() {
    return control('details-by')?.value.trim() ?? '';
  }

  /** @param {() => Promise<Record<string, any>>} fn  the action */
  async function run(fn) {
    const key = d.key;
    if (!byValue()) {
      // The server wants to know who acted: ask once, the page remembers it.
      d.actionMessage = 'Type your name first (it is remembered).';
      showMessage();
      control('details-by')?.focus();
      return;
    }
    d.actionMessage = 'Sending…';
    showMessage();
    const answer = await fn();
    if (key !== d.key) return;
    d.actionMessage = answer.ok ? '' : `Refused: ${answer.error}`;
    showMessage();
  }

  function showMessage() {
    const msg = /** @type {HTMLElement | null} */ (panel.querySelector('#action-message'));
    if (!msg) return;
    setText(msg, d.actionMessage);
    msg.hidden = d.actionMessage === '';
    msg.dataset.kind = d.actionMessage === 'Sending…' ? 'info' : 'error';
  }

  function render() {
    d.sinceNode = null;
    if (!d.key) return;
    // A half-typed note survives re-renders (a live change must not eat it).
    const typed = control('ack-note')?.value ?? '';
    const typedExpiry = control('ack-expiry')?.value ?? '';
    const typedBy = control('details-by')?.value;
    const focused = document.activeElement?.id;
    const [host, service] = splitKey(d.key);
    setText($('details-title'), `${host ?? '(no host)'} · ${service ?? '(no service)'}`);
    const entry = model.entries.get(d.key);
    const parts = [];
    if (!entry) {
      parts.push(el('p', 'details-note', 'Not in the current view (filtered out, cleared, or gone from the index).'));
    } else {
      const ev = entry.event;
      const now = Date.now();
      const head = el('p', 'details-state');
      head.append(el('span', `badge s-${entry.cls}`, ev.state));
      d.sinceNode = el('span', 'details-since', sinceText(entry, now));
      head.append(d.sinceNode);
      parts.push(head);
      const dl = el('dl', 'details-fields');
      field(dl, 'Description', ev.description);
      field(dl, 'Metric', ev.metric === undefined || ev.metric === null ? null : String(ev.metric));
      if (Array.isArray(ev.tags) && ev.tags.length) {
        const tags = el('span');
        for (const t of ev.tags) tags.append(el('span', 'tag', t));
        field(dl, 'Tags', tags);
      }
      for (const [k, v] of attributesOf(ev)) field(dl, k, v);
      const updated = parseTime(ev.time);
      if (updated !== null) field(dl, 'Event time', timeEl('event-time', updated, 'absolute'));
      if (typeof ev.ttl === 'number') field(dl, 'TTL', `${ev.ttl} s`);
      parts.push(dl);
    }
    parts.push(d.graph.node);
    parts.push(actionsBlock(entry));
    parts.push(el('h3', null, 'Transitions'));
    if (Array.isArray(d.history) && d.history.length) {
      const ol = el('ol', 'history');
      for (const change of d.history) {
        const li = el('li', 'history-item');
        const at = parseTime(change.event.time);
        const time = at === null ? el('time', 'history-time', '') : timeEl('history-time', at, 'short');
        const states = el('span', 'log-states');
        if (change.previous_state != null) {
          states.append(el('span', `badge small s-${stateClass(change.previous_state)}`, change.previous_state), el('span', 'arrow', '→'));
        }
        if (change.removed === true) {
          states.append(el('span', 'history-removed', change.cleared_by ? `cleared by ${change.cleared_by}` : 'removed (expired too long)'));
        } else {
          states.append(el('span', `badge small s-${stateClass(change.event.state)}`, change.event.state));
        }
        li.append(time, states);
        if (change.event.description != null && change.event.description !== '') {
          li.append(el('span', 'history-desc', change.event.description));
        }
        ol.append(li);
      }
      parts.push(ol);
    }
    if (d.note) parts.push(el('p', 'details-note', d.note));
    body.replaceChildren(...parts);
    const note = control('ack-note');
    if (note) note.value = typed;
    const expiry = control('ack-expiry');
    if (expiry && typedExpiry) expiry.value = typedExpiry;
    const byInput = control('details-by');
    if (typedBy !== undefined && byInput) byInput.value = typedBy;
    if (focused && ['ack-note', 'ack-expiry', 'details-by'].includes(focused)) control(focused)?.focus();
  }

  /** @param {number} now */
  function tick(now) {
    const entry = d.key && model.entries.get(d.key);
    if (entry && d.sinceNode) setText(d.sinceNode, sinceText(entry, now));
  }

  $('details-close').addEventListener('click', close);

  return Object.assign(d, { open, close, render, addChange, tick });
}
