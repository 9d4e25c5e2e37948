// The header's notification indicator (issue 25): against a real statecast pointed at Debian's
// real Alertmanager, it says alerts are sent while Alertmanager is up, turns red with the reason
// once it is down, and green again when it is back; without --alertmanager it stays hidden.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { browserSuite, withServer, withDashboard, postEvents, assertClean, WAIT_MS } from './helpers.mjs';

const ALERTMANAGER = '/usr/bin/prometheus-alertmanager';
const suite = browserSuite({ server: false });

/** A loopback port free now (Alertmanager is restarted on it, so it is chosen once). */
async function freePort() {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (probe.address());
      probe.close(() => done(port));
    });
  });
}

/** Debian's Alertmanager on `port`, notifying nobody (the page only cares that it takes alerts). */
function startAlertmanager(dir, port) {
  const proc = spawn(ALERTMANAGER, [
    `--config.file=${resolve(dir, 'alertmanager.yml')}`,
    `--storage.path=${resolve(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--cluster.listen-address=',
  ], { stdio: 'ignore' });
  return proc;
}

async function stopAlertmanager(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((done) => proc.once('exit', done));
  proc.kill('SIGKILL');
  await exited;
}

/** The indicator's state and text, once `accept` says they are what the test waits for. */
async function indicator(page, accept, what) {
  try {
    await page.waitForFunction(accept, null, { timeout: WAIT_MS * 2 });
  } catch (err) {
    const now = await page.evaluate(() => ({ hidden: document.getElementById('alerting').hidden, state: document.getElementById('alerting').dataset.state, text: document.getElementById('alerting-text').textContent, answer: window.statecast.alerting }));
    throw new Error(`waiting for ${what}: ${JSON.stringify(now)} (${err})`);
  }
  return page.evaluate(() => {
    const box = document.getElementById('alerting');
    return { hidden: box.hidden, state: box.dataset.state, text: document.getElementById('alerting-text').textContent, title: box.title };
  });
}

test('the header says whether alerts reach Alertmanager: sent, then failing with the reason, then sent again', async () => {
  assert.ok(existsSync(ALERTMANAGER), `${ALERTMANAGER} is missing: install prometheus-alertmanager (scripts/test does)`);
  const dir = mkdtempSync(resolve(tmpdir(), 'statecast-alertmanager-'));
  writeFileSync(resolve(dir, 'alertmanager.yml'), "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n");
  const port = await freePort();
  let am = startAlertmanager(dir, port);
  try {
    const extraArgs = ['--alertmanager', `http://127.0.0.1:${port}`, '--alert-resend', '1s'];
    await withServer({ extraArgs }, async (server) => {
      await postEvents(server, [{ host: 'db1', service: 'disk', state: 'critical', description: 'full' }]);
      await withDashboard(suite.browser, server, async ({ page, problems }) => {
        const up = await indicator(page, () => document.getElementById('alerting').dataset.state === 'ok', 'alerts sent');
        assert.equal(up.hidden, false);
        assert.match(up.text, /^alerts: 1 firing, sent \d+s ago$/);
        // Failed attempts may be counted: statecast can try before Alertmanager listens.
        assert.match(up.title, new RegExp(`http://127\\.0\\.0\\.1:${port}: last success \\d+s ago, \\d+ sent, \\d+ failed`));

        // Down: the next resend fails (connection refused), and the header says so.
        await stopAlertmanager(am);
        const down = await indicator(page, () => document.getElementById('alerting').dataset.state === 'failing', 'alerts failing');
        assert.match(down.text, /^alerts not delivered to Alertmanager \(last success \d+s ago\): cannot connect to 127\.0\.0\.1:\d+/);
        const [colour, red] = await page.evaluate(() => {
          const probe = document.body.appendChild(document.createElement('span'));
          probe.style.color = 'var(--critical)';
          const colours = [getComputedStyle(document.getElementById('alerting')).color, getComputedStyle(probe).color];
          probe.remove();
          return colours;
        });
        assert.equal(colour, red, 'in the critical colour');

        // Back: the retried alerts go through and the indicator is green again.
        am = startAlertmanager(dir, port);
        await indicator(page, () => document.getElementById('alerting').dataset.state === 'ok', 'alerts sent again');
        assertClean(problems);
      });
    });
  } finally {
    await stopAlertmanager(am);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without --alertmanager the indicator stays hidden and the API says alerting is off', async () => {
  await withServer(async (server) => {
    await withDashboard(suite.browser, server, async ({ page, problems }) => {
      await page.waitForFunction(() => window.statecast.alerting !== null);
      const answer = await page.evaluate(() => window.statecast.alerting);
      assert.deepEqual(answer, { enabled: false });
      assert.equal(await page.evaluate(() => document.getElementById('alerting').hidden), true);
      assertClean(problems);
    });
  });
});
