// Event text is attacker-controlled: it must show as text and never become markup.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, sendRiemann, postEvents, readRows, assertClean,
} from './helpers.mjs';

const suite = browserSuite();

const IMG = '<img src=x onerror=alert(1)>';

test('markup in event fields is shown literally and creates no element', async () => {
  // Present before the page loads (snapshot path) …
  await postEvents(suite.server, [{
    host: '<script>alert(2)</script>',
    service: '<b>bold</b>',
    state: 'critical',
    description: '<svg onload=alert(3)></svg>',
    tags: ['<i>tag</i>'],
    '<u>attr</u>': '<iframe src=javascript:alert(4)>',
  }]);
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    // … and arriving live (change path), sent by Riemann's own C client.
    await sendRiemann(suite.server, { host: 'xss', service: 'desc', state: 'critical', description: IMG, tags: [IMG] });
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr').length === 2);
    await page.waitForFunction(() => document.querySelector('#log .log-item:not(.note)')?.textContent.includes('xss'));

    const rows = await readRows(page);
    const live = rows.find((r) => r.host === 'xss');
    assert.equal(live.description, IMG, 'the description is shown as literal text');
    assert.deepEqual(live.tags, [IMG]);
    const snap = rows.find((r) => r.service === '<b>bold</b>');
    assert.ok(snap, `the snapshot row shows markup literally: ${JSON.stringify(rows)}`);
    assert.equal(snap.host, '<script>alert(2)</script>');
    assert.equal(snap.description, '<svg onload=alert(3)></svg>');
    assert.deepEqual(snap.tags, ['<i>tag</i>']);
    assert.deepEqual(snap.attributes, ['<u>attr</u>=<iframe src=javascript:alert(4)>']);

    const logText = await page.$eval('#log', (ol) => ol.textContent);
    assert.ok(logText.includes(IMG), 'the live log shows it as text too');

    const elements = await page.evaluate(() => ({
      img: document.querySelectorAll('img').length,
      script: [...document.querySelectorAll('script')].map((s) => s.getAttribute('src')),
      svg: document.querySelectorAll('svg').length,
      iframe: document.querySelectorAll('iframe').length,
      b: document.querySelectorAll('b, i, u').length,
    }));
    assert.deepEqual(elements, { img: 0, script: ['app.js'], svg: 0, iframe: 0, b: 0 });

    // The tooltip carries the same text as an attribute value, not markup.
    const title = await page.$eval('#problem-rows tr[data-key*="xss"] .c-desc', (td) => td.getAttribute('title'));
    assert.equal(title, IMG);

    assert.deepEqual(problems.dialogs, [], 'no dialog fired');
    assertClean(problems);
  });
});
