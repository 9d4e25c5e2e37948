// The header's notification indicator: whether alerts reach Alertmanager (`--alertmanager`), so
// the operator learns at a glance that the 3 a.m. phone call would not come. It reads
// `GET /api/alerting` (figures the server already keeps for /metrics) at most every
// POLL_MS, on the `stats` frames' rhythm; hidden while the server has no --alertmanager.
//
// `describe` decides what the indicator says (pure, unit-tested); `createAlertingIndicator` only
// fetches and writes text (textContent: an Alertmanager's error is shown, never parsed as HTML).

import { $, setText, setTitle } from './dom.js';
import { relative } from './format.js';

/** How often the answer is asked for at most (ms). */
export const POLL_MS = 1500;
/** While the server has alerting off (a restart is needed to change that): rarely. */
export const OFF_POLL_MS = 60_000;

/**
 * @typedef {{ url: string, sent: number, failed: number, dropped: number, queue: number,
 *   last_success: string | null, last_failure: string | null, failing: number, last_error?: string }} AlertmanagerHealth
 * @typedef {{ enabled: boolean, firing?: number, alertmanagers?: AlertmanagerHealth[] }} AlertingAnswer
 * @typedef {{ state: 'off' | 'ok' | 'waiting' | 'failing', text: string, title: string }} AlertingView
 */

/**
 * What the indicator says about `answer` at `now` (ms): off; failing (the last POST to some
 * Alertmanager failed: which, why, since when it last went through); waiting (nothing sent
 * yet, nothing failed); ok (the last POST to every Alertmanager went through).
 * @param {AlertingAnswer} answer
 * @param {number} now
 * @returns {AlertingView}
 */
export function describe(answer, now) {
  const ams = Array.isArray(answer.alertmanagers) ? answer.alertmanagers : [];
  if (!answer.enabled || ams.length === 0) return { state: 'off', text: 'alerts off', title: 'No --alertmanager: this server sends no notifications.' };
  const ago = (/** @type {string | null} */ at) => {
    const ms = at ? Date.parse(at) : NaN;
    return Number.isFinite(ms) ? `${relative(now - ms)} ago` : 'never';
  };
  const title = ams.map((am) => `${am.url}: last success ${ago(am.last_success)}, ${am.sent} sent, `
    + `${am.failed} failed, ${am.queue} waiting, ${am.dropped} dropped`
    + (am.failing > 0 && am.last_error ? `; last error: ${am.last_error}` : '')).join('\n');
  const failing = ams.filter((am) => am.failing > 0);
  if (failing.length > 0) {
    const first = failing[0];
    const which = ams.length > 1 ? `${failing.length} of ${ams.length} Alertmanagers` : 'Alertmanager';
    const why = first.last_error ? `: ${first.last_error}` : '';
    const text = `alerts not delivered to ${which} (last success ${ago(first.last_success)})${why}`;
    // The header may cut the sentence short: the tooltip has it whole.
    return { state: 'failing', text, title: `${text}\n${title}` };
  }
  if (ams.every((am) => !am.last_success)) return { state: 'waiting', text: 'alerts: nothing sent yet', title };
  const latest = Math.max(...ams.map((am) => (am.last_success ? Date.parse(am.last_success) : 0)));
  const firing = typeof answer.firing === 'number' ? `${answer.firing} firing, ` : '';
  return { state: 'ok', text: `alerts: ${firing}sent ${relative(now - latest)} ago`, title };
}

/**
 * The indicator in the header (`#alerting`, `#alerting-text`); `refresh()` asks again unless it
 * asked within the poll interval (or an answer is still on its way).
 * @param {{ token: string }} deps  the page's ?token=, sent as the server's dashboard token
 */
export function createAlertingIndicator({ token }) {
  const box = $('alerting');
  const text = $('alerting-text');
  let lastAsked = -Infinity;
  let every = POLL_MS;
  let busy = false;
  /** @type {AlertingAnswer | null} */
  let last = null;

  function show() {
    if (!last) return;
    const view = describe(last, Date.now());
    box.hidden = view.state === 'off';
    box.dataset.state = view.state;
    setText(text, view.text);
    setTitle(box, view.title);
  }

  async function refresh() {
    const now = Date.now();
    if (busy || now - lastAsked < every) {
      show(); // keeps "sent … ago" current between answers
      return;
    }
    busy = true;
    lastAsked = now;
    try {
      const url = new URL('api/alerting', location.href);
      if (token) url.searchParams.set('token', token);
      const res = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
      // An older server (404) has no alerting to show.
      const body = res.ok ? await res.json() : { enabled: false };
      last = body && typeof body === 'object' ? body : { enabled: false };
      every = last?.enabled ? POLL_MS : OFF_POLL_MS;
      show();
    } catch {
      // Offline: the connection indicator says so; keep what was shown.
    } finally {
      busy = false;
    }
  }

  return {
    refresh,
    /** The last answer (for the tests' hook). */
    get answer() { return last; },
  };
}
