// Problems table: rows, colours, counts, ordering, removal, in-place updates, live log, keyboard.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, browserSuite, withDashboard, sendRiemann, postEvents, waitForRows, readRows,
  badgeColour, colour, assertClean, ago, waitHeaderSettled, waitTitle, WAIT_MS,
} from './helpers.mjs';

const suite = browserSuite();

const rowKeys = (rows) => rows.map((r) => `${r.host}/${r.service}`);

async function countText(page, state) {
  return page.$eval('#summary', (ul, s) => ul.querySelector(`[data-state="${s}"] .count-n`)?.textContent ?? null, state);
}

test('critical and warning events appear as coloured rows, with counts and the title', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    // Empty to start with: the page says so.
    await page.waitForFunction(() => !document.getElementById('empty').hidden);
    await waitTitle(page, 'statecast');
    assert.equal(await page.textContent('#problem-count'), '0');

    await sendRiemann(suite.server, {
      host: 'web1', service: 'cpu', state: 'critical', description: 'CPU at 97% for 5 minutes',
      metric: 0.97, tags: ['prod', 'frontend'],
    });
    await sendRiemann(suite.server, {
      host: 'web2', service: 'disk /', state: 'warning', description: '85% used', metric: 85.5,
      attributes: { team: 'infra' },
    });
    await postEvents(suite.server, [
      { host: 'db1', service: 'replication', state: 'expired', description: 'no data' },
      { host: 'lb1', service: 'health', state: 'degraded', metric: 3 },
      { host: 'web3', service: 'cpu', state: 'ok', metric: 0.12 },
    ]);

    // Worst first: critical, warning, expired, other. ok is not a problem.
    await waitForRows(page, ['web1/cpu', 'web2/disk /', 'db1/replication', 'lb1/health']);

    assert.ok(colour.isRed(await badgeColour(page, 'web1', 'cpu')), 'critical badge is red');
    assert.ok(colour.isOrange(await badgeColour(page, 'web2', 'disk /')), 'warning badge is orange');
    assert.ok(colour.isGrey(await badgeColour(page, 'db1', 'replication')), 'expired badge is grey');
    assert.ok(colour.isBlue(await badgeColour(page, 'lb1', 'health')), 'other states are blue');

    const rows = await readRows(page);
    assert.deepEqual(
      { state: rows[0].state, metric: rows[0].metric, description: rows[0].description, tags: rows[0].tags },
      { state: 'critical', metric: '0.97', description: 'CPU at 97% for 5 minutes', tags: ['prod', 'frontend'] },
    );
    assert.equal(rows[1].metric, '85.5');
    assert.ok(rows[1].attributes.includes('team=infra'), `custom attributes shown: ${rows[1].attributes}`);
    assert.equal(rows[3].state, 'degraded');

    // Counts: header, per-state summary, document title.
    await page.waitForFunction(() => document.title === '(4) statecast');
    assert.equal(await page.textContent('#problem-count'), '4');
    assert.equal(await countText(page, 'critical'), '1');
    assert.equal(await countText(page, 'warning'), '1');
    assert.equal(await countText(page, 'expired'), '1');
    assert.equal(await countText(page, 'other'), '1');
    assert.equal(await countText(page, 'ok'), null, 'no ok count: ok events that never changed are not pushed');

    // Header: seq from the stream, connected dashboards from stats.
    await page.waitForFunction(() => /^\d+$/.test(document.getElementById('seq').textContent));
    await page.waitForFunction(() => Number(document.getElementById('clients').textContent) >= 1);

    // The live log shows the transitions, newest first.
    const log = await page.$$eval('#log .log-item:not(.note)', (lis) => lis.map((li) => li.textContent));
    assert.ok(log.length >= 4, `live log has the transitions: ${JSON.stringify(log)}`);
    assert.match(log.at(-1), /ok→critical.*web1 · cpu/);
    assert.equal(await page.$eval('#empty', (e) => e.hidden), true);

    assertClean(problems);
  });
});

test('rows are ordered worst first, then longest-standing; time in state is relative with an absolute tooltip', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await postEvents(suite.server, [
      { host: 'ord-a', service: 'x', state: 'critical', time: ago(600) },
      { host: 'ord-b', service: 'x', state: 'critical', time: ago(60) },
      { host: 'ord-c', service: 'x', state: 'warning', time: ago(5 * 3600) },
      { host: 'ord-d', service: 'x', state: 'critical', time: ago(5 * 3600 + 120) },
    ]);
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr[data-key*="ord-"]').length === 4);
    const rows = (await readRows(page)).filter((r) => r.host.startsWith('ord-'));
    assert.deepEqual(rowKeys(rows), ['ord-d/x', 'ord-a/x', 'ord-b/x', 'ord-c/x']);
    assert.match(rows[0].age, /^5h 0[12]m$/);
    assert.match(rows[1].age, /^10m 0\ds$/);

    // Absolute time in the viewer's time zone (the test browser is in Europe/Berlin: CET in November, CEST in summer).
    const tip = await page.$eval('#problem-rows tr[data-key*="ord-a"] .c-age time', (t) => t.getAttribute('title'));
    assert.match(tip, /^critical since .*\bCES?T\b/);
    assertClean(problems);
  });
});

test('a change updates only its own row; critical→ok removes the row and the count', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await sendRiemann(suite.server, { host: 'chg1', service: 'api', state: 'critical', description: 'down' });
    await sendRiemann(suite.server, { host: 'chg2', service: 'api', state: 'critical', description: 'down too' });
    await page.waitForFunction(() => document.querySelectorAll('#problem-rows tr[data-key*="chg"]').length === 2);
    await waitHeaderSettled(page);
    const before = Number(await page.textContent('#problem-count'));

    // Mark the DOM nodes, then change only chg1: chg2's row must be the very same element, untouched.
    await page.$$eval('#problem-rows tr', (trs) => trs.forEach((tr, i) => { tr.statecastMark = `m${i}`; }));
    const marks = await page.$$eval('#problem-rows tr', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.key, tr.statecastMark])));

    await sendRiemann(suite.server, { host: 'chg1', service: 'api', state: 'warning', description: 'degraded' });
    await page.waitForFunction(() => [...document.querySelectorAll('#problem-rows tr')]
      .some((tr) => tr.dataset.key.includes('chg1') && tr.querySelector('.badge').textContent === 'warning'));
    const after = await page.$$eval('#problem-rows tr', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.key, tr.statecastMark])));
    assert.deepEqual(after, marks, 'every row, including the changed one, is the same DOM element (updated in place)');
    const chg1 = (await readRows(page)).find((r) => r.host === 'chg1');
    assert.equal(chg1.description, 'degraded');
    assert.ok(colour.isOrange(await badgeColour(page, 'chg1', 'api')));

    await sendRiemann(suite.server, { host: 'chg2', service: 'api', state: 'ok', description: 'recovered' });
    await page.waitForFunction(() => ![...document.querySelectorAll('#problem-rows tr')].some((tr) => tr.dataset.key.includes('chg2')));
    await page.waitForFunction((n) => document.title === `(${n}) statecast`
      && document.getElementById('problem-count').textContent === String(n), before - 1);
    const newest = await page.$eval('#log .log-item:not(.note)', (li) => li.textContent);
    assert.match(newest, /critical→ok.*chg2 · api.*recovered/);

    // Unrelated rows were never replaced.
    const remaining = await page.$$eval('#problem-rows tr', (trs) => trs.every((tr) => tr.statecastMark !== undefined));
    assert.ok(remaining, 'no row was re-created');
    assertClean(problems);
  });
});

test('a page opened later gets the current problems from the snapshot, once each', async () => {
  await sendRiemann(suite.server, { host: 'snap1', service: 'queue', state: 'critical', description: 'backlog' });
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    const rows = await readRows(page);
    assert.equal(rows.filter((r) => r.host === 'snap1').length, 1);
    const keys = rowKeys(rows);
    assert.equal(new Set(keys).size, keys.length, `no duplicate rows: ${keys}`);
    await waitTitle(page, `(${rows.length}) statecast`);
    // A snapshot only says when a service last reported; the page asks the server's history when
    // the state began, so the age is exact rather than a lower bound ("≥ 3s").
    await page.waitForFunction(() => [...document.querySelectorAll('#problem-rows tr')]
      .every((tr) => /^\d/.test(tr.querySelector('.c-age').textContent)));
    assertClean(problems);
  });
});

test('without history (--data-dir off) the age of a row known only from the snapshot is marked as a lower bound', async () => {
  await withServer({ dataDir: 'off' }, async (memoryOnly) => {
    await sendRiemann(memoryOnly, { host: 'mem1', service: 'disk', state: 'warning' });
    await withDashboard(suite.browser, memoryOnly, async ({ page, problems }) => {
      const [row] = await readRows(page);
      assert.match(row.age, /^≥ \d+s$/);
      const tip = await page.$eval('#problem-rows tr .c-age time', (t) => t.getAttribute('title'));
      assert.match(tip, /since at least/);
      // The details say why there is no history.
      await page.click('#problem-rows tr');
      await page.waitForFunction(() => /history/i.test(document.querySelector('#details .details-note')?.textContent ?? ''));
      // Once the state changes live, the time is exact.
      await sendRiemann(memoryOnly, { host: 'mem1', service: 'disk', state: 'critical' });
      await page.waitForFunction(() => /^\d+s$/.test(document.querySelector('#problem-rows tr .c-age').textContent));
      assertClean(problems, { allow: [/404/] });
    });
  });
});

test('the live log pauses and resumes; "/" focuses the filter', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    await page.click('#pause');
    assert.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true');
    await sendRiemann(suite.server, { host: 'log1', service: 'svc', state: 'critical' });
    // The table still updates while the log is paused.
    await page.waitForSelector('#problem-rows tr[data-key*="log1"]');
    await page.waitForFunction(() => /Resume \(1 new\)/.test(document.getElementById('pause').textContent));
    const paused = await page.$$eval('#log .log-item', (lis) => lis.some((li) => li.textContent.includes('log1')));
    assert.equal(paused, false, 'nothing added to the log while paused');
    await page.click('#pause');
    await page.waitForFunction(() => document.querySelector('#log .log-item')?.textContent.includes('log1'));

    // Keyboard: "/" focuses the filter from anywhere on the page.
    await page.click('h2#problems-title');
    await page.keyboard.press('/');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'filter');
    assert.equal(await page.inputValue('#filter'), '', '"/" is not typed into the box');
    await page.keyboard.press('Escape');
    assert.notEqual(await page.evaluate(() => document.activeElement?.id), 'filter');
    assertClean(problems);
  });
});

test('clicking a row opens its details with the transition history; Esc closes them', async () => {
  for (const state of ['critical', 'warning', 'critical']) {
    await sendRiemann(suite.server, { host: 'hist1', service: 'api latency', state, description: `now ${state}`, metric: 1.5 });
  }
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    const row = page.locator('#problem-rows tr', { has: page.locator('.c-host', { hasText: 'hist1' }) });
    await row.click();
    await page.waitForSelector('#details:not([hidden])');
    assert.equal(await page.textContent('#details-title'), 'hist1 · api latency');
    const fields = await page.$$eval('#details .details-fields dt', (dts) => dts.map((dt) => `${dt.textContent}=${dt.nextElementSibling.textContent}`));
    assert.ok(fields.includes('Description=now critical'), JSON.stringify(fields));
    assert.ok(fields.includes('Metric=1.5'), JSON.stringify(fields));

    const history = await fetch(`http://${suite.server.http}/api/history?since=0&limit=1`);
    if ((history.headers.get('content-type') ?? '').includes('json') && history.ok) {
      // Newest first: the three transitions of this service.
      await page.waitForFunction(() => document.querySelectorAll('#details .history-item').length === 3);
      const items = await page.$$eval('#details .history-item .log-states', (els) => els.map((e) => e.textContent));
      assert.deepEqual(items, ['warning→critical', 'critical→warning', 'ok→critical']);
      // History pinned down when the current state began: no more "at least".
      await page.waitForFunction(() => /^\d/.test(document.querySelector('#problem-rows tr.selected .c-age').textContent));
    } else {
      await page.waitForSelector('#details .details-note');
    }

    // A live change to the open service shows up in the drawer.
    await sendRiemann(suite.server, { host: 'hist1', service: 'api latency', state: 'warning', description: 'better' });
    await page.waitForFunction(() => document.querySelector('#details .details-state .badge')?.textContent === 'warning');

    await page.keyboard.press('Escape');
    await page.waitForSelector('#details', { state: 'hidden' });
    // Keyboard: the row keeps focus, and Enter opens the details again.
    await page.keyboard.press('Enter');
    await page.waitForSelector('#details:not([hidden])');
    await page.click('#details-close');
    await page.waitForSelector('#details', { state: 'hidden' });
    assertClean(problems);
  });
});

test('the page is served with a Content-Security-Policy that forbids inline script', async () => {
  const res = await fetch(suite.server.url, { signal: AbortSignal.timeout(WAIT_MS) });
  const csp = res.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
});

test('a service expired for longer than --expired-keep leaves the table, the grid and the counts', async () => {
  const args = ['--reap-interval', '0.05', '--expired-keep', '1.5'];
  await withServer({ extraArgs: args }, async (keeping) => {
    await withDashboard(suite.browser, keeping, async ({ page, problems }) => {
      await sendRiemann(keeping, { host: 'pod-7f3a', service: 'http', state: 'critical', ttl: 0.5 });
      await sendRiemann(keeping, { host: 'web2', service: 'cpu', state: 'warning', ttl: 600 });
      await page.click('#tab-grid');
      await page.waitForFunction(() => document.querySelectorAll('#grid-rows tr[data-host="pod-7f3a"]').length === 1);
      await page.click('#tab-problems');
      // Silent past its TTL: still shown, as expired...
      await page.waitForFunction(() => [...document.querySelectorAll('#problem-rows tr .c-state .badge')]
        .some((b) => b.textContent === 'expired'));
      // ...then removed, from the table and the counts.
      await waitForRows(page, ['web2/cpu']);
      await waitTitle(page, '(1) statecast');
      await waitHeaderSettled(page);
      assert.equal(await countText(page, 'expired'), null, 'no expired count left');
      const notes = await page.$$eval('#log .log-item.note', (lis) => lis.map((li) => li.textContent));
      assert.ok(notes.some((n) => /pod-7f3a · http removed/.test(n)), `log: ${notes}`);
      // The grid drops the host whose only service went.
      await page.click('#tab-grid');
      await page.waitForFunction(() => document.querySelectorAll('#grid-rows tr[data-host="pod-7f3a"]').length === 0
        && document.querySelectorAll('#grid-rows tr[data-host="web2"]').length === 1);
      // A page opened now agrees.
      await withDashboard(suite.browser, keeping, async (fresh) => {
        await waitForRows(fresh.page, ['web2/cpu']);
        assertClean(fresh.problems);
      });
      // Back again: a new row, whose details list the removal in its history.
      await page.click('#tab-problems');
      await sendRiemann(keeping, { host: 'pod-7f3a', service: 'http', state: 'critical', ttl: 600 });
      await waitForRows(page, ['pod-7f3a/http', 'web2/cpu']);
      await page.click('#problem-rows tr');
      await page.waitForFunction(() => /removed \(expired too long\)/.test(document.getElementById('details').textContent));
      assertClean(problems);
    });
  });
});
