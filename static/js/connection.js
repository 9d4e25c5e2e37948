// The dashboard's websocket: one explicit state instead of a dozen flags.
//
//   connecting ──open──▶ syncing ──live──▶ live
//       │                   │               │
//       └──close──▶ waiting ◀───close───────┘      (backoff with jitter, then connecting)
//   any ──offline──▶ offline ──online──▶ connecting
//   connecting/waiting ──refused──▶ refused        (401 token, 403 origin: no more retries)
//   any ──retry──▶ connecting                      (the "retry now" button, a new filter)
//
// A browser only sees a refused upgrade as a failed connection. After two failures before the
// socket opened, the page asks the same URL with a plain GET (the server runs the same checks
// first, see src/web/ws): 401 is a token problem, 400 a bad query, 503 a full server; when the
// plain GET is admitted but the upgrade keeps failing, the only refusal left is the origin
// (403; browsers cannot send Origin on a same-origin GET, so it cannot be asked directly).

export const STATES = ['connecting', 'syncing', 'live', 'waiting', 'offline', 'refused'];

/** @type {Record<string, Record<string, string>>} */
const TRANSITIONS = {
  connecting: { open: 'syncing', close: 'waiting', offline: 'offline', refused: 'refused', retry: 'connecting' },
  syncing: { live: 'live', close: 'waiting', offline: 'offline', retry: 'connecting' },
  live: { close: 'waiting', offline: 'offline', retry: 'connecting', live: 'live' },
  waiting: { timer: 'connecting', retry: 'connecting', offline: 'offline', refused: 'refused' },
  offline: { online: 'connecting', retry: 'connecting', offline: 'offline' },
  refused: { retry: 'connecting', offline: 'offline' },
};

/**
 * The state after `event` in `state`, or null when the event does not apply there. Pure.
 * @param {string} state
 * @param {string} event
 * @returns {string | null}
 */
export function nextState(state, event) {
  return TRANSITIONS[state]?.[event] ?? null;
}

/**
 * The frames one websocket message carries: a `batch` (`/ws?batch=true`: frames queued together,
 * in order) is unwrapped, anything else is one frame. Pure.
 * @param {unknown} message  the parsed JSON of a text message
 * @returns {Record<string, any>[]}
 */
export function framesOf(message) {
  if (!message || typeof message !== 'object') return [];
  const record = /** @type {Record<string, any>} */ (message);
  if (record.type !== 'batch') return [record];
  if (!Array.isArray(record.frames)) return [];
  return record.frames.filter((frame) => frame && typeof frame === 'object' && frame.type !== 'batch');
}

export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 10_000;

/**
 * Delay before reconnect attempt `n`: exponential, capped, with "equal jitter".
 * @param {number} n
 * @param {() => number} [random]
 */
export function backoffDelay(n, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** n);
  return base / 2 + random() * base / 2;
}

/**
 * What a plain GET of the websocket URL says about a refused upgrade. Pure.
 * @param {number} status  of a plain GET of the socket's URL (0: no answer)
 * @param {any} body  its JSON, or null
 */
export function classifyProbe(status, body) {
  const error = body && typeof body.error === 'string' ? body.error : '';
  if (status === 401) return { kind: 'token', error: error || 'a token is required' };
  if (status === 403) return { kind: 'forbidden', error: error || 'forbidden' };
  if (status === 400 && error) return { kind: 'query', error };
  if (status === 503 || status === 0) return { kind: 'unavailable', error };
  return { kind: 'admitted', error };
}

/**
 * new Connection({ url(): string, onMessage(msg), onState(state, detail), onFailedOpen(info) })
 * `url()` is asked for every attempt (the filter and the resume position go in it).
 */
export class Connection {
  /**
   * @param {object} deps
   * @param {() => string} deps.url
   * @param {(frame: Record<string, any>) => void} deps.onMessage
   * @param {(state: string, detail: string) => void} deps.onState
   * @param {(verdict: { kind: string, error: string }) => void} [deps.onProbe]
   * @param {() => void} [deps.onFailedOpen]
   */
  constructor({ url, onMessage, onState, onProbe, onFailedOpen }) {
    this.url = url;
    this.onFailedOpen = onFailedOpen ?? (() => {});
    this.onMessage = onMessage;
    this.onState = onState;
    this.onProbe = onProbe ?? (() => {});
    this.state = 'connecting';
    this.detail = '';
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Why the server refuses this page (a sentence for the banner), once a probe said so. */
    /** @type {string | null} */
    this.refusal = null;
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    this.retryAt = 0;
    this.lastMessageAt = 0;
    this.statsIntervalMs = null;
    this.lastStatsAt = null;
    this.failedBeforeOpen = 0;
    this.admittedFailures = 0;
    this.lastUrl = '';
    window.addEventListener('online', () => { if (this.state === 'offline') this.fire('online'); });
    window.addEventListener('offline', () => { if (this.state !== 'live' && this.state !== 'syncing') this.fire('offline'); });
    // Countdown display and watchdog: a socket that went silent (sleep, dead NAT) is replaced.
    setInterval(() => this.watch(), 250);
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  /**
   * Applies a transition and runs what entering the new state means.
   * @param {string} event
   * @param {string} [detail]
   */
  fire(event, detail = '') {
    let to = nextState(this.state, event);
    if (to === null) return false;
    // Waiting or dialling makes no sense without a network: the 'online' event resumes.
    if ((to === 'waiting' || to === 'connecting') && !navigator.onLine) to = 'offline';
    const from = this.state;
    this.state = to;
    this.detail = detail;
    if (to !== 'waiting') {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    if (to === 'connecting') this.dial(from);
    else if (to === 'waiting') this.scheduleRetry();
    else if (to === 'offline' || to === 'refused') this.drop();
    if (to === 'live') this.attempt = 0;
    this.onState(to, detail);
    return true;
  }

  start() {
    if (!navigator.onLine) {
      this.state = 'offline';
      this.onState('offline', '');
      return;
    }
    this.state = 'connecting';
    this.dial('start');
    this.onState('connecting', '');
  }

  /** Replaces the socket now (new filter, "retry now"). */
  retry() {
    this.attempt = 0;
    this.failedBeforeOpen = 0;
    this.admittedFailures = 0;
    if (!this.fire('retry')) this.fire('timer');
  }

  markLive() { this.fire('live'); }

  /** @param {object} obj */
  send(obj) {
    if (!this.open || !this.ws) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  drop() {
    const sock = this.ws;
    this.ws = null;
    if (sock) sock.close(1000, 'reconnecting');
  }

  /** @param {string} from */
  dial(from) {
    this.drop();
    this.reconnecting = from !== 'start' || this.attempt > 0;
    let sock;
    try {
      this.lastUrl = this.url();
      sock = new WebSocket(this.lastUrl);
    } catch {
      queueMicrotask(() => this.fire('close'));
      return;
    }
    this.ws = sock;
    this.lastStatsAt = null;
    let opened = false;
    sock.addEventListener('open', () => {
      if (sock !== this.ws) return;
      opened = true;
      this.failedBeforeOpen = 0;
      this.admittedFailures = 0;
      this.lastMessageAt = Date.now();
      this.fire('open');
    });
    sock.addEventListener('message', (e) => {
      if (sock !== this.ws) return;
      this.lastMessageAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      for (const frame of framesOf(msg)) {
        // A frame may end this socket (a new filter reconnects): what follows belongs to none.
        if (sock !== this.ws) return;
        if (frame.type === 'stats') this.noteStats(frame.interval_ms);
        this.onMessage(frame);
      }
    });
    sock.addEventListener('close', (e) => {
      if (sock !== this.ws) return;
      this.ws = null;
      if (!opened) {
        this.onFailedOpen();
        this.failedBeforeOpen += 1;
        if (this.failedBeforeOpen >= 2) this.probe(this.lastUrl);
      }
      this.fire('close', e.code === 1008 ? `closed by the server: ${e.reason || 'policy violation'}` : '');
    });
  }

  /**
   * Asks the websocket URL with a plain GET why the upgrade fails.
   * @param {string} wsUrl
   */
  async probe(wsUrl) {
    const url = new URL(wsUrl);
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    let status;
    let body = null;
    try {
      const res = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
      status = res.status;
      if ((res.headers.get('content-type') ?? '').includes('json')) body = await res.json();
    } catch {
      return; // the server is down: keep reconnecting
    }
    if (this.state === 'live' || this.state === 'syncing' || this.state === 'refused') return;
    const verdict = classifyProbe(status, body);
    if (verdict.kind === 'admitted') {
      this.admittedFailures += 1;
      if (this.admittedFailures < 2) return;
      verdict.kind = 'origin';
      verdict.error = `origin ${location.origin} is not allowed`;
    }
    this.onProbe(verdict);
    if (verdict.kind === 'token' || verdict.kind === 'forbidden' || verdict.kind === 'origin') {
      this.fire('refused', verdict.kind === 'token' ? `401: ${verdict.error}` : `403: ${verdict.error}`);
    }
  }

  scheduleRetry() {
    clearTimeout(this.retryTimer);
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.fire('timer'), delay);
  }

  /** Seconds until the next attempt (while waiting). */
  get retryIn() {
    return Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
  }

  /**
   * A stats frame came: the server's heartbeat. Its own `interval_ms` says how often to expect
   * one (servers before it did not send it: then the gaps between frames are measured).
   * @param {unknown} [declaredMs]
   */
  noteStats(declaredMs) {
    const now = Date.now();
    if (typeof declaredMs === 'number' && declaredMs > 0) {
      this.statsIntervalMs = declaredMs;
    } else if (this.lastStatsAt !== null) {
      const gap = now - this.lastStatsAt;
      this.statsIntervalMs = this.statsIntervalMs === null ? gap : this.statsIntervalMs * 0.8 + gap * 0.2;
    }
    this.lastStatsAt = now;
  }

  watch() {
    if (this.state === 'waiting') this.onState('waiting', this.detail); // the countdown
    // The browser says the network is gone and the socket has gone quiet (two heartbeats): say
    // "offline" now instead of waiting for the socket's close or the 10 s silence rule below (a
    // page once stayed "live" 15 s after its network and its server went away; cause not found).
    if (this.state === 'live' && !navigator.onLine && this.lastMessageAt > 0) {
      const quietFor = Date.now() - this.lastMessageAt;
      const beat = this.statsIntervalMs ?? 1500;
      if (quietFor > Math.max(1000, 2 * beat)) {
        this.drop();
        this.fire('close', 'the network is offline');
        return;
      }
    }
    if (this.state === 'live' && this.statsIntervalMs !== null) {
      const silentFor = Date.now() - this.lastMessageAt;
      if (silentFor > Math.max(10_000, this.statsIntervalMs * 5)) {
        this.drop();
        this.fire('close', `no data for ${Math.round(silentFor / 1000)}s`);
      }
    }
  }
}
