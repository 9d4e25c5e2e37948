// Browser storm benchmark (issue 24): the dashboard in Debian's headless chromium while
// statecast pushes 1,000 changes/s, measured through the DevTools protocol, for two builds of the
// page in the same run: a baseline (the page at another commit, e.g. main) and the page under test.
//
// Both pages are served by the same release statecast binary: the page's files (/, /app.js,
// /js/…, /style.css) are answered from a directory through playwright's request routing (with
// the server's own response headers, CSP included), so the only difference between the two runs
// is the page. Each run gets a fresh server seeded with the same problems and the same change
// sequence (a fixed seed).
//
//   node --experimental-websocket bench/storm/browser.mjs --bin target/release/statecast \
//     --page base=/tmp/base-static --page new=static --scenario problems --seconds 60
//
// Scenarios: `problems` — 10,000 problems (200 hosts × 50 services, critical/warning), every
// posted event flips one of them between critical and warning (a change that moves it);
// `grid` — 500 hosts × 50 services (one third ok), `?view=grid`, events flip ok ↔ critical.
// Figures per page: main-thread busy % (CDP Performance.getMetrics TaskDuration, in thread CPU
// time, over wall time; a trace of the profile window gives the wall-clock figure too),
// long tasks (PerformanceObserver), frames/s (a requestAnimationFrame counter), lag behind the
// server's seq (a websocket client in this process sees every seq first: lag = how long ago the
// server had passed the page's seq, sampled every 0.5 s), resyncs (the server's
// statecast_ws_resyncs_total), JS heap, DOM nodes, and the first render of the snapshot
// (snapshot frame received → the first frame painted with rows in it).
// `--profile N` profiles N more seconds after the measured window (trace events by kind, JS self
// time); `--trace FILE` also writes that window's whole trace, with DevTools' invalidation
// tracking (which nodes' style, layout and paint each frame invalidated), to FILE.<page>.json.
// Prints one JSON line per page and a summary on stderr. Not a test: no assertions on timing.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const require = createRequire(join(root, 'tests', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

function parseArgs(argv) {
  const o = { bin: join(root, 'target', 'release', 'statecast'), pages: [], scenario: 'problems', seconds: 60, rate: 1000, warmup: 5, chromium: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--bin') o.bin = v();
    else if (a === '--page') { const [name, dir] = v().split('='); o.pages.push({ name, dir: resolve(dir) }); }
    else if (a === '--scenario') o.scenario = v();
    else if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--rate') o.rate = Number(v());
    else if (a === '--warmup') o.warmup = Number(v());
    else if (a === '--chromium') o.chromium = v();
    else if (a === '--profile') o.profile = Number(v());
    else if (a === '--trace') o.trace = v();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.pages.length) o.pages.push({ name: 'page', dir: join(root, 'static') });
  if (!['problems', 'grid'].includes(o.scenario)) throw new Error('--scenario problems|grid');
  return o;
}

const args = parseArgs(process.argv.slice(2));
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const log = (...a) => console.error('[storm]', ...a);

function startServer() {
  const proc = spawn(args.bin, [
    '--tcp', '127.0.0.1:0', '--udp', 'off', '--http', '127.0.0.1:0', '--data-dir', 'off',
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

async function metric(http, name) {
  const text = await (await fetch(`http://${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/** The scenario's keys and their starting states. */
function seedEvents() {
  const events = [];
  const [hosts, services] = args.scenario === 'grid' ? [500, 50] : [200, 50];
  for (let h = 0; h < hosts; h += 1) {
    for (let s = 0; s < services; s += 1) {
      const state = args.scenario === 'grid' ? ['critical', 'warning', 'ok'][(h + s) % 3] : ((h + s) % 4 ? 'warning' : 'critical');
      events.push({ host: `host-${h}`, service: `svc-${s}`, state, metric: h * s, description: `seeded ${h}/${s}`, ttl: 86400 });
    }
  }
  return events;
}

/** A websocket watcher: the server's seq as it advances, with the time each was first seen. */
function watchSeq(http) {
  const seen = []; // [seq, ms]
  const ws = new WebSocket(`ws://${http}/ws`);
  ws.onmessage = (m) => {
    const s = /"seq":(\d+)/.exec(typeof m.data === 'string' ? m.data : '');
    if (s) {
      const seq = Number(s[1]);
      if (!seen.length || seq > seen.at(-1)[0]) seen.push([seq, Date.now()]);
    }
  };
  return { seen, close: () => ws.close() };
}

/** How long before `now` (Date.now() ms) the server had passed `pageSeq`: 0 when the page
 *  has the latest seq the watcher saw. */
function lagAt(seen, pageSeq, now) {
  // The first time the server was past the page's seq.
  let lo = 0;
  let hi = seen.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (seen[mid][0] <= pageSeq) lo = mid + 1;
    else hi = mid;
  }
  return lo < seen.length ? Math.max(0, now - seen[lo][1]) : 0;
}

/**
 * What the main thread spends its time on, over `seconds` more of the storm (after the measured
 * window, so profiling does not disturb the figures): the renderer main thread's trace events by
 * kind (self time: a parent's time minus its children's), and the JS CPU profile's functions by
 * self time.
 */
async function profileWindow(browser, page, cdp, seconds, page0name) {
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
  // --trace: what each frame invalidates (the style, layout and paint invalidation tracking of
  // DevTools' "Enable advanced paint instrumentation"), written whole to a file per page.
  const tracking = args.trace ? ['disabled-by-default-devtools.timeline.invalidationTracking', 'disabled-by-default-devtools.timeline.frame', 'disabled-by-default-blink.invalidation'] : [];
  await browser.startTracing(page, { categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', ...tracking] });
  await cdp.send('Profiler.start');
  await sleep(seconds * 1000);
  const { profile } = await cdp.send('Profiler.stop');
  const raw = (await browser.stopTracing()).toString('utf8');
  if (args.trace) writeFileSync(`${args.trace}.${page0name}.json`, raw);
  const trace = JSON.parse(raw);
  const all = trace.traceEvents ?? trace;
  // The renderer main thread (CrRendererMain) with the most events; B/E pairs made complete.
  const renderers = new Set(all.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`));
  const count = new Map();
  for (const e of all) if (renderers.has(`${e.pid}:${e.tid}`)) count.set(`${e.pid}:${e.tid}`, (count.get(`${e.pid}:${e.tid}`) ?? 0) + 1);
  const [main] = [...count.entries()].sort((a, b) => b[1] - a[1])[0] ?? [];
  const open = [];
  const mine = [];
  for (const e of all) {
    if (`${e.pid}:${e.tid}` !== main) continue;
    if (e.ph === 'X' && typeof e.dur === 'number') mine.push(e);
    else if (e.ph === 'B') open.push(e);
    else if (e.ph === 'E' && open.length) { const b = open.pop(); mine.push({ name: b.name, ts: b.ts, dur: e.ts - b.ts }); }
  }
  mine.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
  const self = new Map();
  const stack = [];
  let topLevel = 0; // time in top-level tasks: the main thread's busy time (wall clock)
  const span = mine.length ? Math.max(...mine.map((e) => e.ts + e.dur)) - mine[0].ts : seconds * 1e6;
  for (const e of mine) {
    while (stack.length && stack.at(-1).ts + stack.at(-1).dur <= e.ts) stack.pop();
    if (!stack.length) topLevel += e.dur;
    if (stack.length) self.set(stack.at(-1).name, (self.get(stack.at(-1).name) ?? 0) - e.dur);
    self.set(e.name, (self.get(e.name) ?? 0) + e.dur);
    stack.push(e);
  }
  const kinds = [...self.entries()].filter(([, us]) => us > 0).sort((a, b) => b[1] - a[1]).slice(0, 10)
    .map(([name, us]) => ({ name, pct: Number(((100 * us) / span).toFixed(1)) }));
  const hits = new Map();
  const dt = profile.timeDeltas ?? [];
  const nodeById = new Map(profile.nodes.map((n) => [n.id, n]));
  profile.samples.forEach((id, i) => {
    const n = nodeById.get(id);
    const f = n.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? `${f.url.replace(/^.*?\/\/[^/]+\//, '')}:${f.lineNumber + 1}` : ''}`.trim();
    hits.set(name, (hits.get(name) ?? 0) + (dt[i] ?? 0));
  });
  const functions = [...hits.entries()].filter(([n]) => n !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, 12)
    .map(([name, us]) => ({ name, pct: Number(((100 * us) / 1e6 / seconds).toFixed(1)) }));
  const busy = Number(((100 * topLevel) / span).toFixed(1));
  log(`profile over ${seconds}s — main thread busy ${busy}% (trace); by kind (% of wall): ${kinds.map((k) => `${k.name} ${k.pct}`).join(', ')}`);
  log(`profile — JS self time (% of wall): ${functions.map((f) => `${f.name} ${f.pct}`).join(', ')}`);
  return { seconds, busy_pct: busy, kinds, functions };
}

const INIT = () => {
  const s = { frames: 0, longTasks: 0, longTaskMs: 0, snapshotAt: null, firstRender: null, delays: [] };
  window.__storm = s;
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
        // Change frames of the storm carry the poster's Date.now() (one clock): how late the page
        // gets to handle each (a busy main thread delays the message event itself).
        if (typeof m.data === 'string') {
          const sent = /"sent_ms":"?(\d+)/.exec(m.data);
          if (sent && s.delays.length < 500_000) s.delays.push(Date.now() - Number(sent[1]));
        }
        if (s.snapshotAt === null && typeof m.data === 'string' && m.data.includes('"type":"snapshot"')) {
          s.snapshotAt = performance.now();
          const check = () => {
            const drawn = document.querySelector('#problem-rows tr.row .c-host') || document.querySelector('#grid-rows td.cell');
            if (drawn) setTimeout(() => { s.firstRender = performance.now() - s.snapshotAt; }, 0); // after this frame's paint
            else requestAnimationFrame(check);
          };
          requestAnimationFrame(check);
        }
      });
    }
  };
};

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

async function runPage(browser, page0) {
  const server = await startServer();
  const { http } = server;
  const seed = seedEvents();
  for (let i = 0; i < seed.length; i += 5000) await post(http, seed.slice(i, i + 5000));
  const states = new Map(seed.map((e) => [`${e.host}\u0000${e.service}`, e]));
  const keys = [...states.keys()];
  const watcher = watchSeq(http);

  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-GB', timezoneId: 'UTC' });
  await context.addInitScript(INIT);
  // For experiments only (what a stylesheet change would save): STORM_CSS is added to the page.
  if (process.env.STORM_CSS) {
    await context.addInitScript((css) => {
      document.addEventListener('DOMContentLoaded', () => {
        const s = new CSSStyleSheet();
        s.replaceSync(css);
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, s];
      });
    }, process.env.STORM_CSS);
  }
  // The page under test from its directory, with the server's own headers (CSP, no-cache).
  await context.route(`http://${http}/**`, async (route) => {
    const url = new URL(route.request().url());
    const rel = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    const file = join(page0.dir, rel);
    if (route.request().method() !== 'GET' || rel.startsWith('api/') || rel === 'metrics' || !existsSync(file)) return route.continue();
    const response = await route.fetch();
    return route.fulfill({ response, body: readFileSync(file), headers: { ...response.headers(), 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' } });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const cdp = await context.newCDPSession(page);
  // Thread CPU time, not wall time: on a machine shared with builds a descheduled main thread
  // would otherwise count as busy.
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  const t0 = performance.now();
  await page.goto(`http://${http}/${args.scenario === 'grid' ? '?view=grid' : ''}`);
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  try {
    await page.waitForFunction(() => window.__storm.firstRender !== null, null, { timeout: 60_000 });
  } catch (e) {
    const state = await page.evaluate(() => ({ storm: window.__storm, conn: document.getElementById('conn')?.dataset.state, rows: document.querySelectorAll('#problem-rows tr').length })).catch((x) => String(x));
    throw new Error(`${page0.name}: no first render: ${JSON.stringify(state)} errors ${JSON.stringify(errors)}: ${e.message}`, { cause: e });
  }
  const ready = await page.evaluate(() => ({ firstRender: window.__storm.firstRender, snapshotAt: window.__storm.snapshotAt }));
  log(`${page0.name}: first render ${ready.firstRender.toFixed(0)} ms after the snapshot frame (${(ready.snapshotAt).toFixed(0)} ms after navigation; goto at +${(performance.now() - t0).toFixed(0)} ms)`);

  // The change storm: `rate` changes/s in POSTs every 20 ms; a fixed seed, the same for every page.
  let rnd = 12345;
  const random = (n) => { rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0; return rnd % n; };
  // Set from outside the driver's loop (after the measurement), so a flag the loop can see change:
  // a plain `let` read in the loop's condition looks unmodified to a reader (and to eslint).
  const stop = new AbortController();
  let posted = 0;
  const perTick = Math.max(1, Math.round(args.rate / 50));
  const inFlight = new Set(); // POSTs under way: at most 8, so a slow answer does not slow the rate
  const driver = (async () => {
    let next = performance.now();
    while (!stop.signal.aborted) {
      while (inFlight.size >= 8) await Promise.race(inFlight);
      const batch = [];
      for (let i = 0; i < perTick; i += 1) {
        const e = states.get(keys[random(keys.length)]);
        e.state = args.scenario === 'grid' ? (e.state === 'ok' ? 'critical' : 'ok') : (e.state === 'critical' ? 'warning' : 'critical');
        e.metric = random(1000);
        batch.push({ ...e, sent_ms: Date.now() });
      }
      const p = post(http, batch).then(() => { posted += batch.length; });
      inFlight.add(p);
      p.finally(() => inFlight.delete(p));
      next += 20;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
    }
    await Promise.all(inFlight);
  })();

  await sleep(args.warmup * 1000);
  const resyncs0 = await metric(http, 'statecast_ws_resyncs_total');
  const m0 = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const s0 = await page.evaluate(() => ({ ...window.__storm, delays: window.__storm.delays.length }));
  const posted0 = posted;
  const start = performance.now();
  const lags = [];
  let heapMax = 0;
  while (performance.now() - start < args.seconds * 1000) {
    await sleep(500);
    // Read in the page with the page's own clock (the same system clock as the watcher's): a
    // slow round trip to the page does not count as lag.
    const [pageSeq, at] = await page.evaluate(() => [window.statecast.seq, Date.now()]);
    lags.push(lagAt(watcher.seen, pageSeq, at));
    if (lags.length % 10 === 0) {
      const m = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((x) => [x.name, x.value]));
      heapMax = Math.max(heapMax, m.JSHeapUsedSize);
    }
  }
  const wall = (performance.now() - start) / 1000;
  const m1 = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const s1 = await page.evaluate(() => ({ ...window.__storm, delays: window.__storm.delays.length }));
  const delays = (await page.evaluate(([from, to]) => window.__storm.delays.slice(from, to), [s0.delays, s1.delays])).sort((a, b) => a - b);
  const dq = (p) => delays[Math.min(delays.length - 1, Math.floor(p * delays.length))] ?? 0;
  const postedIn = posted - posted0;
  const profile = args.profile ? await profileWindow(browser, page, cdp, args.profile, page0.name) : null;
  stop.abort();
  await driver;
  const resyncs = (await metric(http, 'statecast_ws_resyncs_total')) - resyncs0;
  const slowClosed = await metric(http, 'statecast_ws_slow_closed_total');
  // Caught up afterwards? (the page's seq reaches the server's once the storm is over)
  const finalSeq = watcher.seen.at(-1)?.[0] ?? null;
  const caughtUp = await page.waitForFunction((s) => window.statecast.seq >= s, finalSeq, { timeout: 30_000 }).then(() => true, () => false);
  const filled = await page.evaluate(() => ({ rows: document.querySelectorAll('#problem-rows tr').length, filledRows: document.querySelectorAll('#problem-rows tr.row .c-host').length }));
  heapMax = Math.max(heapMax, m1.JSHeapUsedSize);
  watcher.close();
  await context.close();
  server.proc.kill('SIGTERM');

  const d = (k) => m1[k] - m0[k];
  const sorted = [...lags].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
  const result = {
    tool: 'storm-browser',
    page: page0.name,
    scenario: args.scenario,
    seconds: wall,
    changes_per_s: postedIn / wall,
    busy_pct: (100 * d('TaskDuration')) / wall,
    script_pct: (100 * d('ScriptDuration')) / wall,
    layout_pct: (100 * d('LayoutDuration')) / wall,
    style_pct: (100 * d('RecalcStyleDuration')) / wall,
    long_tasks: s1.longTasks - s0.longTasks,
    long_task_pct: (100 * (s1.longTaskMs - s0.longTaskMs)) / 1000 / wall,
    fps: (s1.frames - s0.frames) / wall,
    lag_ms: { p50: q(0.5), p95: q(0.95), max: sorted.at(-1) ?? 0, samples: sorted.length },
    delay_ms: { p50: dq(0.5), p95: dq(0.95), p99: dq(0.99), max: delays.at(-1) ?? 0, changes: delays.length },
    resyncs,
    slow_closed: slowClosed,
    caught_up: caughtUp,
    heap_mib: { end: m1.JSHeapUsedSize / 1048576, max: heapMax / 1048576 },
    dom_nodes: m1.Nodes,
    rows: filled,
    first_render_ms: ready.firstRender,
    profile,
    page_errors: errors.slice(0, 3),
    loadavg: loadavg().map((x) => Number(x.toFixed(2))),
  };
  log(`${page0.name} ${args.scenario}: busy ${result.busy_pct.toFixed(1)}% (script ${result.script_pct.toFixed(1)}, layout ${result.layout_pct.toFixed(1)}, style ${result.style_pct.toFixed(1)}), ${result.fps.toFixed(1)} frames/s, seq lag p50/p95/max ${result.lag_ms.p50.toFixed(0)}/${result.lag_ms.p95.toFixed(0)}/${result.lag_ms.max.toFixed(0)} ms, change→page p50/p99/max ${result.delay_ms.p50}/${result.delay_ms.p99}/${result.delay_ms.max} ms, resyncs ${resyncs}, heap ${result.heap_mib.max.toFixed(1)} MiB, first render ${result.first_render_ms.toFixed(0)} ms, ${result.changes_per_s.toFixed(0)} changes/s, load ${result.loadavg.join(' ')}`);
  console.log(JSON.stringify(result));
  return result;
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // A document answered through request routing has no address, so chromium counts it as
    // public and blocks its websocket to loopback (Local Network Access): not what a real
    // page served by statecast meets.
    '--disable-features=LocalNetworkAccessChecks'],
});
try {
  for (const p of args.pages) await runPage(browser, p);
} finally {
  await browser.close();
}
