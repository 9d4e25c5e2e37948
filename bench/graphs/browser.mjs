// Graphs benchmark (issue 23): the Graphs tab in Debian's headless chromium drawing 50 series
// × 1 day at 1-minute resolution (72,000 points from GET /api/series), updated live by the
// `metrics` frames while every series gets a value each second. Measured through the DevTools
// protocol, against the same page on its Problems tab with the same live stream, in the same
// run (the ratio is what the graph costs).
//
//   node bench/graphs/browser.mjs --bin target/release/statecast --seconds 30 [--page static]
//
// Phases, one server and one page: seed a day of 1-minute values for 50 keys (explicit event
// times), start the live stream (one value per key per second, its metric the poster's clock,
// ms since the start; every key has a state, as live values need), open the page on the Problems tab with the graph in the URL (not drawn),
// measure; then show the Graphs tab, time its first draw (click → a frame with 50 series drawn),
// measure again. Figures per phase: main-thread busy % (CDP Performance.getMetrics TaskDuration:
// thread CPU time over wall time), script %, long tasks, frames/s, JS heap, metrics frames/s;
// in the graphs phase the live lag: how long ago the poster sent the newest value the chart
// holds (sampled every 0.5 s; the freshest and the stalest of the 50 series). Prints one JSON
// line and a summary on stderr. Not a test: no assertions on timing.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, tmpdir } from 'node:os';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const require = createRequire(join(root, 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

function parseArgs(argv) {
  const o = { bin: join(root, 'target', 'release', 'statecast'), page: join(root, 'static'), seconds: 30, warmup: 5, series: 50, hours: 24, chromium: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--bin') o.bin = v();
    else if (a === '--page') o.page = resolve(v());
    else if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--warmup') o.warmup = Number(v());
    else if (a === '--series') o.series = Number(v());
    else if (a === '--hours') o.hours = Number(v());
    else if (a === '--chromium') o.chromium = v();
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const args = parseArgs(process.argv.slice(2));
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const log = (...a) => console.error('[graphs]', ...a);
const MIN = 60_000;

/** A data directory of its own (series of a day live on disk, as in production), removed at the end. */
const dataDir = mkdtempSync(join(tmpdir(), 'statecast-graphs-bench-'));

function startServer() {
  const proc = spawn(args.bin, [
    '--tcp', '127.0.0.1:0', '--udp', 'off', '--http', '127.0.0.1:0', '--data-dir', dataDir,
    '--stats-interval', '1s', '--max-body-bytes', '64MiB',
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let err = '';
  proc.stderr.on('data', (c) => { err += c; if (err.length > 1e5) err = err.slice(-5e4); });
  return new Promise((res, rej) => {
    let out = '';
    proc.stdout.on('data', (c) => {
      out += c;
      const nl = out.indexOf('\n');
      if (nl >= 0) res({ proc, http: JSON.parse(out.slice(0, nl)).http });
    });
    proc.on('exit', (code) => rej(new Error(`statecast exited ${code}: ${err}`)));
  });
}

async function post(http, events) {
  const res = await fetch(`http://${http}/api/event`, { method: 'POST', body: JSON.stringify(events) });
  if (!res.ok) throw new Error(`POST ${res.status}: ${await res.text()}`);
  await res.arrayBuffer();
}

const INIT = () => {
  const s = { frames: 0, longTasks: 0, longTaskMs: 0, metricsFrames: 0, metricsValues: 0 };
  window.__bench = s;
  const tick = () => { s.frames += 1; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) { s.longTasks += 1; s.longTaskMs += e.duration; }
    }).observe({ type: 'longtask' });
  } catch { /* no long task API */ }
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...a) {
      super(...a);
      this.addEventListener('message', (m) => {
        // A metrics frame may come alone or inside a batch message (/ws?batch=true).
        if (typeof m.data === 'string' && m.data.includes('"type":"metrics"')) {
          s.metricsFrames += (m.data.match(/"type":"metrics"/g) ?? []).length;
          const f = JSON.parse(m.data);
          for (const x of f.type === 'batch' ? f.frames : [f]) if (x.type === 'metrics') s.metricsValues += x.values.length;
        }
      });
    }
  };
};

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

const metricsOf = async (cdp) => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));

/** Busy %, script %, long tasks, frames/s over `seconds`; `sample` runs every 0.5 s. */
async function measure(page, cdp, seconds, sample = async () => {}) {
  const m0 = await metricsOf(cdp);
  const s0 = await page.evaluate(() => ({ ...window.__bench }));
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    await sleep(500);
    await sample();
  }
  const wall = (performance.now() - start) / 1000;
  const m1 = await metricsOf(cdp);
  const s1 = await page.evaluate(() => ({ ...window.__bench }));
  const d = (k) => m1[k] - m0[k];
  return {
    seconds: wall,
    busy_pct: (100 * d('TaskDuration')) / wall,
    script_pct: (100 * d('ScriptDuration')) / wall,
    long_tasks: s1.longTasks - s0.longTasks,
    long_task_ms: s1.longTaskMs - s0.longTaskMs,
    fps: (s1.frames - s0.frames) / wall,
    metrics_frames_per_s: (s1.metricsFrames - s0.metricsFrames) / wall,
    metrics_values_per_s: (s1.metricsValues - s0.metricsValues) / wall,
    heap_mib: m1.JSHeapUsedSize / 1048576,
  };
}

const quantile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;

const server = await startServer();
const { http } = server;
const T0 = Date.now();
const keys = Array.from({ length: args.series }, (_, i) => `bench-${String(i).padStart(2, '0')}`);
// A day (by default) of one value per minute per key, oldest first, in POSTs of 10,000 events.
const minutes = Math.round(args.hours * 60);
let seed = [];
const seedStart = performance.now();
for (let m = minutes; m >= 1; m -= 1) {
  const time = new Date(T0 - m * MIN).toISOString();
  for (const [i, host] of keys.entries()) seed.push({ host, service: 'bench', state: 'ok', metric: 50 + 40 * Math.sin((m + i * 7) / 60), time, ttl: 86400 * 3 });
  if (seed.length >= 10_000) { await post(http, seed); seed = []; }
}
if (seed.length) await post(http, seed);
log(`seeded ${keys.length} series × ${minutes} minutes in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);

// The live stream: each key gets a value every second, its metric the poster's clock (ms since T0).
const stop = new AbortController();
const driver = (async () => {
  let next = performance.now();
  while (!stop.signal.aborted) {
    const now = Date.now();
    await post(http, keys.map((host) => ({ host, service: 'bench', state: 'ok', metric: now - T0, ttl: 86400 * 3 })));
    next += 1000;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
  }
})();

const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // A document answered through request routing has no address, so chromium counts it as
    // public and blocks its websocket to loopback (Local Network Access), as bench/storm says.
    '--disable-features=LocalNetworkAccessChecks'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-GB', timezoneId: 'UTC' });
  await context.addInitScript(INIT);
  // The page from its directory (--page, default static/), with the server's own headers (CSP,
  // no-cache), as bench/storm does: the binary need not be rebuilt for a page change.
  await context.route(`http://${http}/**`, async (route) => {
    const url = new URL(route.request().url());
    const rel = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    const file = join(args.page, rel);
    if (route.request().method() !== 'GET' || rel.startsWith('api/') || rel === 'metrics' || !existsSync(file)) return route.continue();
    const response = await route.fetch();
    return route.fulfill({ response, body: readFileSync(file), headers: { ...response.headers(), 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' } });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  const range = args.hours <= 1 ? '1h' : args.hours <= 6 ? '6h' : args.hours <= 24 ? '24h' : '7d';
  await page.goto(`http://${http}/?graph=${encodeURIComponent('service = "bench"')}&range=${range}`);
  await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'live', null, { timeout: 60_000 });

  await sleep(args.warmup * 1000);
  const problems = await measure(page, cdp, args.seconds);
  log(`problems tab: busy ${problems.busy_pct.toFixed(1)}% (script ${problems.script_pct.toFixed(1)}), ${problems.fps.toFixed(1)} frames/s, ${problems.metrics_frames_per_s.toFixed(2)} metrics frames/s (${problems.metrics_values_per_s.toFixed(0)} values/s), heap ${problems.heap_mib.toFixed(1)} MiB`);

  // The Graphs tab: its first draw (the URL's graph), timed in the page from the click to the
  // frame after the chart holds every series.
  const firstDraw = await page.evaluate((n) => new Promise((res) => {
    const t = performance.now();
    document.getElementById('tab-graphs').click();
    const check = () => {
      const box = document.getElementById('graphs-chart');
      if (box.dataset.series === String(n) && Number(box.dataset.points) > 0) requestAnimationFrame(() => res(performance.now() - t));
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }), keys.length);
  const drawn = await page.evaluate(() => {
    const g = window.statecast.graphs.tab;
    const r = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/series')).at(-1);
    return { series: g.labels.length, points: g.points, buckets: g.x.length, fetch_ms: r?.duration ?? null, answer_kib: r ? r.encodedBodySize / 1024 : null };
  });
  log(`graphs tab: first draw ${firstDraw.toFixed(0)} ms after the click (${drawn.series} series, ${drawn.points} points in ${drawn.buckets} buckets; /api/series ${drawn.fetch_ms?.toFixed(0)} ms, ${drawn.answer_kib?.toFixed(0)} KiB)`);

  await sleep(args.warmup * 1000);
  const fresh = [];
  const stale = [];
  const graphs = await measure(page, cdp, args.seconds, async () => {
    const [newest, now] = await page.evaluate(() => [window.statecast.graphs.tab.newest, Date.now()]);
    const values = newest.filter((v) => typeof v === 'number');
    if (values.length !== keys.length) return;
    fresh.push(now - T0 - Math.max(...values));
    stale.push(now - T0 - Math.min(...values));
  });
  fresh.sort((a, b) => a - b);
  stale.sort((a, b) => a - b);
  graphs.lag_ms = {
    freshest: { p50: quantile(fresh, 0.5), p95: quantile(fresh, 0.95), max: fresh.at(-1) ?? null },
    stalest: { p50: quantile(stale, 0.5), p95: quantile(stale, 0.95), max: stale.at(-1) ?? null },
    samples: fresh.length,
  };
  const still = await page.evaluate(() => window.statecast.graphs.tab);
  log(`graphs tab live: busy ${graphs.busy_pct.toFixed(1)}% (script ${graphs.script_pct.toFixed(1)}), ${graphs.long_tasks} long tasks (${graphs.long_task_ms.toFixed(0)} ms), ${graphs.fps.toFixed(1)} frames/s, lag freshest p50/p95/max ${graphs.lag_ms.freshest.p50}/${graphs.lag_ms.freshest.p95}/${graphs.lag_ms.freshest.max} ms, stalest p50/p95/max ${graphs.lag_ms.stalest.p50}/${graphs.lag_ms.stalest.p95}/${graphs.lag_ms.stalest.max} ms, heap ${graphs.heap_mib.toFixed(1)} MiB`);
  log(`ratios graphs ÷ problems (same run): busy ${(graphs.busy_pct / problems.busy_pct).toFixed(2)}, script ${(graphs.script_pct / problems.script_pct).toFixed(2)}, frames/s ${(graphs.fps / problems.fps).toFixed(2)}`);
  console.log(JSON.stringify({
    tool: 'graphs-browser', series: keys.length, minutes, first_draw_ms: firstDraw, drawn, problems, graphs,
    still_drawn: { series: still.labels.length, points: still.points },
    page_errors: errors.slice(0, 3), loadavg: loadavg().map((x) => Number(x.toFixed(2))),
  }));
  await context.close();
} finally {
  stop.abort();
  await driver.catch(() => {});
  await browser.close();
  server.proc.kill('SIGTERM');
  await new Promise((r) => { server.proc.once('exit', r); });
  rmSync(dataDir, { recursive: true, force: true });
}
