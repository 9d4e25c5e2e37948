// The live log records operator actions on silences (issue 24 item 6): a silence created,
// edited and deleted shows there with who and the query, on every page, like acks and clears.
// In a burst it draws the newest transitions and says how many it left out (issue 24's storm).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withDashboard, postEvents, assertClean } from './helpers.mjs';

const suite = browserSuite({
  seed: (server) => postEvents(server, [{ host: 'db-7', service: 'disk', state: 'warning' }]),
});

test('a silence created, edited and deleted shows in the live log with who and the query', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    const api = (path, method, body) => fetch(new URL(path, suite.server.url), {
      method, body: body && JSON.stringify(body), headers: { 'content-type': 'application/json' },
    });
    const waitNote = async (pattern) => {
      try {
        await page.waitForFunction((src) => [...document.querySelectorAll('#log .log-item.note .log-note')]
          .some((n) => new RegExp(src).test(n.textContent)), pattern.source);
      } catch (err) {
        const notes = await page.$$eval('#log .log-note', (ns) => ns.map((n) => n.textContent));
        throw new Error(`no log note matching ${pattern}; notes: ${JSON.stringify(notes)}\n${err.message}`);
      }
    };
    const created = await api('api/silence', 'POST', { query: 'host =~ "db%"', comment: 'disk swap', by: 'alice', duration: '2h' });
    assert.equal(created.status, 200);
    const { id } = await created.json();
    await waitNote(/^Silence created by alice: host =~ "db%" — disk swap$/);
    const edited = await api(`api/silence/${id}`, 'PUT', { query: 'host =~ "db-7%"', comment: 'disk swap, day 2', by: 'bob', duration: '3h' });
    assert.equal(edited.status, 200);
    await waitNote(/^Silence edited by bob: host =~ "db-7%" — disk swap, day 2$/);
    assert.equal((await api(`api/silence/${id}?by=carol`, 'DELETE')).status, 200);
    // Today's silences frame does not say who deleted it.
    await waitNote(/^Silence deleted( by carol)?: host =~ "db-7%"$/);
    assertClean(problems);
  });
});

test('a burst of transitions: the newest are drawn, a note counts the others, none goes unaccounted', async () => {
  await withDashboard(suite.browser, suite.server, async ({ page, problems }) => {
    // More at once than the log draws (at most 30 a second, bursts of 60; issue 24's storm).
    const n = 400;
    await postEvents(suite.server, Array.from({ length: n }, (_, i) => ({ host: `burst-${i}`, service: 'api', state: 'critical' })));
    const tally = () => page.evaluate(() => {
      const items = [...document.querySelectorAll('#log .log-item')];
      const drawn = items.filter((li) => !li.classList.contains('note') && li.textContent.includes('burst-'));
      const notes = items.map((li) => /^([\d,.\s]+) more transitions? not shown/.exec(li.querySelector('.log-note')?.textContent ?? '')).filter((m) => m !== null);
      return {
        drawn: drawn.length,
        skipped: notes.reduce((sum, m) => sum + Number(m[1].replace(/\D/g, '')), 0),
        newest: drawn[0]?.querySelector('.log-host')?.textContent ?? null,
      };
    });
    try {
      await page.waitForFunction(() => {
        const items = [...document.querySelectorAll('#log .log-item')];
        const drawn = items.filter((li) => !li.classList.contains('note') && li.textContent.includes('burst-')).length;
        const skipped = items.map((li) => /^([\d,.\s]+) more transitions? not shown/.exec(li.querySelector('.log-note')?.textContent ?? ''))
          .reduce((sum, m) => sum + (m ? Number(m[1].replace(/\D/g, '')) : 0), 0);
        return drawn + skipped === 400;
      });
    } catch (err) {
      throw new Error(`drawn + counted ≠ ${n}: ${JSON.stringify(await tally())}\n${err.message}`, { cause: err });
    }
    const { drawn, newest } = await tally();
    assert.ok(drawn < n / 2, `only some drawn: ${drawn}`);
    assert.equal(newest, `burst-${n - 1}`, 'the newest transition is drawn, at the top');
    assertClean(problems);
  });
});
