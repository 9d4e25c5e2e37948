// Shared plumbing for the browser tests: start the real statecast binary on ephemeral ports, send
// it events with real clients (Debian's riemann-client, and HTTP POST), and drive Debian's chromium.

import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { before, after } from 'node:test';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const execFileP = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

/** Repository root (for docs/ screenshots). */
export const repoRoot = resolve(here, '..', '..');

/** Generous: the CI machine may be busy building Rust in parallel. */
export const WAIT_MS = 15_000;

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function binary() {
  const bin = process.env.STATECAST_BIN ?? resolve(repoRoot, 'target', 'debug', 'statecast');
  return bin;
}

const tempDirs = new Set();

/** A fresh temporary directory for a server's database; removed by removeDir, or at exit. */
export function tempDataDir() {
  const dir = mkdtempSync(resolve(tmpdir(), 'statecast-browser-'));
  tempDirs.add(dir);
  return dir;
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/**
 * Starts statecast on loopback ephemeral ports (or the given HTTP address) and resolves once it
 * prints its ready line (`{"ready":true,"tcp":"127.0.0.1:40001",…}` on stdout, once serving).
 * `dataDir`: the database directory to use (kept on stop, so a restart can reuse it); by default a
 * temporary one that stop() removes.
 * Returns { tcp: {host, port}, http: 'host:port', url, dataDir, proc, stderr(), stop() }.
 */
export async function startServer({ http = '127.0.0.1:0', dataDir, extraArgs = [] } = {}) {
  const ownDir = dataDir === undefined;
  const dir = ownDir ? tempDataDir() : dataDir;
  // An HTTP port just released by a previous process can take a moment to be bindable again.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      const server = await startOnce(http, dir, extraArgs);
      const stop = server.stop;
      server.stop = async () => {
        await stop();
        if (ownDir) removeDir(dir);
      };
      return server;
    } catch (err) {
      if (err.exitedEarly && http !== '127.0.0.1:0' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      if (ownDir) removeDir(dir);
      throw err;
    }
  }
}

function startOnce(http, dataDir, extraArgs = []) {
  const args = [
    '--tcp', '127.0.0.1:0', '--udp', '127.0.0.1:0', '--http', http,
    // Stats every 0.2 s so the header's counters and feature detection are quick in tests.
    '--stats-interval', '0.2',
    '--data-dir', dataDir,
    ...extraArgs,
  ];
  const proc = spawn(binary(), args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  let log = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => { log += chunk; });
  let ready = null;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`statecast did not print its ready line within ${WAIT_MS} ms; stderr:\n${log}`));
    }, WAIT_MS);
    // The ready line is the one line statecast prints on stdout.
    let buffered = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      if (ready) return;
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        ready = JSON.parse(buffered.slice(0, nl));
      } catch (err) {
        proc.kill('SIGKILL');
        reject(new Error(`statecast's ready line is not JSON (${err.message}): ${buffered.slice(0, nl)}`));
        return;
      }
      const [tcpHost, tcpPort] = splitAddr(ready.tcp);
      resolvePromise({
        proc,
        tcp: { host: tcpHost, port: tcpPort },
        http: ready.http,
        url: `http://${ready.http}/`,
        dataDir,
        stderr: () => log,
        stop: () => stopServer(proc),
      });
    });
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${binary()} (set STATECAST_BIN): ${err.message}`));
    });
    proc.on('exit', (code, signal) => {
      if (ready) return;
      clearTimeout(timer);
      const err = new Error(`statecast exited (code ${code}, signal ${signal}) before it was ready; stderr:\n${log}`);
      err.exitedEarly = true;
      reject(err);
    });
  });
}

// Servers still running when this test process ends (a crashed test, an interrupted run) are
// killed rather than left behind.
const running = new Set();
function cleanUp() {
  for (const proc of running) proc.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanUp);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cleanUp();
    process.exit(130);
  });
}

function splitAddr(addr) {
  const at = addr.lastIndexOf(':');
  return [addr.slice(0, at), Number(addr.slice(at + 1))];
}

/** SIGTERM, then wait for the process to exit (SIGKILL if it will not). */
export async function stopServer(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), WAIT_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * Sends one event with Debian's riemann-client over TCP; resolves when it exits 0 (which needs
 * the server's ok=true). The TTL defaults to an hour so nothing expires during a test.
 */
export async function sendRiemann(server, { host, service, state, description, metric, tags = [], attributes = {}, ttl = 3600 }) {
  const args = ['send', '-L', String(ttl)];
  if (host !== undefined) args.push('-h', host);
  if (service !== undefined) args.push('-S', service);
  if (state !== undefined) args.push('-s', state);
  if (description !== undefined) args.push('-D', description);
  if (metric !== undefined) args.push('-d', String(metric));
  for (const tag of tags) args.push('-t', tag);
  for (const [k, v] of Object.entries(attributes)) args.push('-a', `${k}=${v}`);
  args.push(server.tcp.host, String(server.tcp.port));
  try {
    await execFileP('riemann-client', args, { timeout: WAIT_MS });
  } catch (err) {
    throw new Error(`riemann-client ${args.join(' ')} failed: ${err.message}\n${err.stderr ?? ''}`);
  }
}

/**
 * POSTs events to /api/event and asserts the server accepted them all. Events without a `ttl` get
 * 30 days, so events dated in the past do not expire during the test.
 */
export async function postEvents(server, events) {
  const body = events.map((e) => ('ttl' in e ? e : { ...e, ttl: 30 * 86400 }));
  const res = await fetch(`http://${server.http}/api/event`, {
    method: 'POST',
    body: JSON.stringify(body),
  });
  const answer = await res.json();
  assert.equal(res.status, 200, `POST /api/event: ${res.status} ${JSON.stringify(answer)}`);
  assert.equal(answer.accepted, events.length);
  return answer;
}

/** Debian's chromium, headless. Never a downloaded browser build. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * Opens the dashboard and records what would indicate a broken page: uncaught exceptions,
 * console errors (CSP violations are reported there), and dialogs (which must never open).
 * Resolves once the page says "live".
 */
export async function openDashboard(browser, server, { viewport = { width: 1366, height: 768 }, path = '/', colorScheme = 'light', contextOptions = {}, initScript = null, live = true } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, timezoneId: 'Europe/Berlin', locale: 'en-GB', ...contextOptions });
  // Runs before the page's own scripts (e.g. a stand-in for the Notification API).
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const problems = { pageErrors: [], consoleErrors: [], dialogs: [] };
  page.on('pageerror', (err) => problems.pageErrors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.consoleErrors.push(msg.text());
  });
  page.on('dialog', (dialog) => {
    problems.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(new URL(path, server.url).href);
  if (live) await waitLive(page);
  return { page, context, problems };
}

/**
 * Opens the dashboard (as openDashboard, `options` may be left out), hands `{ page, context,
 * problems }` to `use` and closes the browser context afterwards, also when `use` throws: a
 * failed test must not leave its page running into the next one.
 */
export async function withDashboard(browser, server, options, use) {
  if (typeof options === 'function') [options, use] = [{}, options];
  const opened = await openDashboard(browser, server, options);
  try {
    return await use(opened);
  } finally {
    await opened.context.close();
  }
}

/** Starts a server (as startServer, `options` may be left out), hands it to `use`, stops it after. */
export async function withServer(options, use) {
  if (typeof options === 'function') [options, use] = [{}, options];
  const server = await startServer(options);
  try {
    return await use(server);
  } finally {
    await server.stop();
  }
}

/**
 * The one setup of a browser test file. Registers hooks that, before its tests, start a server
 * (`server`: startServer's options; `false` for none shared, when each test starts its own) and
 * then run `seed(server)`, and launch chromium; after them, close the browser and stop the server,
 * also when a test failed. Returns `{ browser, server }`, filled in before the first test; a test
 * that restarts the server assigns `suite.server`, and whichever is last is stopped.
 */
export function browserSuite({ server = {}, seed } = {}) {
  const suite = { browser: undefined, server: undefined };
  before(async () => {
    if (server !== false) {
      suite.server = await startServer(server);
      if (seed) await seed(suite.server);
    }
    suite.browser = await launchBrowser();
  });
  after(async () => {
    await suite.browser?.close();
    await suite.server?.stop();
  });
  return suite;
}

/** Waits until the header says the connection is live and the counts match the table. */
export async function waitLive(page) {
  await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'live', null, { timeout: WAIT_MS });
  await waitHeaderSettled(page);
}

/** Waits until the header's problem count agrees with the page's problems (acked and silenced
 *  ones are counted apart). */
export async function waitHeaderSettled(page) {
  await page.waitForFunction(() => document.getElementById('problem-count').textContent
    === String(window.statecast.counts.active), null, { timeout: WAIT_MS });
}

/** Waits for the document title (it is updated once per frame, just after the rows). */
export async function waitTitle(page, title) {
  try {
    await page.waitForFunction((t) => document.title === t, title, { timeout: WAIT_MS });
  } catch (err) {
    throw new Error(`title never became ${JSON.stringify(title)}; it is ${JSON.stringify(await page.title())}\n${err.message}`);
  }
}

/** The problems table as data, in display order (problem rows only, not group or section rows). */
export function readRows(page) {
  return page.$$eval('#problem-rows tr.row', (trs) => trs.map((tr) => ({
    host: tr.querySelector('.c-host').textContent,
    service: tr.querySelector('.c-service').textContent,
    state: tr.querySelector('.c-state .badge').textContent,
    metric: tr.querySelector('.c-metric').textContent,
    description: tr.querySelector('.c-desc').textContent,
    age: tr.querySelector('.c-age').textContent,
    tags: [...tr.querySelectorAll('.c-tags .tag')].map((t) => t.textContent),
    attributes: [...tr.querySelectorAll('.c-tags .attr')].map((t) => t.textContent),
  })));
}

/** Waits until the rows' (host, service) pairs, in order, equal `expected` (["web1/cpu", …]). */
export async function waitForRows(page, expected) {
  try {
    await page.waitForFunction((want) => {
      const got = [...document.querySelectorAll('#problem-rows tr.row')]
        .map((tr) => `${tr.querySelector('.c-host').textContent}/${tr.querySelector('.c-service').textContent}`);
      return JSON.stringify(got) === JSON.stringify(want);
    }, expected, { timeout: WAIT_MS });
  } catch (err) {
    const rows = await readRows(page).catch(() => []);
    throw new Error(`rows never became ${JSON.stringify(expected)}; last seen ${JSON.stringify(rows.map((r) => `${r.host}/${r.service}`))}\n${err.message}`);
  }
}

/** Computed background colour of the state badge in the row for host/service, as [r, g, b]. */
export async function badgeColour(page, host, service) {
  const css = await page.$$eval('#problem-rows tr', (trs, [h, s]) => {
    const tr = trs.find((t) => t.querySelector('.c-host').textContent === h && t.querySelector('.c-service').textContent === s);
    return tr ? getComputedStyle(tr.querySelector('.c-state .badge')).backgroundColor : null;
  }, [host, service]);
  assert.ok(css, `no row for ${host}/${service}`);
  const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(css);
  assert.ok(m, `unexpected colour ${css}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** Rough colour families, so the palette can be tuned without rewriting tests. */
export const colour = {
  isRed: ([r, g, b]) => r > 170 && g < 110 && b < 110,
  isOrange: ([r, g, b]) => r > 200 && g >= 110 && g <= 210 && b < 90,
  isGreen: ([r, g, b]) => g > r + 40 && g > b + 40,
  isGrey: ([r, g, b]) => Math.max(r, g, b) - Math.min(r, g, b) < 40 && r > 60 && r < 200,
  isBlue: ([r, g, b]) => b > r + 60 && b > g + 20,
};

/** Asserts the page raised nothing alarming (optionally ignoring console errors matching `allow`). */
export function assertClean(problems, { allow = [] } = {}) {
  assert.deepEqual(problems.pageErrors, [], 'uncaught exceptions in the page');
  assert.deepEqual(problems.dialogs, [], 'a dialog opened');
  const errors = problems.consoleErrors.filter((text) => !allow.some((re) => re.test(text)));
  assert.deepEqual(errors, [], 'console errors (CSP violations show up here)');
}

/**
 * Saves a screenshot: under docs/ (the README's images) when STATECAST_SCREENSHOTS=1, otherwise
 * under target/screenshots/, so an ordinary test run leaves the working tree clean.
 */
export async function screenshot(page, name) {
  const dir = process.env.STATECAST_SCREENSHOTS === '1' ? 'docs' : join('target', 'screenshots');
  const file = resolve(repoRoot, dir, name);
  mkdirSync(dirname(file), { recursive: true });
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

/** ISO time `secondsAgo` seconds before now. */
export function ago(secondsAgo) {
  return new Date(Date.now() - secondsAgo * 1000).toISOString();
}
