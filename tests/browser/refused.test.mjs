// A server that refuses the page's websocket: the page says why (401 token, 403 origin) and stops
// retrying, instead of "reconnecting" for ever. The header shows "—", not 0, without a snapshot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withServer, withDashboard, assertClean, WAIT_MS } from './helpers.mjs';

const suite = browserSuite({ server: false });
// Chromium logs each refused handshake as a console error, and the page's plain GET of the
// websocket URL (which asks the server why) as a failed resource when it is refused.
const REFUSED_NOISE = [/WebSocket connection to .* failed/, /status of 40[013]/, /426/];

async function refusedText(page) {
  await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'refused', null, { timeout: WAIT_MS * 2 });
  return { conn: (await page.textContent('#conn-text')).trim(), banner: (await page.textContent('#banner-text')).trim() };
}

test('without the dashboard token: "refused" with the reason, no endless reconnecting', async () => {
  await withServer({ extraArgs: ['--dashboard-token', 'view-secret'] }, async (server) => {
    await withDashboard(suite.browser, server, { live: false }, async ({ page, problems }) => {
      const { conn, banner } = await refusedText(page);
      assert.equal(conn, 'refused: token');
      assert.match(banner, /401/);
      assert.match(banner, /\?token=/);
      assert.equal(await page.textContent('#problem-count'), '—', 'no snapshot: no count');
      assert.equal(await page.isVisible('#retry'), true, 'a way to try again by hand');
      // It stays refused (no countdown coming back).
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await page.$eval('#conn', (c) => c.dataset.state), 'refused');
      assertClean(problems, { allow: REFUSED_NOISE });
    });
    await withDashboard(suite.browser, server, { live: false, path: '/?token=wrong' }, async ({ page, problems }) => {
      const { banner } = await refusedText(page);
      assert.match(banner, /invalid token/);
      assert.match(banner, /Check the \?token=/);
      assertClean(problems, { allow: REFUSED_NOISE });
    });
  });
});

test('a page whose origin --allowed-origin does not allow: "refused" with the origin named', async () => {
  await withServer({ extraArgs: ['--allowed-origin', 'https://dash\\.example\\.com'] }, async (server) => {
    await withDashboard(suite.browser, server, { live: false }, async ({ page, problems }) => {
      const { conn, banner } = await refusedText(page);
      assert.equal(conn, 'refused: origin');
      assert.match(banner, /403/);
      assert.ok(banner.includes(`http://${server.http}`), banner);
      assert.match(banner, /--allowed-origin/);
      assert.equal(await page.textContent('#problem-count'), '—');
      assertClean(problems, { allow: REFUSED_NOISE });
    });
  });
});
