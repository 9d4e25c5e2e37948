// The page's remembered choices: theme (auto follows the OS, or light / dark) and the clock
// (local time or UTC). Kept in localStorage; the theme is applied as <html data-theme>.

import { $ } from './dom.js';
import { setClock } from './format.js';

const THEME_KEY = 'statecast.theme';
const CLOCK_KEY = 'statecast.clock';
const THEMES = ['auto', 'light', 'dark'];

/**
 * @param {string} key
 * @param {string[]} allowed
 * @param {string} fallback
 */
function load(key, allowed, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v !== null && allowed.includes(v) ? v : fallback;
  } catch {
    return fallback;
  }
}
/**
 * @param {string} key
 * @param {string} v
 */
function save(key, v) {
  try { localStorage.setItem(key, v); } catch { /* not remembered */ }
}

/**
 * @param {object} deps
 * @param {() => void} deps.onClock  the clock (local / UTC) changed
 * @param {() => void} deps.onTheme
 */
export function createSettings({ onClock, onTheme }) {
  const themeButton = $('theme-toggle');
  const clockButton = $('clock-toggle');
  const s = { theme: load(THEME_KEY, THEMES, 'auto'), clock: load(CLOCK_KEY, ['local', 'utc'], 'local') };

  function apply() {
    if (s.theme === 'auto') delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = s.theme;
    themeButton.textContent = `Theme: ${s.theme}`;
    themeButton.dataset.theme = s.theme;
    themeButton.title = 'Light, dark, or follow the system (auto)';
    setClock(s.clock);
    clockButton.textContent = s.clock === 'utc' ? 'UTC' : 'Local time';
    clockButton.setAttribute('aria-pressed', String(s.clock === 'utc'));
    clockButton.title = 'Times in the log and the details: local time or UTC';
  }

  themeButton.addEventListener('click', () => {
    s.theme = THEMES[(THEMES.indexOf(s.theme) + 1) % THEMES.length];
    save(THEME_KEY, s.theme);
    apply();
    onTheme();
  });
  clockButton.addEventListener('click', () => {
    s.clock = s.clock === 'utc' ? 'local' : 'utc';
    save(CLOCK_KEY, s.clock);
    apply();
    onClock();
  });
  apply();
  return s;
}
