// A realistic page with several problems, at laptop and phone size: checks the layout holds
// (no horizontal scrolling, nothing cut off) and saves dashboard.png, dashboard-phone.png and the
// others (into docs/ with STATECAST_SCREENSHOTS=1, else target/screenshots/).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, sendRiemann, postEvents, readRows, assertClean,
  screenshot, ago,
} from './helpers.mjs';

/** Metric-only samples (no state: they change no state) every `everyMin` minutes over `hours`. */
function samples(host, service, hours, everyMin, value) {
  const out = [];
  for (let m = hours * 60; m > 0; m -= everyMin) out.push({ host, service, metric: value(m), time: ago(m * 60) });
  return out;
}

const suite = browserSuite({
  seed: async (server) => {
    // Metric history for the graphs: the 5xx rate over the last hour, cpu of five hosts over two.
    const rate = samples('web-eu-3', 'http 5xx rate', 1, 3, (m) => Number((0.004 + (m < 10 ? 0.18 : 0.01 * Math.abs(Math.sin(m / 7)))).toFixed(4)));
    const cpus = ['web-eu-2', 'web-us-1', 'web-us-2', 'cache-1', 'db-replica-2']
      .flatMap((host, i) => samples(host, 'cpu', 2, 2, (m) => Number((0.2 + 0.1 * i + 0.08 * Math.sin((m + 9 * i) / 11)).toFixed(3))));
    await postEvents(server, [...cpus, ...rate.filter((e) => e.time < ago(3600))]);
    // A flapping service, so its history has something to show …
    for (const [state, secondsAgo, description] of [
      ['critical', 5 * 3600, '9.1% of requests failing (threshold 5%)'],
      ['ok', 4 * 3600 + 40 * 60, '0.2% of requests failing'],
      ['warning', 3600 + 12 * 60, '3.9% of requests failing (threshold 2%)'],
      ['ok', 3600, '0.4% of requests failing'],
    ]) {
      await postEvents(server, [{ host: 'web-eu-3', service: 'http 5xx rate', state, description, time: ago(secondsAgo) }]);
    }
    await postEvents(server, rate.filter((e) => e.time >= ago(3600) && e.time < ago(7 * 60 + 12)));
    // State that has been around for a while (times in the past) …
    await postEvents(server, [
      { host: 'db-primary-1', service: 'postgres replication lag', state: 'critical', metric: 412.7, description: 'replica db-replica-2 is 412 s behind the primary', tags: ['prod', 'postgres'], time: ago(2 * 3600 + 14 * 60), team: 'data' },
      { host: 'web-eu-3', service: 'http 5xx rate', state: 'critical', metric: 0.184, description: '18.4% of requests failing (threshold 5%)', tags: ['prod', 'frontend'], time: ago(7 * 60 + 12) },
      { host: 'cache-2', service: 'memory', state: 'warning', metric: 0.91, description: '91% of maxmemory used; evictions started', tags: ['prod'], time: ago(3 * 3600 + 5 * 60) },
      { host: 'web-eu-1', service: 'disk /var', state: 'warning', metric: 86, description: '86% used, 12 GiB free', tags: ['prod', 'frontend'], time: ago(41 * 60) },
      { host: 'batch-7', service: 'nightly-export', state: 'expired', description: 'no heartbeat for 10 minutes', tags: ['batch'], time: ago(26 * 60) },
      { host: 'lb-1', service: 'tls certificate', state: 'unknown', metric: 13, description: 'expires in 13 days', tags: ['edge'], time: ago(3 * 86400 + 4 * 3600) },
      ...['web-eu-2', 'web-us-1', 'web-us-2', 'cache-1', 'db-replica-2'].map((host) => ({ host, service: 'cpu', state: 'ok', metric: 0.23 })),
    ]);
  },
});

/** … and a few live transitions, so the log has something to show. */
async function liveTraffic() {
  await sendRiemann(suite.server, { host: 'web-us-2', service: 'cpu', state: 'critical', metric: 0.98, description: 'load 31.2 on 16 cores', tags: ['prod', 'frontend'] });
  await sendRiemann(suite.server, { host: 'queue-1', service: 'rabbitmq backlog', state: 'warning', metric: 12045, description: '12045 messages ready', tags: ['prod'] });
  await sendRiemann(suite.server, { host: 'web-us-1', service: 'cpu', state: 'warning', metric: 0.81 });
  await sendRiemann(suite.server, { host: 'web-us-1', service: 'cpu', state: 'ok', metric: 0.4 });
}

async function assertFits(page, width) {
  const layout = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    tableOverflow: (() => { const w = document.querySelector('.table-wrap'); return w.scrollWidth - w.clientWidth; })(),
  }));
  assert.ok(layout.scrollWidth <= width, `page scrolls horizontally at ${width}px (${layout.scrollWidth}px wide)`);
  assert.ok(layout.tableOverflow <= 1, `problems table overflows by ${layout.tableOverflow}px at ${width}px`);
}

test('laptop 1366×768: several problems, live log, details; saved as docs/dashboard.png and docs/dashboard-details.png', async () => {
  await withDashboard(suite.browser, suite.server, { viewport: { width: 1366, height: 768 } }, async ({ page, problems }) => {
    await liveTraffic();
    await page.waitForFunction(() => document.querySelectorAll('#log .log-item:not(.note)').length >= 4);
    // The table is drawn on its own paced frame: the log can show web-us-1's recovery a frame
    // before the table drops its warning row. Wait for the table to show it too.
    let rows = await readRows(page);
    for (let i = 0; i < 50 && rows.some((r) => r.host === 'web-us-1'); i += 1) {
      await page.waitForTimeout(100);
      rows = await readRows(page);
    }
    assert.deepEqual(rows.map((r) => r.state), ['critical', 'critical', 'critical', 'warning', 'warning', 'warning', 'expired', 'unknown']);
    assert.equal(rows[0].host, 'db-primary-1', 'longest-standing critical first');
    await assertFits(page, 1366);
    // The log is beside the table at this size, not below it.
    const side = await page.evaluate(() => {
      const p = document.querySelector('.problems').getBoundingClientRect();
      const l = document.querySelector('.log').getBoundingClientRect();
      return l.left >= p.right && l.top < 200;
    });
    assert.ok(side, 'live log sits beside the problems table at 1366 px');
    // Let the "just changed" highlight fade so the picture shows the resting state.
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
    await screenshot(page, 'dashboard.png');

    // The details drawer of a flapping service, with its history.
    await page.locator('#problem-rows tr', { has: page.locator('.c-host', { hasText: 'web-eu-3' }) }).click();
    await page.waitForFunction(() => document.querySelectorAll('#details .history-item').length === 5);
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
    await screenshot(page, 'dashboard-details.png');
    assertClean(problems);
  });
});

test('phone 390×844: cards, no horizontal scrolling; saved as docs/dashboard-phone.png', async () => {
  await withDashboard(suite.browser, suite.server, { viewport: { width: 390, height: 844 }, contextOptions: { deviceScaleFactor: 2, isMobile: true, hasTouch: true } }, async ({ page, problems }) => {
    const rows = await readRows(page);
    assert.equal(rows.length, 8);
    await assertFits(page, 390);
    // Every field of a card is visible inside the card (nothing clipped off to the right).
    const clipped = await page.evaluate(() => [...document.querySelectorAll('#problem-rows tr')].flatMap((tr) => {
      const box = tr.getBoundingClientRect();
      return [...tr.children].filter((td) => {
        const r = td.getBoundingClientRect();
        return r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1);
      }).map((td) => td.className);
    }));
    assert.deepEqual(clipped, []);
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
    await screenshot(page, 'dashboard-phone.png');
    assertClean(problems);
  });
});

test('the Graphs tab at 1366×768: cpu of five hosts; saved as docs/dashboard-graphs.png', async () => {
  const path = `/?view=graphs&graph=${encodeURIComponent('service = "cpu"')}&range=6h`;
  await withDashboard(suite.browser, suite.server, { viewport: { width: 1366, height: 768 }, path }, async ({ page, problems }) => {
    await page.waitForFunction(() => window.statecast.graphs.tab.labels.length === 5);
    await assertFits(page, 1366);
    await screenshot(page, 'dashboard-graphs.png');
    assertClean(problems);
  });
});

test('grouped by host at 1366×768; saved as docs/dashboard-grouped.png', async () => {
  await withDashboard(suite.browser, suite.server, { viewport: { width: 1366, height: 768 }, path: '/?group=host' }, async ({ page, problems }) => {
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.group-row').length >= 5);
    // One group collapsed, to show both.
    await page.click('#problem-rows tr.group-row[data-group="host=web-eu-1"] .group-toggle');
    await assertFits(page, 1366);
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
    await screenshot(page, 'dashboard-grouped.png');
    assertClean(problems);
  });
});
