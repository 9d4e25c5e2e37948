// The filter box: a Riemann query that resubscribes the socket, errors shown inline, kept in the URL.
// Query support on the server is feature-detected: a {"type":"subscribe"} answered by a snapshot
// (or an error frame) means supported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, sendRiemann, postEvents, waitForRows, assertClean,
  waitTitle, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite();

/**
 * Opens a second websocket from inside the page and asks for a subscription. Resolves to
 * 'supported' (snapshot or error answer) or 'unsupported' (no answer while 10 stats heartbeats —
 * two seconds at the tests' 0.2 s interval — went by; the server answers in order, so a server
 * that understood the subscribe would have replied before them).
 */
function detectQuerySupport(page) {
  return page.evaluate((timeoutMs) => new Promise((resolve) => {
    const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
    let snapshots = 0;
    let statsAfter = 0;
    let sent = false;
    const done = (result) => { clearTimeout(timer); ws.close(); resolve(result); };
    const timer = setTimeout(() => done(sent ? 'unsupported' : 'no snapshot'), timeoutMs);
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === 'snapshot') {
        snapshots += 1;
        if (snapshots === 1) {
          ws.send(JSON.stringify({ type: 'subscribe', query: 'host = "probe"' }));
          sent = true;
        } else {
          done('supported');
        }
      } else if (msg.type === 'error' && sent) {
        done('supported');
      } else if (msg.type === 'stats' && sent && ++statsAfter >= 10) {
        done('unsupported');
      }
    };
  }), WAIT_MS);
}

const rowKeysNow = (page) => page.$$eval('#problem-rows tr', (trs) => trs.map((tr) => `${tr.querySelector('.c-host').textContent}/${tr.querySelector('.c-service').textContent}`));

test('the filter box narrows the rows with a Riemann query', async (t) => {
  await postEvents(suite.server, [
    { host: 'web1', service: 'cpu', state: 'critical', description: 'hot' },
    { host: 'web1', service: 'disk /', state: 'warning' },
    { host: 'web2', service: 'cpu', state: 'critical' },
    { host: 'web2', service: 'mem', state: 'ok' },
  ]);
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await waitForRows(page, ['web1/cpu', 'web2/cpu', 'web1/disk /']);
    const support = await detectQuerySupport(page);
    assert.notEqual(support, 'no snapshot', 'the probe websocket got no snapshot');

    const query = 'host = "web1"';
    await page.keyboard.press('/');
    await page.keyboard.type(query);
    await page.keyboard.press('Enter');
    // Whatever the suite.server, the filter lives in the URL so a link reproduces the view.
    await page.waitForFunction((q) => new URLSearchParams(location.search).get('query') === q, query);

    if (support !== 'supported') {
      // The page must degrade visibly, not pretend: a note says queries are unsupported, and rows stay.
      await page.waitForSelector('#filter-error[data-kind="unsupported"]:not([hidden])');
      assert.deepEqual(await rowKeysNow(page), ['web1/cpu', 'web2/cpu', 'web1/disk /']);
      assertClean(problems);
      const message = 'this statecast server does not support queries yet ({"type":"subscribe"} got no snapshot); '
        + 'the filter box shows an "unsupported" note instead of filtering';
      if (process.env.STATECAST_EXPECT_QUERY === '1') assert.fail(`STATECAST_EXPECT_QUERY=1 but ${message}`);
      t.skip(message);
      return;
    }

    await waitForRows(page, ['web1/cpu', 'web1/disk /']);
    assert.equal(await page.textContent('#problems-title'), 'Problems (filtered)');
    await waitTitle(page, '(2) statecast');

    // Live changes respect the filter.
    await sendRiemann(suite.server, { host: 'web2', service: 'mem', state: 'critical' });
    await sendRiemann(suite.server, { host: 'web1', service: 'mem', state: 'critical' });
    await waitForRows(page, ['web1/cpu', 'web1/mem', 'web1/disk /']);

    // A bad query: the server's error is shown inline, the current view stays.
    await page.fill('#filter', 'host = ');
    await page.press('#filter', 'Enter');
    await page.waitForSelector('#filter-error[data-kind="error"]:not([hidden])');
    assert.ok((await page.textContent('#filter-error')).trim().length > 0, 'the error says something');
    assert.equal(await page.getAttribute('#filter', 'aria-invalid'), 'true');
    assert.deepEqual(await rowKeysNow(page), ['web1/cpu', 'web1/mem', 'web1/disk /']);

    // A link with ?query= reproduces the filtered view.
    const link = new URL(suite.server.url);
    link.searchParams.set('query', 'service = "cpu"');
    await page.goto(link.href);
    await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live');
    await waitForRows(page, ['web1/cpu', 'web2/cpu']);
    assert.equal(await page.inputValue('#filter'), 'service = "cpu"');

    // Clearing the filter shows everything again.
    await page.fill('#filter', '');
    await page.press('#filter', 'Enter');
    await waitForRows(page, ['web1/cpu', 'web2/cpu', 'web2/mem', 'web1/mem', 'web1/disk /']);
    assert.equal(new URL(page.url()).searchParams.has('query'), false);
    assertClean(problems);
  });
});
