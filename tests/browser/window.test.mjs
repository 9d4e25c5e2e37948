// The windowed problems list (issue 24): a long list keeps a row per listed problem but draws only
// the rows near the viewport; scrolling shows the right rows, a change to a row out of view is
// there when it is scrolled to, and keyboard and selection work on rows not drawn yet; ages tick
// only in the rows near the viewport.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withDashboard, postEvents, assertClean, WAIT_MS } from './helpers.mjs';

const N = 300;
const host = (i) => `host-${String(i).padStart(3, '0')}`;
const keyOf = (i) => JSON.stringify([host(i), 'svc']);

const suite = browserSuite({
  seed: async (server) => {
    const events = [];
    for (let i = 0; i < N; i += 1) events.push({ host: host(i), service: 'svc', state: 'critical', description: `first ${i}` });
    await postEvents(server, events);
  },
});

/** The rows whose box meets the viewport: key, whether drawn, host and description shown. */
const rowsInView = (page) => page.$$eval('#problem-rows tr', (trs) => trs.filter((tr) => {
  const r = tr.getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight;
}).map((tr) => ({
  key: tr.dataset.key,
  drawn: tr.querySelector('.c-host') !== null,
  host: tr.querySelector('.c-host')?.textContent ?? null,
  description: tr.querySelector('.c-desc .desc-text')?.textContent ?? null,
})));

/** Waits until every row in the viewport is drawn and shows the host its key names. */
async function waitViewDrawn(page) {
  await page.waitForFunction(() => {
    const trs = [...document.querySelectorAll('#problem-rows tr')].filter((tr) => {
      const r = tr.getBoundingClientRect();
      return r.bottom > 0 && r.top < window.innerHeight;
    });
    return trs.length > 0 && trs.every((tr) => tr.querySelector('.c-host')?.textContent === JSON.parse(tr.dataset.key)[0]);
  }, null, { timeout: WAIT_MS });
}

test('a long list draws only the rows near the viewport; scrolling draws the right ones', async () => {
  await withDashboard(suite.browser, suite.server, { path: '/?sort=host' }, async ({ page, problems }) => {
    await page.waitForFunction((n) => document.querySelectorAll('#problem-rows tr.row').length === n, 200);
    // Every listed problem has its row, in order (keys, focus and scroll height stay right)…
    const keys = await page.$$eval('#problem-rows tr.row', (trs) => trs.map((tr) => tr.dataset.key));
    assert.deepEqual(keys, Array.from({ length: 200 }, (_, i) => keyOf(i)));
    // …but only those near the viewport are drawn.
    await waitViewDrawn(page);
    const drawn = await page.$$eval('#problem-rows tr.row .c-host', (cells) => cells.length);
    assert.ok(drawn < 200, `only the rows near the viewport are drawn (${drawn} of 200)`);
    assert.ok((await rowsInView(page)).every((r) => r.drawn));

    // Scroll to the middle: the rows there are drawn, in the page's order.
    await page.$eval(`#problem-rows tr[data-key='${keyOf(150)}']`, (tr) => tr.scrollIntoView({ block: 'center' }));
    await waitViewDrawn(page);
    const view = await rowsInView(page);
    assert.ok(view.some((r) => r.key === keyOf(150)));
    const order = await page.evaluate(() => window.statecast.problems.map((e) => JSON.stringify([e.host, e.service])));
    const at = order.indexOf(view[0].key);
    assert.deepEqual(view.map((r) => r.key), order.slice(at, at + view.length), 'the rows in view follow the order');
    assert.deepEqual(view.map((r) => r.description), view.map((r) => `first ${Number(JSON.parse(r.key)[0].slice(5))}`));
    assertClean(problems);
  });
});

test('a change to a row out of view is shown when it is scrolled to; keyboard and selection reach undrawn rows', async () => {
  await withDashboard(suite.browser, suite.server, { path: '/?sort=host' }, async ({ page, problems }) => {
    await waitViewDrawn(page);
    await page.evaluate(() => window.scrollTo(0, 0));
    const seq = await page.evaluate(() => window.statecast.seq);
    await postEvents(suite.server, [{ host: host(180), service: 'svc', state: 'warning', description: 'changed while out of view' }]);
    await page.waitForFunction((s) => window.statecast.seq > s, seq);
    const offscreen = await page.$eval(`#problem-rows tr[data-key='${keyOf(180)}']`, (tr) => tr.getBoundingClientRect().top > window.innerHeight);
    assert.ok(offscreen, 'the changed row is out of view');

    await page.$eval(`#problem-rows tr[data-key='${keyOf(180)}']`, (tr) => tr.scrollIntoView({ block: 'center' }));
    await page.waitForFunction((k) => {
      const tr = document.querySelector(`#problem-rows tr[data-key='${k}']`);
      return tr?.querySelector('.c-desc .desc-text')?.textContent === 'changed while out of view'
        && tr.querySelector('.c-state .badge')?.textContent === 'warning';
    }, keyOf(180), { timeout: WAIT_MS });

    // Focus a row far below (drawn or not), Enter opens its details and selects it.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.focus(`#problem-rows tr[data-key='${keyOf(195)}']`);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#details:not([hidden])');
    assert.equal(await page.textContent('#details-title'), `${host(195)} · svc`);
    await page.waitForFunction((k) => document.querySelector(`#problem-rows tr[data-key='${k}']`)?.classList.contains('selected'), keyOf(195));
    await page.waitForFunction(([k, h]) => document.querySelector(`#problem-rows tr[data-key='${k}'] .c-host`)?.textContent === h, [keyOf(195), host(195)]);
    assertClean(problems);
  });
});

test('ages tick in the rows near the viewport only; a row far away gets its age when it comes near', async () => {
  await withDashboard(suite.browser, suite.server, { path: '/?sort=host' }, async ({ page, problems }) => {
    await waitViewDrawn(page); // the first rows are drawn…
    await page.$eval(`#problem-rows tr[data-key='${keyOf(150)}']`, (tr) => tr.scrollIntoView({ block: 'center' }));
    await waitViewDrawn(page); // …and now far above the viewport
    // Count the writes to the age of row 0 (drawn, far away) and of row 150 (in view).
    await page.evaluate(([far, near]) => {
      window.ageWrites = { far: 0, near: 0 };
      for (const [key, name] of [[far, 'far'], [near, 'near']]) {
        const time = document.querySelector(`#problem-rows tr[data-key='${key}'] .c-age time`);
        new MutationObserver((records) => { window.ageWrites[name] += records.length; })
          .observe(time, { childList: true, characterData: true, subtree: true });
      }
    }, [keyOf(0), keyOf(150)]);
    await page.waitForFunction(() => window.ageWrites.near >= 2, null, { timeout: WAIT_MS }); // two ticks
    assert.equal(await page.evaluate(() => window.ageWrites.far), 0, 'a drawn row far from the viewport keeps its age text meanwhile');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForFunction(() => window.ageWrites.far >= 1, null, { timeout: WAIT_MS });
    assertClean(problems);
  });
});
