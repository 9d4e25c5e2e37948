// The header's figures and the rates chart from the server's `stats` frames (issue 24): the
// chart's legend and the header agree, and a new page neither shows a spike of events/s nor a
// dashboard count without itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withServer, withDashboard, postEvents, assertClean } from './helpers.mjs';
import { fmtRate } from '../../static/js/format.js';

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

// Records the page's `stats` frames as it gets them (before the page handles each).
const RECORD_STATS = `(() => {
  const Native = window.WebSocket;
  window.statsFrames = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try { const m = JSON.parse(e.data); if (m.type === 'stats') window.statsFrames.push(m); } catch {}
      });
    }
  };
})();`;

test('a new page counts itself and shows events/s from the frames\' own times (issue 24 item 5)', async () => {
  await withServer(async (server) => {
    // Events before the page connects: the last stats frame built before it does not count them.
    await postEvents(server, [1, 2, 3, 4].map((i) => ({ host: `h${i}`, service: 's', state: 'ok' })));
    await withDashboard(suite.browser, server, { initScript: RECORD_STATS }, async ({ page, problems }) => {
      const seen = await page.waitForFunction(() => {
        const header = document.getElementById('rate').textContent;
        return header !== '–' && { header, clients: document.getElementById('clients').textContent, frames: window.statsFrames };
      });
      const { header, clients, frames } = await seen.jsonValue();
      assert.ok(frames[0].clients >= 1, `the first stats frame a page gets counts it: ${JSON.stringify(frames[0])}`);
      assert.ok(Number(clients) >= 1, `DASHBOARDS shows ${clients}`);
      for (const f of frames) {
        assert.equal(typeof f.time, 'number', `a stats frame carries its time: ${JSON.stringify(f)}`);
        assert.equal(typeof f.interval_ms, 'number', 'and the interval');
      }
      // The header's figure is the rate between the last two frames by their own times, not by
      // when they arrived (a frame built before the page connected arrives with the next one).
      const [a, b] = frames.slice(-2);
      const expected = Math.max(0, (b.events - a.events) * 1000 / (b.time - a.time));
      assert.equal(header, fmtRate(expected), `frames ${JSON.stringify(frames)}`);
      assertClean(problems);
    });
  });
});
