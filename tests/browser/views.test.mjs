// The page's own controls: sorting by column, grouping (kept in the URL), the theme and clock
// toggles (remembered), host names on one line, the filter hint, and the rates chart's last hour
// right after a reload (GET /api/rates).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  browserSuite, withDashboard, postEvents, sendRiemann, waitForRows, readRows, assertClean, waitLive, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite({
  seed: async (server) => {
    await postEvents(server, [
      { host: 'web-10', service: 'cpu', state: 'warning', metric: 5, team: 'frontend' },
      { host: 'web-2', service: 'disk', state: 'critical', metric: 1, team: 'frontend', tags: ['prod'] },
      { host: 'web-2', service: 'cpu', state: 'warning', metric: 7, team: 'frontend', tags: ['prod'] },
      { host: 'db-primary-replica-europe-west-01', service: 'lag', state: 'critical', metric: 3, team: 'data', tags: ['prod', 'db'] },
    ]);
  },
});

const param = (page, name) => new URL(page.url()).searchParams.get(name);

test('clicking a column header sorts by it, again reverses; the order is kept in the URL', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.row').length === 4);
    await page.click('#problems th[data-sort="host"] button');
    await waitForRows(page, ['db-primary-replica-europe-west-01/lag', 'web-2/disk', 'web-2/cpu', 'web-10/cpu']);
    assert.equal(await page.getAttribute('#problems th[data-sort="host"]', 'aria-sort'), 'ascending');
    assert.equal(param(page, 'sort'), 'host');
    await page.click('#problems th[data-sort="host"] button');
    assert.equal(param(page, 'sort'), '-host');
    // The URL changes at the click, the header with the next drawn frame: wait for it.
    await page.waitForFunction(() => document.querySelector('#problems th[data-sort="host"]').getAttribute('aria-sort') === 'descending');
    // The rows follow on the next frame: wait for them rather than read them at once.
    await page.waitForFunction((want) => [...document.querySelectorAll('#problem-rows tr.row .c-host')].map((td) => td.textContent).join() === want,
      ['web-10', 'web-2', 'web-2', 'db-primary-replica-europe-west-01'].join());
    await page.click('#problems th[data-sort="metric"] button');
    await waitForRows(page, ['web-2/disk', 'db-primary-replica-europe-west-01/lag', 'web-10/cpu', 'web-2/cpu']);
    // A link reproduces the order.
    await page.reload();
    await waitLive(page);
    await waitForRows(page, ['web-2/disk', 'db-primary-replica-europe-west-01/lag', 'web-10/cpu', 'web-2/cpu']);
    assertClean(problems);
  });
});

test('grouping by host, by an attribute: one collapsible row per group with its worst state and counts', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await page.selectOption('#group-by', 'host');
    assert.equal(param(page, 'group'), 'host');
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.group-row').length === 3);
    const groups = await page.$$eval('#problem-rows tr.group-row', (trs) => trs.map((tr) => ({
      label: tr.querySelector('.group-label').textContent,
      worst: tr.querySelector('.badge').textContent,
      counts: tr.querySelector('.group-counts').textContent,
    })));
    assert.deepEqual(groups.map((g) => g.label), ['web-2', 'db-primary-replica-europe-west-01', 'web-10'], 'worst first, then the most of it');
    assert.deepEqual(groups[0], { label: 'web-2', worst: 'critical', counts: '1 critical · 1 warning' });
    // Rows sit under their group.
    const order = await page.$$eval('#problem-rows tr', (trs) => trs.map((tr) => (tr.classList.contains('group-row')
      ? `[${tr.querySelector('.group-label').textContent}]` : tr.querySelector('.c-service').textContent)));
    assert.deepEqual(order, ['[web-2]', 'disk', 'cpu', '[db-primary-replica-europe-west-01]', 'lag', '[web-10]', 'cpu']);

    // Collapse web-2: its rows go, the group row (with its counts) stays.
    await page.click('#problem-rows tr.group-row[data-group="host=web-2"] .group-toggle');
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.row').length === 2);
    assert.equal(await page.getAttribute('#problem-rows tr.group-row[data-group="host=web-2"] .group-toggle', 'aria-expanded'), 'false');
    await page.click('#problem-rows tr.group-row[data-group="host=web-2"] .group-toggle');
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.row').length === 4);

    // A live change lands in its group.
    await sendRiemann(suite.server, { host: 'web-10', service: 'mem', state: 'critical', attributes: { team: 'frontend' } });
    await page.waitForFunction(() => document.querySelector('#problem-rows tr.group-row[data-group="host=web-10"] .group-counts')?.textContent === '1 critical · 1 warning');

    // Any attribute: the options list the attributes of the problems.
    await page.focus('#group-by');
    await page.selectOption('#group-by', 'attr:team');
    assert.equal(param(page, 'group'), 'attr:team');
    await page.waitForFunction(() => [...document.querySelectorAll('#problem-rows tr.group-row .group-label')].map((l) => l.textContent).join() === 'frontend,data');
    // Kept in the URL: a reload groups the same way.
    await page.reload();
    await waitLive(page);
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.group-row').length === 2);
    assert.equal(await page.inputValue('#group-by'), 'attr:team');
    await page.selectOption('#group-by', '');
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.group-row').length === 0);
    assert.equal(param(page, 'group'), null);
    assertClean(problems);
  });
  await sendRiemann(suite.server, { host: 'web-10', service: 'mem', state: 'ok' });
});

test('theme toggle: auto → light → dark, remembered across a reload', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await bg();
    assert.equal(await page.textContent('#theme-toggle'), 'Theme: auto');
    await page.click('#theme-toggle');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
    assert.equal(await bg(), light);
    await page.click('#theme-toggle');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    assert.notEqual(await bg(), light, 'dark even though the system is light');
    await page.reload();
    await waitLive(page);
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    await page.click('#theme-toggle');
    assert.equal(await page.getAttribute('html', 'data-theme'), null, 'back to following the system');
    assertClean(problems);
  });
});

test('clock toggle: the live log and the details show the same clock, local or UTC', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await sendRiemann(suite.server, { host: 'clk', service: 'svc', state: 'critical', description: 'tick' });
    await page.waitForSelector('#log .log-item:not(.note)');
    await page.locator('#problem-rows tr.row', { has: page.locator('.c-host', { hasText: 'clk' }) }).click();
    await page.waitForSelector('#details .history-item');
    const read = () => page.evaluate(() => ({
      log: document.querySelector('#log .log-item:not(.note) .log-time').textContent,
      logAt: Number(document.querySelector('#log .log-item:not(.note) .log-time').dataset.at),
      history: document.querySelector('#details .history-item .history-time').textContent,
      eventTime: [...document.querySelectorAll('#details .details-fields dt')].find((dt) => dt.textContent === 'Event time').nextElementSibling.textContent,
    }));
    const local = await read();
    assert.doesNotMatch(local.log, /Z$/);
    assert.match(local.eventTime, /CES?T/, 'local time in the browser\'s zone (Europe/Berlin)');
    // The details drawer covers the header's toggles: press it with the drawer open.
    await page.$eval('#clock-toggle', (b) => b.click());
    const utc = await read();
    const hh = new Date(utc.logAt).toISOString().slice(11, 19);
    assert.equal(utc.log, `${hh}Z`, 'the log in UTC');
    assert.match(utc.history, / UTC$/, 'the details history in UTC');
    assert.match(utc.eventTime, /UTC/);
    // New log items follow the toggle, and it is remembered.
    await sendRiemann(suite.server, { host: 'clk', service: 'svc', state: 'warning' });
    await page.waitForFunction(() => /Z$/.test(document.querySelector('#log .log-item:not(.note) .log-time').textContent)
      && document.querySelector('#log .log-item:not(.note)').textContent.includes('warning'));
    await page.reload();
    await waitLive(page);
    assert.equal(await page.textContent('#clock-toggle'), 'UTC');
    await page.click('#clock-toggle');
    assert.equal(await page.textContent('#clock-toggle'), 'Local time');
    assertClean(problems, { allow: [/404/] });
  });
  await sendRiemann(suite.server, { host: 'clk', service: 'svc', state: 'ok' });
});

test('host names never break mid-word', async () => {
  await withDashboard(suite.browser, suite.server, { viewport: { width: 1100, height: 700 } }, async ({ page, problems }) => {
    const lines = await page.$$eval('#problem-rows tr.row .c-host', (tds) => tds.map((td) => {
      const range = document.createRange();
      range.selectNodeContents(td);
      const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      return [td.textContent, tops.size];
    }));
    for (const [host, n] of lines) assert.equal(n, 1, `${host} is on one line`);
    assertClean(problems);
  });
});

test('"PROBLEMS —" until the first snapshot; an unquoted value in the filter gets a hint', async () => {
  await withDashboard(suite.browser, suite.server, { live: false }, async ({ page, problems }) => {
    // The served page says "—", and so does the page until its snapshot arrives.
    const html = await (await fetch(suite.server.url)).text();
    assert.match(html, /id="problem-count">—</);
    await waitLive(page);
    assert.match(await page.textContent('#problem-count'), /^\d+$/);

    await page.fill('#filter', 'state = critical');
    await page.press('#filter', 'Enter');
    await page.waitForSelector('#filter-error[data-kind="hint"]:not([hidden])');
    assert.match(await page.textContent('#filter-error'), /state = "critical"/);
    await page.fill('#filter', 'state = "critical"');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.getElementById('filter-error').dataset.kind !== 'hint');
    assertClean(problems);
  });
});

test('the rates chart shows the recent past right after a reload', async () => {
  // The server has been sampling its counters since the suite started.
  await new Promise((r) => setTimeout(r, 1500));
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    const loadedAt = await page.evaluate(() => performance.timeOrigin);
    await page.waitForFunction((t) => (window.statecast.rates.events[0]?.[0] ?? Infinity) < t - 1000, loadedAt, { timeout: WAIT_MS });
    const points = await page.evaluate(() => window.statecast.rates.events.length);
    assert.ok(points >= 3, `points from before the page loaded: ${points}`);
    assertClean(problems);
  });
});

test('a row flashes when it changes, not when a sort later moves it (issue 24 item 3)', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    // The flash animations running now, as the hosts of their rows.
    const flashing = () => page.evaluate(() => document.getAnimations()
      .filter((a) => /^flash/.test(a.animationName ?? ''))
      .map((a) => a.effect.target.closest('tr').querySelector('.c-host').textContent));
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr.row').length >= 4);
    // A real change (a new state) flashes its row…
    await sendRiemann(suite.server, { host: 'web-10', service: 'cpu', state: 'critical', metric: 6, attributes: { team: 'frontend' } });
    await page.waitForFunction(() => document.getAnimations().some((a) => /^flash/.test(a.animationName ?? '')));
    assert.ok((await flashing()).includes('web-10'));
    // …once: when it is over, re-sorting the table (which moves that row) flashes nothing.
    await page.waitForFunction(() => !document.getAnimations().some((a) => /^flash/.test(a.animationName ?? '')));
    for (const column of ['host', 'host', 'metric']) {
      const before = (await readRows(page)).map((r) => `${r.host}/${r.service}`);
      await page.click(`#problems th[data-sort="${column}"] button`);
      await page.waitForFunction((b) => JSON.stringify([...document.querySelectorAll('#problem-rows tr.row')]
        .map((tr) => `${tr.querySelector('.c-host').textContent}/${tr.querySelector('.c-service').textContent}`)) !== b, JSON.stringify(before));
      assert.deepEqual(await flashing(), [], `sorting by ${column} flashed rows that did not change`);
    }
    assertClean(problems);
  });
});
