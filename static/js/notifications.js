// Notifications: opt-in browser notifications (the Notification API) and an optional sound, for
// live changes that make a problem new or worse — never for acked or silenced services, never
// for what a snapshot shows, and damped for flapping services (flap.js: one notification when a
// service starts flapping, then quiet until it settles). Both choices are remembered.

import { $ } from './dom.js';
import { FlapTracker, decideNotification } from './flap.js';

const PREF_NOTIFY = 'statecast.notify';
const PREF_SOUND = 'statecast.sound';

/** @param {string} key */
function load(key) {
  try { return localStorage.getItem(key) === 'on'; } catch { return false; }
}
/**
 * @param {string} key
 * @param {boolean} on
 */
function save(key, on) {
  try { localStorage.setItem(key, on ? 'on' : 'off'); } catch { /* not remembered */ }
}

/** @param {{ describe: (ev: Record<string, any>) => string }} deps */
export function createNotifications({ describe }) {
  const notifyButton = /** @type {HTMLButtonElement} */ ($('notify-toggle'));
  const soundButton = $('sound-toggle');
  const flaps = new FlapTracker();
  const n = {
    enabled: load(PREF_NOTIFY),
    sound: load(PREF_SOUND),
    /** Every notification shown (for the tests and the curious): { kind, title, body, at }. */
    /** @type {{ kind: string, title: string, body: string, at: number }[]} */
    sent: [],
    flaps,
  };
  let audio = null;

  const supported = () => typeof window.Notification === 'function';
  const permission = () => (supported() ? window.Notification.permission : 'unsupported');

  function render() {
    const on = n.enabled && permission() === 'granted';
    notifyButton.setAttribute('aria-pressed', String(on));
    notifyButton.dataset.permission = permission();
    notifyButton.title = permission() === 'denied'
      ? 'Notifications are blocked for this site in the browser settings'
      : permission() === 'unsupported' ? 'This browser has no notifications'
        : on ? 'Notifying about new problems (click to stop)' : 'Notify me about new problems';
    notifyButton.disabled = permission() === 'unsupported';
    soundButton.setAttribute('aria-pressed', String(n.sound));
  }

  notifyButton.addEventListener('click', async () => {
    if (!supported()) return;
    if (n.enabled && permission() === 'granted') {
      n.enabled = false;
    } else {
      let p = permission();
      if (p === 'default') p = await window.Notification.requestPermission();
      n.enabled = p === 'granted';
    }
    save(PREF_NOTIFY, n.enabled);
    render();
  });
  soundButton.addEventListener('click', () => {
    n.sound = !n.sound;
    save(PREF_SOUND, n.sound);
    if (n.sound) beep(); // a user gesture: unlocks audio, and lets the user hear it once
    render();
  });

  /** A short two-tone beep (Web Audio: no file to serve). */
  function beep() {
    try {
      audio ??= new AudioContext();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.connect(gain);
      gain.connect(audio.destination);
      const t = audio.currentTime;
      osc.frequency.setValueAtTime(880, t);
      osc.frequency.setValueAtTime(660, t + 0.12);
      gain.gain.setValueAtTime(0.15, t);
      gain.gain.exponentialRampToValueAtTime(0.001, t + 0.3);
      osc.start(t);
      osc.stop(t + 0.3);
    } catch {
      // no audio: the visual notification still happens
    }
  }

  /**
   * A live change: `result` from Model.applyChange, `status` its handling. Returns the kind of
   * notification sent ('problem' | 'flapping') or null, and whether the key is flapping.
   * @param {import('./dispatch.js').LiveChange} result
   * @param {string} status
   * @param {number} now
   */
  function onChange(result, status, now) {
    const { key, entry, previousClass } = result;
    const flap = flaps.record(key, now);
    const kind = decideNotification({ previousClass, cls: entry.cls, status, flap });
    if (kind) fire(kind, entry, now);
    return { kind, flapping: flap.flapping };
  }

  /**
   * @param {string} kind
   * @param {{ key: string, event: Record<string, any> }} entry
   * @param {number} now
   */
  function fire(kind, entry, now) {
    const ev = entry.event;
    const who = describe(ev);
    const title = kind === 'flapping' ? `Flapping: ${who}` : `${String(ev.state)}: ${who}`;
    const body = kind === 'flapping'
      ? 'Changing state often; no more notifications for it until it settles.'
      : String(ev.description ?? '');
    n.sent.push({ kind, title, body, at: now });
    if (n.sent.length > 100) n.sent.shift();
    if (n.enabled && permission() === 'granted') {
      try {
        // `tag` replaces an older notification of the same service instead of stacking them.
        const notification = new window.Notification(title, { body, tag: entry.key });
        notification.onclick = () => window.focus();
      } catch {
        // Some platforms only allow notifications from a service worker: nothing to do.
      }
    }
    if (n.sound) beep();
  }

  setInterval(() => flaps.tick(Date.now()), 30_000);
  render();
  return Object.assign(n, { onChange, render, isFlapping: (/** @type {string} */ key) => flaps.isFlapping(key) });
}
