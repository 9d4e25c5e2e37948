// With --dashboard-token the page works when opened with ?token=…: it passes the token on to /ws
// and /api/history, and sends it with its actions (which need it); without it the socket is
// refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, sendRiemann, waitForRows, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite({ server: { extraArgs: ['--dashboard-token', 'view-secret'] } });

test('the page passes ?token= on to the websocket and the history API', async () => {
  await sendRiemann(suite.server, { host: 'tok', service: 'svc', state: 'critical', description: 'guarded' });
  await withDashboard(suite.browser, suite.server, { path: '/?token=view-secret' }, async ({ page }) => {
    await waitForRows(page, ['tok/svc']);
    const history = await page.evaluate(async () => (await fetch('/api/history?token=view-secret')).status);
    assert.equal(history, 200);
  });
});

test('with only --dashboard-token the page acts with its ?token=, and the API refuses an action without it', async () => {
  await sendRiemann(suite.server, { host: 'acting', service: 'svc', state: 'critical', description: 'guarded' });
  await withDashboard(suite.browser, suite.server, { path: '/?token=view-secret' }, async ({ page }) => {
    const row = "#problem-rows tr.row[data-key^='[\"acting\"']";
    await page.waitForSelector(row, { timeout: WAIT_MS });
    const refused = await page.evaluate(async () => (await fetch('/api/ack', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ host: 'acting', service: 'svc', by: 'eve' }),
    })).status);
    assert.equal(refused, 401, 'an action needs what reading needs');
    await page.click(`${row} button.ack-button`);
    await page.waitForFunction(() => document.activeElement?.id === 'ack-note');
    await page.fill('#details-by', 'alice');
    await page.click('#ack-form button[type="submit"]');
    await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.status === 'acked', row, { timeout: WAIT_MS });
  });
});

test('without the token the page cannot connect', async () => {
  const context = await suite.browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(new URL('/', suite.server.url).href);
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state !== 'live'
      && document.getElementById('conn')?.dataset.state !== undefined, null, { timeout: WAIT_MS });
    await new Promise((r) => setTimeout(r, 1000));
    const state = await page.evaluate(() => document.getElementById('conn').dataset.state);
    assert.notEqual(state, 'live');
  } finally {
    await context.close();
  }
});
