// Operator actions across two pages at once: an ack (with a note, by a remembered name) made on
// one page shows on both, dimmed and counted apart; unack; a silence created, edited and deleted
// in the Silences tab; clear. Acked and silenced problems never notify.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, openDashboard, postEvents, sendRiemann, waitTitle, waitLive, assertClean, screenshot, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite({
  seed: async (server) => {
    await postEvents(server, [
      { host: 'api-1', service: 'latency', state: 'critical', description: 'p99 2.4 s' },
      { host: 'db-7', service: 'disk', state: 'warning', description: '91% used' },
      { host: 'db-8', service: 'disk', state: 'critical', description: '97% used' },
      { host: 'old-batch', service: 'export', state: 'expired', description: 'one-off job' },
    ]);
  },
});

const fakeNotifications = `(() => {
  window.__shown = [];
  class FakeNotification {
    constructor(title) { window.__shown.push(title); }
    static permission = 'granted';
    static async requestPermission() { return 'granted'; }
  }
  window.Notification = FakeNotification;
})();`;

const row = (page, host) => `#problem-rows tr.row[data-key^='${JSON.stringify([host]).slice(0, -1)}']`;
const statusOf = (page, host) => page.$eval(row(page, host), (tr) => tr.dataset.status).catch(() => null);
const waitStatus = (page, host, status) => page.waitForFunction(([sel, st]) => document.querySelector(sel)?.dataset.status === st, [row(page, host), status], { timeout: WAIT_MS });
// Chromium reports refused fetches (the API's 404 for a cleared key) as console errors.
const REFUSAL_NOISE = [/status of 404/];

test('ack, unack, silence and clear made on one page show on both at once', async () => {
  const a = await openDashboard(suite.browser, suite.server);
  const b = await openDashboard(suite.browser, suite.server, { initScript: fakeNotifications });
  try {
    await b.page.click('#notify-toggle');
    await waitTitle(a.page, '(4) statecast');

    // --- Ack on page A, from the row's button: the details open with the note field.
    await a.page.click(`${row(a.page, 'api-1')} button.ack-button`);
    await a.page.waitForFunction(() => document.activeElement?.id === 'ack-note');
    await a.page.fill('#ack-note', 'looking into it, rollback under way');
    await a.page.fill('#details-by', 'alice');
    await a.page.selectOption('#ack-expiry', '4h');
    await a.page.click('#ack-form button[type="submit"]');
    for (const { page } of [a, b]) {
      await waitStatus(page, 'api-1', 'acked');
      const note = await page.textContent(`${row(page, 'api-1')} .handled-note`);
      assert.equal(note, 'acked by alice: looking into it, rollback under way');
      await waitTitle(page, '(3, 1 acked) statecast');
      assert.equal(await page.textContent('#problem-count'), '3');
      assert.equal(await page.textContent('#acked-count'), '1');
      // Shown apart: after the unhandled problems, under a section row, dimmed.
      const order = await page.$$eval('#problem-rows tr', (trs) => trs.map((tr) => tr.dataset.section ? `[${tr.dataset.section}]` : tr.querySelector('.c-host').textContent));
      assert.deepEqual(order, ['db-8', 'db-7', 'old-batch', '[acked]', 'api-1']);
      const opacity = await page.$eval(`${row(page, 'api-1')} td.c-host`, (td) => Number(getComputedStyle(td).opacity));
      assert.ok(opacity < 1, 'dimmed');
    }
    await a.page.waitForSelector('#details .handled-info');
    assert.match(await a.page.textContent('#details .handled-info'), /Acknowledged by alice.*until/s);

    // An acked problem that gets worse does not notify; an unhandled one does.
    await sendRiemann(suite.server, { host: 'api-1', service: 'latency', state: 'warning' });
    await sendRiemann(suite.server, { host: 'api-1', service: 'latency', state: 'critical' });
    await sendRiemann(suite.server, { host: 'db-7', service: 'disk', state: 'critical', description: '99% used' });
    await b.page.waitForFunction(() => window.__shown.length === 1);
    assert.deepEqual(await b.page.evaluate(() => window.__shown), ['critical: db-7 · disk']);

    // --- Unack on page A, from the row's button (the name typed before is remembered).
    await a.page.click('#details-close');
    await a.page.click(`${row(a.page, 'api-1')} button.ack-button`);
    for (const { page } of [a, b]) {
      await waitStatus(page, 'api-1', 'active');
      await waitTitle(page, '(4) statecast');
    }
    assert.ok((await b.page.$$eval('#log .log-item.note', (lis) => lis.map((li) => li.textContent))).some((t) => /api-1 · latency acknowledgement ended: removed by alice/.test(t)));

    // Page B acks from the details; without a name it asks for one first.
    await b.page.click(row(b.page, 'db-8'));
    await b.page.fill('#ack-note', 'replacing the disk');
    await b.page.click('#ack-form button[type="submit"]');
    await b.page.waitForFunction(() => /Type your name/.test(document.getElementById('action-message')?.textContent ?? ''));
    assert.equal(await b.page.evaluate(() => document.activeElement?.id), 'details-by');
    await b.page.fill('#details-by', 'bob');
    await b.page.click('#ack-form button[type="submit"]');
    await waitStatus(a.page, 'db-8', 'acked');
    // ... and unacks from there.
    await b.page.click('#unack');
    await waitStatus(a.page, 'db-8', 'active');
    await b.page.click('#details-close');

    // The name is remembered by the page that typed it.
    await a.page.reload();
    await waitLive(a.page);
    await a.page.click(row(a.page, 'db-8'));
    assert.equal(await a.page.inputValue('#details-by'), 'alice');
    await a.page.click('#details-close');

    // --- A silence, created on page A in the Silences tab.
    await a.page.click('#tab-silences');
    await a.page.fill('#silence-query', 'host =~ "db%"');
    await a.page.fill('#silence-duration', '2h');
    await a.page.fill('#silence-comment', 'disk replacement');
    await a.page.click('#silence-submit');
    for (const { page } of [a, b]) {
      await page.waitForFunction(() => document.querySelectorAll('#silence-rows tr').length === 1);
      await waitStatus(page, 'db-7', 'silenced');
      await waitStatus(page, 'db-8', 'silenced');
      await waitTitle(page, '(2, 2 silenced) statecast');
      assert.equal(await page.textContent('#silenced-count'), '2');
      assert.equal(await page.textContent('#tab-silences'), 'Silences (1)');
    }
    assert.equal(await b.page.textContent('#silence-rows tr .c-query'), 'host =~ "db%"');
    assert.equal(await b.page.textContent('#silence-rows tr .c-comment'), 'disk replacement');
    assert.equal(await b.page.textContent('#silence-rows tr .c-by'), 'alice');
    // A silenced service never notifies, even a new one the query matches.
    const before = await b.page.evaluate(() => window.__shown.length);
    await sendRiemann(suite.server, { host: 'db-9', service: 'disk', state: 'critical' });
    await waitStatus(b.page, 'db-9', 'silenced');
    assert.equal(await b.page.evaluate(() => window.__shown.length), before);

    // Edit it on page B (a new comment), delete it on page A.
    await b.page.click('#tab-silences');
    await b.page.click('#silence-rows tr button[data-action="edit"]');
    assert.equal(await b.page.inputValue('#silence-query'), 'host =~ "db%"');
    await b.page.fill('#silence-comment', 'disk replacement, day 2');
    await b.page.click('#silence-submit');
    await a.page.waitForFunction(() => document.querySelector('#silence-rows tr .c-comment')?.textContent === 'disk replacement, day 2');
    await a.page.click('#silence-rows tr button[data-action="delete"]');
    for (const { page } of [a, b]) {
      await page.waitForFunction(() => document.querySelectorAll('#silence-rows tr').length === 0);
      await waitStatus(page, 'db-7', 'active');
      await waitTitle(page, '(5) statecast');
    }

    // --- Clear a stale key from page B's details: gone from both.
    await b.page.click('#tab-problems');
    await b.page.click(row(b.page, 'old-batch'));
    await b.page.fill('#details-by', 'bob');
    await b.page.click('#clear-key');
    for (const { page } of [a, b]) {
      await page.waitForFunction((sel) => !document.querySelector(sel), row(page, 'old-batch'));
      await waitTitle(page, '(4) statecast');
    }
    assert.ok((await a.page.$$eval('#log .log-item.note', (lis) => lis.map((li) => li.textContent))).some((t) => /old-batch · export cleared by bob/.test(t)));
    // Clearing it again: the server's refusal is shown, not swallowed.
    await b.page.click('#clear-key');
    await b.page.waitForFunction(() => /^Refused: /.test(document.getElementById('action-message')?.textContent ?? ''));

    assertClean(a.problems, { allow: REFUSAL_NOISE });
    assertClean(b.problems, { allow: REFUSAL_NOISE });
  } finally {
    await a.context.close();
    await b.context.close();
  }
});

test('screenshot: acknowledged and silenced problems apart; saved as docs/dashboard-acked.png', async () => {
  const { page, context, problems } = await openDashboard(suite.browser, suite.server);
  try {
    const api = (path, body, method = 'POST') => fetch(new URL(path, suite.server.url), { method, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    assert.equal((await api('api/ack', { host: 'api-1', service: 'latency', note: 'rollback under way', by: 'alice' })).status, 200);
    assert.equal((await api('api/silence', { query: 'host = "db-9"', comment: 'new disk tomorrow', by: 'bob', duration: '1d' })).status, 200);
    await waitTitle(page, '(2, 1 acked, 1 silenced) statecast');
    await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
    await screenshot(page, 'dashboard-acked.png');
    assertClean(problems);
  } finally {
    await context.close();
  }
});

test('markup in an ack note, a silence query or comment, or a name is shown as text', async () => {
  const { page, context, problems } = await openDashboard(suite.browser, suite.server);
  try {
    const evil = '<img src=x onerror="window.__owned=1"><b>bold</b>';
    const api = (path, body) => fetch(new URL(path, suite.server.url), { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    assert.equal((await api('api/ack', { host: 'db-8', service: 'disk', note: evil, by: evil.slice(0, 60) })).status, 200);
    assert.equal((await api('api/silence', { query: `description = ${JSON.stringify(evil)}`, comment: evil, by: 'x<script>y</script>', duration: '1h' })).status, 200);
    await page.waitForFunction(() => document.querySelector('tr.row[data-status="acked"] .handled-note')?.textContent.includes('<img'));
    await page.click('#tab-silences');
    await page.waitForFunction(() => document.querySelectorAll('#silence-rows tr').length === 2);
    assert.equal(await page.evaluate(() => document.querySelectorAll('#problem-rows img, #problem-rows b, #silence-rows img, #silence-rows b, #silence-rows script, #log img').length), 0);
    assert.equal(await page.evaluate(() => window.__owned), undefined);
    assertClean(problems);
  } finally {
    await context.close();
  }
});
