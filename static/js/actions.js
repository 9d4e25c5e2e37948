// Operator actions (ack, unack, clear, silences) over the HTTP API of ACTIONS-CONTRACT.md. The
// answers come back as websocket frames to every open page, this one included, so nothing here
// changes the model: it only asks, and reports the server's error sentence when refused.
//
// "by": the name typed once and remembered (localStorage). The page's `?token=` is sent as the
// bearer token (when the server guards actions with --ingest-token, open the page with it).

import { splitKey } from './model.js';

/**
 * A silence as the form gives it: a query and either a duration ("2h") or an end.
 * @typedef {{ query: string, comment?: string, by?: string, duration?: string | null, endsAt?: string | null }} SilenceForm
 */

const BY_KEY = 'statecast.by';

export function rememberedBy() {
  try {
    return localStorage.getItem(BY_KEY) ?? '';
  } catch {
    return '';
  }
}

/** @param {string} name */
export function rememberBy(name) {
  try {
    if (name) localStorage.setItem(BY_KEY, name);
  } catch {
    // private mode: the name is simply not remembered
  }
}

/** @param {{ token: string }} deps  `token`: the page's ?token=, sent as the bearer token */
export function createActions({ token }) {
  /**
   * An HTTP API call; the answer's JSON with `ok`, or the server's error sentence.
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   * @returns {Promise<Record<string, any>>}
   */
  async function call(method, path, body) {
    const url = new URL(path, location.href);
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    let answer = null;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      if ((res.headers.get('content-type') ?? '').includes('json')) answer = await res.json();
    } catch (err) {
      return { ok: false, error: `the server could not be reached (${err instanceof Error ? err.message : String(err)})` };
    }
    if (res.ok && answer && answer.ok !== false) return { ok: true, ...answer };
    if (res.status === 404 && !answer) return { ok: false, status: 404, error: 'this server does not support operator actions' };
    return { ok: false, status: res.status, error: answer?.error ?? `HTTP ${res.status}` };
  }

  /** @param {string} key */
  const pair = (key) => {
    const [host, service] = splitKey(key);
    return { host, service };
  };

  return {
    /**
     * @param {string} key
     * @param {{ note?: string, by?: string, expiresAt?: string | null }} [options]
     */
    ack(key, { note = '', by = '', expiresAt = null } = {}) {
      rememberBy(by);
      /** @type {Record<string, unknown>} */
      const body = { ...pair(key), note, by };
      if (expiresAt) body.expires_at = expiresAt;
      return call('POST', 'api/ack', body);
    },
    /**
     * @param {string} key
     * @param {string} [by]
     */
    unack(key, by = '') {
      return call('POST', 'api/unack', { ...pair(key), by });
    },
    /**
     * @param {string} key
     * @param {string} [by]
     */
    clear(key, by = '') {
      rememberBy(by);
      return call('POST', 'api/clear', { ...pair(key), by });
    },
    /** @param {SilenceForm} form */
    createSilence({ query, comment = '', by = '', duration = null, endsAt = null }) {
      rememberBy(by);
      /** @type {Record<string, unknown>} */
      const body = { query, comment, by };
      if (endsAt) body.ends_at = endsAt;
      else body.duration = duration;
      return call('POST', 'api/silence', body);
    },
    /**
     * @param {string} id
     * @param {SilenceForm} form
     */
    editSilence(id, { query, comment = '', by = '', duration = null, endsAt = null }) {
      rememberBy(by);
      /** @type {Record<string, unknown>} */
      const body = { query, comment, by };
      if (endsAt) body.ends_at = endsAt;
      else body.duration = duration;
      return call('PUT', `api/silence/${encodeURIComponent(id)}`, body);
    },
    /**
     * @param {string} id
     * @param {string} [by]
     */
    deleteSilence(id, by = '') {
      return call('DELETE', `api/silence/${encodeURIComponent(id)}?by=${encodeURIComponent(by)}`);
    },
  };
}
