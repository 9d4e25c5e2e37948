// A server that refuses the page's websocket: the page says why (401 token, 403 origin) and stops
// retrying, instead of "reconnecting" for ever. The header shows "—", not 0, without a snapshot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withServer, withDashboard, assertClean, colour, WAIT_MS } from './helpers.mjs';

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

/** What an on-call engineer sees on a refused page (issue 24 item 4), measured in the page. */
function refusedLook(page, phrase) {
  return page.evaluate((phrase) => {
    const visible = (e) => e && !e.closest('[hidden]') && e.getClientRects().length > 0;
    // The header's parts on one line: each starts above where the first one ends.
    const parts = [...document.querySelector('.topbar').children].filter(visible).map((e) => e.getBoundingClientRect());
    const oneLine = parts.every((r) => r.top < parts[0].bottom);
    // The lines a phrase of the banner takes.
    const text = document.getElementById('banner-text');
    const at = text.textContent.indexOf(phrase);
    let lines = 0;
    if (at >= 0) {
      const walker = document.createTreeWalker(text, NodeFilter.SHOW_TEXT);
      const range = document.createRange();
      let offset = 0;
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const len = node.textContent.length;
        if (offset <= at && at < offset + len) range.setStart(node, at - offset);
        if (offset < at + phrase.length && at + phrase.length <= offset + len) range.setEnd(node, at + phrase.length - offset);
        offset += len;
      }
      lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
    }
    const body = [...document.querySelectorAll('#problems-panel .empty')].filter(visible).map((e) => e.textContent).join(' ');
    const dot = getComputedStyle(document.querySelector('#conn .conn-dot')).backgroundColor;
    const handled = ['acked-count', 'silenced-count'].filter((id) => visible(document.getElementById(id)));
    return { oneLine, lines, body, dot, handled };
  }, phrase);
}

const rgb = (css) => css.match(/\d+/g).slice(0, 3).map(Number);

test('a refused page says plainly what is wrong and what to do (issue 24 item 4)', async () => {
  await withServer({ extraArgs: ['--allowed-origin', 'https://dash\\.example\\.com'] }, async (server) => {
    // A banner long enough to wrap at this width, so a flag could break across lines.
    for (const width of [1366, 1000, 760]) {
      await withDashboard(suite.browser, server, { live: false, viewport: { width, height: 768 } }, async ({ page, problems }) => {
        await refusedText(page);
        const look = await refusedLook(page, '--allowed-origin');
        if (width === 1366) assert.ok(look.oneLine, 'the header stays on one line at 1366 px');
        assert.deepEqual(look.handled, [], 'no ACKED / SILENCED "—" before any snapshot');
        assert.equal(look.lines, 1, `"--allowed-origin" on one line at ${width} px`);
        assert.doesNotMatch(look.body, /Waiting for the first snapshot/);
        assert.match(look.body, /refused/i, 'the body says the page was refused');
        assert.match(look.body, /--allowed-origin/, 'and what to do');
        assert.ok(colour.isRed(rgb(look.dot)), `the status dot is red, not ${look.dot}`);
        assertClean(problems, { allow: REFUSED_NOISE });
      });
    }
  });
  await withServer({ extraArgs: ['--dashboard-token', 'view-secret'] }, async (server) => {
    await withDashboard(suite.browser, server, { live: false }, async ({ page, problems }) => {
      await refusedText(page);
      const look = await refusedLook(page, '--dashboard-token');
      assert.ok(look.oneLine, 'the header stays on one line at 1366 px');
      assert.equal(look.lines, 1);
      assert.match(look.body, /\?token=/);
      assert.ok(colour.isRed(rgb(look.dot)), `the status dot is red, not ${look.dot}`);
      assertClean(problems, { allow: REFUSED_NOISE });
    });
  });
});
