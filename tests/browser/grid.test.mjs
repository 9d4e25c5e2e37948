// Grid view (hosts × services, coloured by state, one cell updated per change), the view kept in
// the URL, a 500 × 50 grid, and the rate chart fed by the server's stats counters.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, browserSuite, withDashboard, postEvents, sendRiemann, assertClean, colour,
  screenshot, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite({ server: false });

/** Computed background of the grid cell for host/service, as [r, g, b] (null when absent). */
async function cellColour(page, host, service) {
  const css = await page.evaluate(([h, s]) => {
    const heads = [...document.querySelectorAll('#grid-head th')];
    const col = heads.findIndex((th) => th.dataset.service === s);
    const tr = [...document.querySelectorAll('#grid-rows tr')].find((t) => t.dataset.host === h);
    if (col < 0 || !tr) return null;
    return getComputedStyle(tr.children[col]).backgroundColor;
  }, [host, service]);
  if (!css) return null;
  const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(css);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** A handle on the grid cell element for host/service. */
function cellHandle(page, host, service) {
  return page.evaluateHandle(([h, s]) => {
    const col = [...document.querySelectorAll('#grid-head th')].findIndex((th) => th.dataset.service === s);
    const tr = [...document.querySelectorAll('#grid-rows tr')].find((t) => t.dataset.host === h);
    return tr && col >= 0 ? tr.children[col] : null;
  }, [host, service]);
}

async function waitCell(page, host, service, isColour, what) {
  const deadline = Date.now() + WAIT_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await cellColour(page, host, service);
    if (last && isColour(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`cell ${host}/${service} never became ${what}; last ${JSON.stringify(last)}`);
}

test('grid: cells coloured by state, view in the URL, a change updates that one cell', async () => {
  await withServer(async (server) => {
    const states = {
      'web-1': { cpu: 'ok', disk: 'critical' },
      'web-2': { cpu: 'warning', disk: 'ok' },
      'db-1': { cpu: 'expired', disk: 'unknown' },
    };
    await postEvents(server, Object.entries(states).flatMap(([host, svcs]) => Object.entries(svcs)
      .map(([service, state]) => ({ host, service, state, metric: 0.5, description: `${service} on ${host}` }))));
    await withDashboard(suite.browser, server, async ({ page, problems }) => {
      await page.click('#tab-grid');
      assert.match(page.url(), /[?&]view=grid\b/);
      assert.equal(await page.isVisible('#grid-panel'), true);
      assert.equal(await page.isVisible('#problems-panel'), false);
      await page.waitForFunction(() => document.querySelectorAll('#grid-rows td').length === 6);
      assert.deepEqual(await page.$$eval('#grid-rows tr', (trs) => trs.map((tr) => tr.dataset.host)), ['db-1', 'web-1', 'web-2']);
      assert.ok(colour.isGreen(await cellColour(page, 'web-1', 'cpu')));
      assert.ok(colour.isRed(await cellColour(page, 'web-1', 'disk')));
      assert.ok(colour.isOrange(await cellColour(page, 'web-2', 'cpu')));
      assert.ok(colour.isGreen(await cellColour(page, 'web-2', 'disk')));
      assert.ok(colour.isGrey(await cellColour(page, 'db-1', 'cpu')));
      assert.ok(colour.isBlue(await cellColour(page, 'db-1', 'disk')));

      // Hover shows the details as a tooltip.
      const cell = await cellHandle(page, 'web-1', 'disk');
      await cell.hover();
      const title = await cell.evaluate((td) => td.getAttribute('title'));
      assert.match(title, /host: web-1/);
      assert.match(title, /service: disk/);
      assert.match(title, /state: critical/);
      assert.match(title, /metric: 0\.5/);
      assert.match(title, /description: disk on web-1/);
      assert.match(title, /time: /);

      // A live change: the same element, a new colour, nothing else rebuilt.
      const row = await page.evaluateHandle(() => document.querySelector('#grid-rows tr[data-host="web-2"]'));
      await sendRiemann(server, { host: 'web-1', service: 'disk', state: 'ok', metric: 0.2 });
      await waitCell(page, 'web-1', 'disk', colour.isGreen, 'green');
      assert.equal(await page.evaluate(([a, b]) => a === b && a.isConnected, [cell, await cellHandle(page, 'web-1', 'disk')]), true);
      assert.equal(await row.evaluate((tr) => tr.isConnected), true, 'other rows are untouched');
      assert.match(await cell.evaluate((td) => td.getAttribute('title')), /state: ok/);

      // A new host appends a row, a new service a column.
      await sendRiemann(server, { host: 'app-9', service: 'queue', state: 'critical' });
      await waitCell(page, 'app-9', 'queue', colour.isRed, 'red');
      assert.equal(await page.$$eval('#grid-rows tr', (trs) => trs.at(-1).dataset.host), 'app-9');
      assert.equal(await page.$$eval('#grid-rows td', (tds) => tds.length), 12);
      assert.equal(await row.evaluate((tr) => tr.isConnected), true);

      // Click opens the details panel.
      await (await cellHandle(page, 'web-2', 'cpu')).click();
      await page.waitForSelector('#details:not([hidden])');
      assert.equal(await page.textContent('#details-title'), 'web-2 · cpu');
      await page.keyboard.press('Escape');

      // Tabs are keyboard-operable; the link with ?view=grid reproduces the view.
      await page.focus('#tab-grid');
      await page.keyboard.press('ArrowLeft');
      assert.equal(await page.evaluate(() => window.statecast.view), 'problems');
      assert.doesNotMatch(page.url(), /view=/);
      await page.keyboard.press('ArrowRight');
      assert.equal(await page.evaluate(() => window.statecast.view), 'grid');
      const filtered = { path: '/?view=grid&query=' + encodeURIComponent('service = "cpu"') };
      await withDashboard(suite.browser, server, filtered, async (again) => {
        await again.page.waitForFunction(() => document.querySelectorAll('#grid-rows td').length > 0);
        assert.equal(await again.page.isVisible('#grid-panel'), true);
        assertClean(again.problems);
      });
      // The picture: the rate chart has a few seconds of data, no hover or focus ring.
      await page.mouse.move(1300, 700);
      await page.evaluate(() => document.activeElement?.blur());
      await page.waitForFunction(() => window.statecast.rates.events.length >= 8
        && Number(document.getElementById('rate-chart').dataset.points) >= 8);
      await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity));
      await screenshot(page, 'dashboard-grid.png');
      assertClean(problems);
    });
  });
});

test('grid: 500 hosts × 50 services, and a change still lands in its cell', async () => {
  await withServer(async (server) => {
    const events = [];
    for (let h = 0; h < 500; h += 1) {
      for (let s = 0; s < 50; s += 1) {
        events.push({ host: `host-${h}`, service: `svc-${s}`, state: ['ok', 'warning', 'critical'][(h + s) % 3] });
      }
    }
    for (let i = 0; i < events.length; i += 5000) await postEvents(server, events.slice(i, i + 5000));
    await withDashboard(suite.browser, server, { path: '/?view=grid' }, async ({ page, problems }) => {
      const started = Date.now();
      await page.waitForFunction(() => document.getElementById('grid-panel').dataset.ready === 'true'
        && document.querySelectorAll('#grid-rows td').length === 25_000, null, { timeout: WAIT_MS });
      const built = Date.now() - started;
      assert.equal(await page.$$eval('#grid-rows tr', (trs) => trs.length), 500);
      assert.equal(await page.$$eval('#grid-head th', (ths) => ths.length), 51);
      // host-499/svc-49: (499 + 49) % 3 = 2 → critical.
      assert.ok(colour.isRed(await cellColour(page, 'host-499', 'svc-49')));
      const cell = await cellHandle(page, 'host-499', 'svc-49');
      await postEvents(server, [{ host: 'host-499', service: 'svc-49', state: 'ok' }]);
      await waitCell(page, 'host-499', 'svc-49', colour.isGreen, 'green');
      assert.equal(await cell.evaluate((td) => td.isConnected && td.classList.contains('s-ok')), true);
      assert.equal(await page.$$eval('#grid-rows td', (tds) => tds.length), 25_000);
      // The page stays responsive: a round trip into the page is quick.
      const t0 = Date.now();
      await page.evaluate(() => 1);
      assert.ok(Date.now() - t0 < 2000, 'page responsive');
      console.log(`25,000 cells built in ${built} ms`);
      assertClean(problems);
    });
  });
});

test('grid: columns line up with their headers; host names stay in view when it scrolls sideways', async () => {
  await withServer(async (server) => {
    const hosts = ['a', 'web-2', 'db-10']; // short names: the host column is not at its cap
    const events = hosts.flatMap((host) => Array.from({ length: 80 }, (_, s) => ({ host, service: `svc-${s}`, state: 'ok' })));
    await postEvents(server, events);
    await withDashboard(suite.browser, server, { path: '/?view=grid' }, async ({ page, problems }) => {
      await page.waitForFunction(() => document.getElementById('grid-panel').dataset.ready === 'true'
        && document.querySelectorAll('#grid-rows td').length === 240);
      // Rows are flex boxes, not table rows: every row's cells must still sit under their header.
      const misaligned = await page.evaluate(() => {
        const heads = [...document.querySelectorAll('#grid-head th')].map((th) => Math.round(th.getBoundingClientRect().left));
        const off = [];
        for (const tr of document.querySelectorAll('#grid-rows tr')) {
          [...tr.children].forEach((cell, i) => {
            const left = Math.round(cell.getBoundingClientRect().left);
            if (left !== heads[i]) off.push(`${tr.dataset.host} column ${i}: ${left} vs ${heads[i]}`);
          });
        }
        return off.slice(0, 5);
      });
      assert.deepEqual(misaligned, []);
      // 80 columns do not fit: the grid is wide, and scrolled sideways its host names stay put.
      await page.waitForFunction(() => document.getElementById('grid').classList.contains('wide'));
      const lefts = await page.evaluate(async () => {
        const wrap = /** @type {HTMLElement} */ (document.querySelector('.grid-wrap'));
        const host = /** @type {HTMLElement} */ (document.querySelector('#grid-rows th'));
        wrap.scrollLeft = 400;
        await new Promise((r) => { requestAnimationFrame(() => requestAnimationFrame(r)); });
        return { wrap: Math.round(wrap.getBoundingClientRect().left), host: Math.round(host.getBoundingClientRect().left), scrolled: wrap.scrollLeft };
      });
      assert.ok(lefts.scrolled > 0, JSON.stringify(lefts));
      assert.ok(Math.abs(lefts.host - lefts.wrap) <= 1, `host name stays at the grid's left edge: ${JSON.stringify(lefts)}`);
      assertClean(problems);
    });
  });
});

test('rate chart: a canvas and a non-empty rate series from stats frames, kept across reconnects', async () => {
  await withServer(async (server) => {
    await withDashboard(suite.browser, server, async ({ page, problems }) => {
      assert.equal(await page.isVisible('#rate-chart'), true);
      // A rate is the difference between two stats frames: post only once the first frame (the
      // base) is in, or both events may already be counted in it. A new connection's first
      // frame is the next one built after it connected (it shows in DASHBOARDS).
      await page.waitForFunction(() => /^\d+$/.test(document.getElementById('clients').textContent));
      await postEvents(server, [{ host: 'a', service: 'b', state: 'ok' }, { host: 'a', service: 'c', state: 'critical' }]);
      await page.waitForFunction(() => window.statecast.rates.events.length >= 3 && window.statecast.rates.changes.length >= 3);
      const rates = await page.evaluate(() => window.statecast.rates);
      assert.ok(rates.events.every(([t, v]) => Number.isFinite(t) && Number.isFinite(v) && v >= 0));
      assert.ok(rates.events.some(([, v]) => v > 0), 'the posted events show up as a rate');
      // Drawn (at most once a second): the canvas has pixels and a point count.
      await page.waitForFunction(() => Number(document.getElementById('rate-chart').dataset.points) > 0);
      const size = await page.$eval('#rate-chart', (c) => [c.width, c.height]);
      assert.ok(size[0] > 100 && size[1] > 50, `canvas ${size}`);

      // A reconnect keeps the series.
      const before = rates.events.length;
      await page.evaluate(() => document.getElementById('retry').click());
      await page.waitForFunction((n) => window.statecast.rates.events.length > n + 2, before);
      assertClean(problems);
    });
  });
});
