// Live values (issue 23): a service whose metric moves without a change of state (disk 91 % →
// 99 %, still critical) shows its new metric and description in the problems table, the grid's
// tooltip and the open details panel, from the server's `metrics` frames — without re-sorting,
// and without rewriting rows whose values did not move.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withDashboard, postEvents, waitForRows, readRows, assertClean, WAIT_MS } from './helpers.mjs';

const suite = browserSuite({
  server: { extraArgs: ['--metrics-interval', '0.1'] },
  seed: async (server) => {
    await postEvents(server, [
      { host: 'web-1', service: 'disk', state: 'critical', metric: 91, description: '91% used' },
      { host: 'web-2', service: 'disk', state: 'critical', metric: 95, description: '95% used', tags: ['prod'] },
      { host: 'web-3', service: 'cpu', state: 'warning', metric: 5, tags: ['prod'] },
    ]);
  },
});

/** Waits until the row of `host`/`service` shows `metric` and `description`. */
async function waitForValue(page, host, service, metric, description) {
  await page.waitForFunction(([h, s, m, d]) => [...document.querySelectorAll('#problem-rows tr.row')].some((tr) => tr.querySelector('.c-host').textContent === h
    && tr.querySelector('.c-service').textContent === s
    && tr.querySelector('.c-metric').textContent === m
    && tr.querySelector('.c-desc').textContent === d), [host, service, metric, description], { timeout: WAIT_MS });
}

test('the problems table follows metric-only updates in place, rewriting only the rows that moved', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await waitForRows(page, ['web-1/disk', 'web-2/disk', 'web-3/cpu']);
    // Watch the rows whose values will not move: a rewrite would rebuild their tags (ages tick
    // on their own, so only the tags are watched).
    await page.evaluate(() => {
      window.rewrites = 0;
      const observer = new MutationObserver((records) => { window.rewrites += records.length; });
      for (const tr of document.querySelectorAll('#problem-rows tr.row')) {
        if (tr.querySelector('.c-host').textContent !== 'web-1') observer.observe(tr.querySelector('.c-tags'), { subtree: true, childList: true });
      }
    });
    const logBefore = await page.$$eval('#log li', (lis) => lis.length);
    // The same state, and no state at all (collectd's way): neither is a change.
    await postEvents(suite.server, [{ host: 'web-1', service: 'disk', state: 'critical', metric: 97 }]);
    await postEvents(suite.server, [{ host: 'web-1', service: 'disk', metric: 99.1, description: '99.1% used' }]);
    await waitForValue(page, 'web-1', 'disk', '99.1', '99.1% used');
    // Still worst first, then longest-standing: no re-sort for a metric.
    await waitForRows(page, ['web-1/disk', 'web-2/disk', 'web-3/cpu']);
    const rows = await readRows(page);
    assert.equal(rows[0].state, 'critical');
    assert.equal(await page.evaluate(() => window.rewrites), 0, 'rows whose values did not move are not rewritten');
    assert.equal(await page.$$eval('#log li', (lis) => lis.length), logBefore, 'a moving value is not a transition');
    assertClean(problems);
  });
});

test('sorted by metric, a moving metric moves its row', async () => {
  await withDashboard(suite.browser, suite.server, { path: '/?sort=-metric' }, async ({ page, problems }) => {
    await postEvents(suite.server, [{ host: 'web-3', service: 'cpu', metric: 5 }]);
    await postEvents(suite.server, [{ host: 'web-1', service: 'disk', metric: 10 }]);
    await waitForRows(page, ['web-2/disk', 'web-1/disk', 'web-3/cpu']);
    await postEvents(suite.server, [{ host: 'web-3', service: 'cpu', metric: 500 }]);
    await waitForRows(page, ['web-3/cpu', 'web-2/disk', 'web-1/disk']);
    assertClean(problems);
  });
});

test('the details panel and the grid tooltip follow metric-only updates', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await waitForRows(page, ['web-1/disk', 'web-2/disk', 'web-3/cpu']);
    await page.click('#problem-rows tr.row[data-key=\'["web-2","disk"]\']');
    await page.waitForSelector('#details:not([hidden])');
    const metricShown = () => page.$$eval('#details-body dt', (dts) => dts.find((dt) => dt.textContent === 'Metric')?.nextElementSibling?.textContent ?? null);
    await postEvents(suite.server, [{ host: 'web-2', service: 'disk', metric: 96.5, description: '96.5% used' }]);
    await page.waitForFunction(() => [...document.querySelectorAll('#details-body dt')]
      .find((dt) => dt.textContent === 'Metric')?.nextElementSibling?.textContent === '96.5', null, { timeout: WAIT_MS });
    assert.equal(await metricShown(), '96.5');
    assert.match(await page.textContent('#details-body'), /96\.5% used/);
    await page.click('#details-close');

    // The grid: hover a cell (its tooltip is written then), then move the metric.
    await page.click('#tab-grid');
    const cell = '#grid td.cell.s-critical';
    await page.waitForSelector(cell);
    await page.hover(cell);
    await page.waitForFunction((sel) => document.querySelector(sel)?.getAttribute('title')?.includes('metric:'), cell, { timeout: WAIT_MS });
    const title = await page.getAttribute(cell, 'title');
    const host = title.includes('web-1') ? 'web-1' : 'web-2';
    await postEvents(suite.server, [{ host, service: 'disk', metric: 42.5 }]);
    await page.waitForFunction((sel) => document.querySelector(sel)?.getAttribute('title')?.includes('metric: 42.5'), cell, { timeout: WAIT_MS });
    assertClean(problems);
  });
});
