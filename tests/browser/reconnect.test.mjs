// The server goes away and comes back on the same port: the page says so, reconnects by itself,
// and shows what changed in between — never a duplicated or a lost row.
//
// Phase 1 restarts on the same database: the page resumes (?since=&epoch=) and the server replays
// the changes made while it was away. Phase 2 restarts on an empty database (history lost, new
// epoch): the server answers the resume with a reset snapshot, and the page says its view was reset.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, browserSuite, withDashboard, sendRiemann, postEvents, waitForRows, readRows,
  waitLive, assertClean, tempDataDir, waitTitle,
} from './helpers.mjs';

const suite = browserSuite({ server: false });

// Chromium logs a failed websocket handshake as a console error while the server is down.
const RECONNECT_NOISE = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/, /ERR_INTERNET_DISCONNECTED/];

const connState = (page) => page.$eval('#conn', (c) => ({ state: c.dataset.state, text: c.querySelector('#conn-text').textContent.trim() }));
const logNotes = (page) => page.$$eval('#log .log-item.note', (lis) => lis.map((li) => li.textContent));

test('the page reconnects after server restarts and shows the changes made meanwhile', async () => {
  const dataDir = tempDataDir();
  suite.server = await startServer({ dataDir });
  await withDashboard(suite.browser, suite.server, async ({ page, context, problems }) => {
    await sendRiemann(suite.server, { host: 'web1', service: 'cpu', state: 'critical', description: 'before restart' });
    await sendRiemann(suite.server, { host: 'web2', service: 'cpu', state: 'critical', description: 'resolved while away' });
    await waitForRows(page, ['web1/cpu', 'web2/cpu']);
    const httpAddr = suite.server.http;

    // Phase 1: the browser is offline while the server restarts; changes land in the new process.
    await context.setOffline(true);
    await suite.server.stop();
    await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'offline');
    assert.equal((await connState(page)).text.startsWith('offline'), true);
    // The last known rows stay on screen, marked stale.
    assert.equal(await page.evaluate(() => document.body.classList.contains('stale')), true);
    assert.equal((await readRows(page)).length, 2);

    suite.server = await startServer({ http: httpAddr, dataDir });
    assert.equal(suite.server.http, httpAddr, 'restarted on the same HTTP port');
    await sendRiemann(suite.server, { host: 'web2', service: 'cpu', state: 'ok', description: 'recovered' });
    await sendRiemann(suite.server, { host: 'web3', service: 'disk', state: 'warning', description: 'new while away' });
    await postEvents(suite.server, [{ host: 'db1', service: 'lag', state: 'critical', description: 'posted while away' }]);

    await context.setOffline(false);
    await waitLive(page);
    await waitForRows(page, ['web1/cpu', 'db1/lag', 'web3/disk']);
    await waitTitle(page, '(3) statecast');
    assert.equal(await page.evaluate(() => document.body.classList.contains('stale')), false);
    // The missed transitions are in the live log too (replayed, or at least the reconnect noted).
    assert.ok((await logNotes(page)).some((n) => /Reconnected|View reset/.test(n)));

    // Phase 2: restart on an empty database. The page backs off, counts down, reconnects by itself,
    // and replaces its view with the new server's state.
    await suite.server.stop();
    await page.waitForFunction(() => document.getElementById('conn').dataset.state !== 'live');
    await page.waitForFunction(() => /reconnecting/.test(document.getElementById('conn').textContent));

    const freshDir = tempDataDir();
    suite.server = await startServer({ http: httpAddr, dataDir: freshDir });
    await sendRiemann(suite.server, { host: 'web1', service: 'cpu', state: 'critical', description: 'third process' });
    await waitLive(page);
    await waitForRows(page, ['web1/cpu']);
    // Changes after the reconnect arrive live.
    await sendRiemann(suite.server, { host: 'web4', service: 'mem', state: 'critical', description: 'live after reconnect' });
    await waitForRows(page, ['web1/cpu', 'web4/mem']);
    const rows = await readRows(page);
    assert.deepEqual(rows.map((r) => r.description), ['third process', 'live after reconnect']);
    await waitTitle(page, '(2) statecast');
    assert.equal((await connState(page)).text, 'live');

    // Whether the server said "reset" or simply sent a snapshot, the log records the reconnect;
    // a reset also raises the banner.
    const notes = await logNotes(page);
    assert.ok(notes.filter((n) => /Reconnected|View reset/.test(n)).length >= 2, `log notes the reconnects: ${notes}`);
    if (notes.some((n) => n.includes('View reset'))) {
      assert.equal(await page.isVisible('#banner'), true, 'a reset view is announced in the banner');
    }
    assertClean(problems, { allow: RECONNECT_NOISE });
  });
});
