// The graphs against the real server: the details panel's graph of one key (stored series from
// /api/series, state bands and an ack mark from history, live points from `metrics` frames) and
// the Graphs tab (a query's series with a legend, live, kept in the URL across a reload). The
// chart's data is read through the page's window.statecast.graphs hook and the chart box's data
// attributes, never from pixels.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, openDashboard, postEvents, assertClean, screenshot, WAIT_MS } from './helpers.mjs';

const MIN = 60_000;
const NOW = Date.now();
const at = (/** @type {number} */ ms) => new Date(ms).toISOString();
const EVIL = '<img src=x onerror="window.__pwned=1">app-3';

const suite = browserSuite({
  seed: async (server) => {
    // web1/cpu: a metric every minute for the last 50 minutes; ok, then warning 30 minutes ago,
    // critical 15 minutes ago (two changes: three state bands).
    const cpu = [];
    for (let i = 50; i >= 1; i -= 1) {
      const state = i > 30 ? 'ok' : i > 15 ? 'warning' : 'critical';
      cpu.push({ host: 'web1', service: 'cpu', state, metric: 10 + (i % 5), time: at(NOW - i * MIN) });
    }
    await postEvents(server, cpu);
    // Three hosts' load (one with markup in its name) and one key the Graphs query leaves out.
    const load = [];
    for (let i = 30; i >= 1; i -= 1) {
      for (const host of ['app-1', 'app-2', EVIL]) load.push({ host, service: 'load', state: 'ok', metric: i / 10, time: at(NOW - i * MIN) });
      load.push({ host: 'db-1', service: 'disk', state: 'ok', metric: 50, time: at(NOW - i * MIN) });
    }
    await postEvents(server, load);
    const res = await fetch(`http://${server.http}/api/ack`, {
      method: 'POST',
      body: JSON.stringify({ host: 'web1', service: 'cpu', note: 'on it', by: 'ann' }),
    });
    assert.equal(res.status, 200, await res.text());
  },
});

/** @param {import('playwright-core').Page} page */
const graphs = (page) => page.evaluate(() => window.statecast.graphs);

test('the details graph: stored series, state bands, an ack mark, then live points', async () => {
  const { page, context, problems } = await openDashboard(suite.browser, suite.server);
  try {
    await page.click(`#problem-rows tr.row[data-key='${JSON.stringify(['web1', 'cpu'])}']`);
    await page.waitForFunction(() => window.statecast.graphs.details.points > 0, null, { timeout: WAIT_MS });
    const drawn = await graphs(page);
    // Min, max and avg of each stored bucket, reaching back to the first event 50 minutes ago.
    assert.ok(drawn.details.x[0] <= NOW - 49 * MIN, `first bucket at ${drawn.details.x[0]}, expected before ${NOW - 49 * MIN}`);
    assert.ok(drawn.details.points >= 3 * 45, `${drawn.details.points} points`);
    assert.equal(drawn.details.labels.length, 1);
    // Bands and marks come from history, which loads after the series: wait for them.
    await page.waitForFunction(() => document.getElementById('key-graph-chart')?.dataset.bands === '3', null, { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById('key-graph-chart')?.dataset.marks === '1', null, { timeout: WAIT_MS });
    assert.match(await page.textContent('.graph-marks'), /acknowledged by ann: on it/);
    await screenshot(page, 'graphs-details.png');

    // Live: a new value reaches the open graph through a `metrics` frame (the page does not ask
    // /api/series again).
    const before = drawn.details.x.length;
    await postEvents(suite.server, [{ host: 'web1', service: 'cpu', state: 'critical', metric: 5000 }]);
    await page.waitForFunction(() => window.statecast.graphs.details.last[0] === 5000, null, { timeout: WAIT_MS });
    assert.ok((await graphs(page)).details.x.length >= before);

    // Another range asks again; the stored values are the same buckets, coarser or not.
    await page.click('.range-buttons button[data-range="24h"]');
    await page.waitForFunction(() => document.querySelector('.range-buttons button[data-range="24h"]')?.getAttribute('aria-pressed') === 'true');
    await page.waitForFunction(() => window.statecast.graphs.details.points > 0, null, { timeout: WAIT_MS });
    assertClean(problems);
  } finally {
    await context.close();
  }
});

test('the Graphs tab: a query\'s series with a legend, live, kept in the URL over a reload', async () => {
  const { page, context, problems } = await openDashboard(suite.browser, suite.server, { path: '/?view=graphs' });
  try {
    const query = 'service = "load"';
    await page.fill('#graphs-query', query);
    await page.selectOption('#graphs-range', '6h');
    await page.click('#graphs-submit');
    const want = ['app-1 · load', 'app-2 · load', `${EVIL} · load`].sort();
    await page.waitForFunction((n) => window.statecast.graphs.tab.labels.length === n, want.length, { timeout: WAIT_MS });
    assert.deepEqual([...(await graphs(page)).tab.labels].sort(), want);
    // The legend names each series, as text: the host's markup is not an element.
    const legend = await page.$$eval('#graphs-chart .u-legend .u-series .u-label', (ls) => ls.map((l) => l.textContent));
    assert.deepEqual(legend.filter((l) => l.includes('load')).sort(), want);
    assert.equal(await page.$('#graphs-chart img'), null);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.textContent('#graphs-count'), '3 series');
    const url = new URL(page.url());
    assert.deepEqual([url.searchParams.get('view'), url.searchParams.get('graph'), url.searchParams.get('range')], ['graphs', query, '6h']);
    await screenshot(page, 'graphs-tab.png');

    // Live: app-2's next value is on the chart without asking the server again.
    await postEvents(suite.server, [{ host: 'app-2', service: 'load', state: 'ok', metric: 7777 }]);
    await page.waitForFunction(() => window.statecast.graphs.tab.last.includes(7777), null, { timeout: WAIT_MS });

    // A reload draws the same graph from the URL.
    await page.reload();
    await page.waitForFunction((n) => window.statecast?.graphs.tab.labels.length === n, want.length, { timeout: WAIT_MS });
    assert.deepEqual([...(await graphs(page)).tab.labels].sort(), want);
    assert.equal(await page.inputValue('#graphs-query'), query);
    assert.equal(await page.inputValue('#graphs-range'), '6h');
    assert.equal(await page.getAttribute('#tab-graphs', 'aria-selected'), 'true');

    // A query the server refuses: its sentence is shown, nothing is drawn.
    await page.fill('#graphs-query', 'host = ');
    await page.click('#graphs-submit');
    await page.waitForFunction(() => document.getElementById('graphs-message')?.dataset.kind === 'error', null, { timeout: WAIT_MS });
    assert.notEqual((await page.textContent('#graphs-message')).trim(), '');
    assert.equal((await graphs(page)).tab.labels.length, 0);
    // Chromium logs the refused request (400) as a console error.
    assertClean(problems, { allow: [/status of 400/] });
  } finally {
    await context.close();
  }
});
