// The header's figures and the rates chart from the server's `stats` frames (issue 24): the
// chart's legend and the header agree, and a new page neither shows a spike of events/s nor a
// dashboard count without itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withServer, withDashboard, postEvents, assertClean } from './helpers.mjs';

const suite = browserSuite({ server: false });

test('the chart legend shows events/s as soon as the header does (issue 24 item 7)', async () => {
  await withServer(async (server) => {
    await withDashboard(suite.browser, server, async ({ page, problems }) => {
      // The first moment the header has a rate, read the legend in the same turn.
      const seen = await page.waitForFunction(() => {
        const header = document.getElementById('rate').textContent;
        return header !== '–' && { header, legend: document.getElementById('rate-events-now').textContent };
      });
      const { header, legend } = await seen.jsonValue();
      assert.notEqual(legend, '–', `the header shows ${header} events/s, the legend nothing`);
      assert.equal(Number(legend), Number(header), 'the same figure');
      assertClean(problems);
    });
  });
});
