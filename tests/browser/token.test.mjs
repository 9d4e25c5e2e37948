// With --dashboard-token the page works when opened with ?token=…: it passes the token on to /ws
// and /api/history; without it the socket is refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, withDashboard, sendRiemann, waitForRows, WAIT_MS,
} from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await startServer({ extraArgs: ['--dashboard-token', 'view-secret'] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the page passes ?token= on to the websocket and the history API', async () => {
  await sendRiemann(server, { host: 'tok', service: 'svc', state: 'critical', description: 'guarded' });
  await withDashboard(browser, server, { path: '/?token=view-secret' }, async ({ page }) => {
    await waitForRows(page, ['tok/svc']);
    const history = await page.evaluate(async () => (await fetch('/api/history?token=view-secret')).status);
    assert.equal(history, 200);
  });
});

test('without the token the page cannot connect', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(new URL('/', server.url).href);
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state !== 'live'
      && document.getElementById('conn')?.dataset.state !== undefined, null, { timeout: WAIT_MS });
    await new Promise((r) => setTimeout(r, 1000));
    const state = await page.evaluate(() => document.getElementById('conn').dataset.state);
    assert.notEqual(state, 'live');
  } finally {
    await context.close();
  }
});
