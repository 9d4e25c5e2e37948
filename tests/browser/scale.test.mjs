// A meltdown: 500 hosts × 50 services, two thirds of them failing, then bursts of changes. The
// page renders only the worst problems (a bounded window), stays correct under the bursts, and
// agrees with a fresh snapshot afterwards.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, postEvents, assertClean, waitTitle, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite({
  seed: async (server) => {
    const events = [];
    for (let h = 0; h < 500; h += 1) {
      for (let s = 0; s < 50; s += 1) {
        events.push({ host: `host-${h}`, service: `svc-${s}`, state: ['critical', 'warning', 'ok'][(h + s) % 3], metric: h * s });
      }
    }
    for (let i = 0; i < events.length; i += 5000) await postEvents(server, events.slice(i, i + 5000));
  },
});

/** Rendered rows equal the first N problems in the page's own order. */
function windowMatches(page, n) {
  return page.evaluate((limit) => {
    const want = window.statecast.problems.slice(0, limit).map((e) => JSON.stringify([e.host ?? null, e.service ?? null]));
    const got = [...document.querySelectorAll('#problem-rows tr')].map((tr) => tr.dataset.key);
    return JSON.stringify(want) === JSON.stringify(got) ? true : { want: want.slice(0, 5), got: got.slice(0, 5), lengths: [want.length, got.length] };
  }, n);
}

const problemList = (page) => page.evaluate(() => window.statecast.problems.map((e) => `${e.host}/${e.service}/${e.state}`));

test('25,000 events: a bounded window of rows, correct through bursts of changes', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, context, problems }) => {
    assert.equal(await page.textContent('#problem-count'), '16667');
    await waitTitle(page, '(16667) statecast');
    assert.equal(await windowMatches(page, 200), true);
    assert.match(await page.textContent('#more-text'), /worst 200 of 16,667/);

    // Random bursts, including problems that leave and enter the window.
    let seed = 7;
    const random = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    for (let round = 0; round < 4; round += 1) {
      const burst = [];
      for (let i = 0; i < 2000; i += 1) {
        burst.push({ host: `host-${random(500)}`, service: `svc-${random(50)}`, state: ['ok', 'critical', 'warning', 'expired'][random(4)] });
      }
      await postEvents(suite.server, burst);
    }

    // A fresh page's snapshot is the truth; the first page must have caught up to it exactly.
    await withDashboard(suite.browser, suite.server, async (fresh) => {
      const seq = await fresh.page.textContent('#seq');
      await page.waitForFunction((s) => document.getElementById('seq').textContent === s, seq, { timeout: WAIT_MS });
      const [live, truth] = [(await problemList(page)).sort(), (await problemList(fresh.page)).sort()];
      assert.equal(live.length, truth.length);
      assert.deepEqual(live, truth, 'the live view equals a fresh snapshot');
      assertClean(fresh.problems);
    });
    assert.equal(await windowMatches(page, 200), true);

    // Rows are filled in as they scroll into view; that must not move what is below them (the
    // button moved 17 px two frames after being scrolled to, and a click in that frame missed it).
    const tops = await page.evaluate(async () => {
      const button = /** @type {HTMLElement} */ (document.getElementById('show-more'));
      button.scrollIntoView();
      const seen = [];
      for (let i = 0; i < 6; i += 1) {
        await new Promise((r) => { requestAnimationFrame(() => r(undefined)); });
        seen.push(Math.round(button.getBoundingClientRect().top));
      }
      return seen;
    });
    assert.deepEqual(tops, tops.map(() => tops[0]), `"show more" stays put after being scrolled to: ${tops}`);
    await page.click('#show-more');
    assert.equal(await windowMatches(page, 1200), true);
    assertClean(problems);
  });
});
