// Filter (a Riemann query), kept in the URL as ?query=. Sent over the socket as a subscribe (the
// server answers with a fresh snapshot, or an error frame); queries are feature-detected, so the
// page also works with servers that do not understand them.

import { $ } from './dom.js';
import { queryHint } from './query-hint.js';

/**
 * @param {object} deps
 * @param {(frame: object) => boolean} deps.send  a frame on the current socket
 * @param {() => boolean} deps.isOpen  whether the socket may carry a subscribe now
 * @param {() => void} deps.reconnect
 * @param {() => void} deps.onChange  what the server filters by changed
 */
export function createFilter({ send, isOpen, reconnect, onChange }) {
  const input = /** @type {HTMLInputElement} */ ($('filter'));
  const message = $('filter-error');
  const f = {
    /** What the user asked for (and what the URL says). */
    desired: new URLSearchParams(location.search).get('query')?.trim() ?? '',
    /** What the server confirmed it filters by ('' = everything). */
    server: '',
    /** 'unknown' | 'yes' | 'no': whether this server understands queries. */
    support: 'unknown',
    /** A subscribe we sent and have no answer for yet. */
    /** @type {{ query: string, at: number, stats: number } | null} */
    pending: null,
    /** Failed connections while the query was in the URL (the server answers a bad one with 400). */
    urlFailures: 0,
    /** Whether the current socket's URL carried the filter. */
    inUrl: false,
  };
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let pendingTimer;
  input.value = f.desired;

  /**
   * @param {string | null} kind  'error' | 'hint' | 'info' | 'unsupported', or null
   * @param {string} [text]  none: hide the message
   */
  function show(kind, text) {
    if (!text) {
      message.hidden = true;
      message.textContent = '';
      delete message.dataset.kind;
      input.removeAttribute('aria-invalid');
      return;
    }
    message.dataset.kind = String(kind);
    message.textContent = text;
    message.hidden = false;
    if (kind === 'error') input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  /**
   * After a confirmed (or local) filter: a hint if the query is valid but likely a mistake.
   * @param {string | null} kind
   * @param {string} text
   */
  function showHintOr(kind, text) {
    const hint = queryHint(f.desired);
    if (hint) show('hint', hint);
    else show(kind, text);
  }

  /** @param {string} q */
  function setUrl(q) {
    const url = new URL(location.href);
    if (q) url.searchParams.set('query', q);
    else url.searchParams.delete('query');
    if (url.href !== location.href) history.replaceState(null, '', url);
  }

  /** @param {string} query */
  function subscribe(query) {
    if (!isOpen()) return;
    send({ type: 'subscribe', query });
    f.pending = { query, at: Date.now(), stats: 0 };
    clearTimeout(pendingTimer);
    // A server that ignores subscribe never answers: call it unsupported after a while
    // (or after two stats heartbeats, see onStats).
    pendingTimer = setTimeout(unanswered, 6000);
    if (f.support !== 'no' && query) show('info', 'applying filter…');
  }

  function unanswered() {
    if (!f.pending) return;
    f.pending = null;
    clearTimeout(pendingTimer);
    f.support = 'no';
    f.server = '';
    onChange();
    if (f.desired) show('unsupported', 'This server does not support queries yet: showing all events.');
  }

  /** @param {Record<string, any>} msg  the snapshot or error frame that answers the subscribe */
  function answered(msg) {
    const was = f.pending;
    f.pending = null;
    clearTimeout(pendingTimer);
    f.support = 'yes';
    if (msg.type === 'error') {
      show('error', String(msg.error ?? 'the server rejected this query'));
    } else {
      f.server = typeof msg.query === 'string' ? msg.query : (was?.query ?? '');
      f.urlFailures = 0; // the server accepts this query: it may go in the URL again
      showHintOr(null, '');
    }
    onChange();
  }

  function apply() {
    const q = input.value.trim();
    f.desired = q;
    setUrl(q);
    if (q === '') {
      show(null);
      if (isOpen() && f.support === 'yes') {
        subscribe(''); // an empty query is "everything"
      } else if (f.server !== '' || f.support === 'unknown') {
        // Servers that cannot say "everything" over the socket: a fresh connection can.
        f.server = '';
        onChange();
        reconnect();
      }
      return;
    }
    if (isOpen()) subscribe(q);
    else showHintOr(null, '');
    // Otherwise the next connection carries it.
  }

  /** The query for the next socket's URL, or '' (after two failures it goes over the socket,
   *  where the server's error message can be shown). */
  function forUrl() {
    f.inUrl = Boolean(f.desired) && f.urlFailures < 2;
    return f.inUrl ? f.desired : '';
  }

  /**
   * A snapshot arrived on the socket: bookkeeping of what it is filtered by.
   * @param {Record<string, any>} msg
   * @param {boolean} first  the socket's first snapshot
   */
  function onSnapshot(msg, first) {
    const wasPending = f.pending !== null;
    if (typeof msg.query === 'string') {
      f.support = 'yes';
      f.server = msg.query;
    } else if (first && f.inUrl && f.support === 'yes') {
      f.server = f.desired; // this server is known to filter by ?query=
    } else if (first && !f.desired) {
      f.server = '';
    }
    if (wasPending) answered(msg);
    if (first) {
      // Feature-detect queries: ask over the socket unless this server is known to have
      // applied the ?query= it was given.
      const confirmed = typeof msg.query === 'string' || (f.inUrl && f.support === 'yes');
      if (f.desired && !confirmed) subscribe(f.desired);
      else if (f.desired && confirmed && !message.dataset.kind) showHintOr(null, '');
    }
    return wasPending;
  }

  /** @param {Record<string, any>} msg */
  function onError(msg) {
    if (!f.pending) return false;
    answered(msg);
    return true;
  }

  function onStats() {
    if (!f.pending) return;
    f.pending.stats += 1;
    if (f.pending.stats >= 2 && Date.now() - f.pending.at >= 1000) unanswered();
  }

  /** A new socket: nothing is pending on it. */
  function onSocket() {
    f.pending = null;
    clearTimeout(pendingTimer);
  }

  /**
   * The server answered a plain GET of the socket URL with 400: the query in the URL is bad.
   * @param {string} error
   */
  function onUrlRejected(error) {
    f.urlFailures = 2;
    show('error', error);
  }

  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    apply();
  });
  input.addEventListener('search', () => {
    // The clear (×) button of a search field.
    if (input.value === '' && f.desired !== '') apply();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      input.value = f.desired;
      input.blur();
    }
  });

  const filtered = () => f.support === 'yes' && f.server !== '';
  return Object.assign(f, { forUrl, onSnapshot, onError, onStats, onSocket, onUrlRejected, filtered, show, input });
}
