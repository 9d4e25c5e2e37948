// Browser notifications: opt-in (the permission is asked on click), fired for new problems only,
// and damped for a flapping service (one "flapping" notification, then quiet). The Notification
// API is replaced by a stand-in before the page loads, so the test sees every notification.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { browserSuite, withDashboard, postEvents, sendRiemann, assertClean, waitLive } from './helpers.mjs';
import { FLAP_START } from '../../static/js/flap.js';

const suite = browserSuite();

/** Stands in for window.Notification; `answer` is what requestPermission resolves to. */
const fakeNotifications = (answer) => `(() => {
  const shown = [];
  class FakeNotification {
    constructor(title, options = {}) { shown.push({ title, body: options.body ?? '', tag: options.tag ?? '' }); }
    // Like a browser's, the answer is kept for the site (here: for the tab).
    static permission = sessionStorage.getItem('fake-permission') ?? 'default';
    static async requestPermission() {
      FakeNotification.asked = (FakeNotification.asked ?? 0) + 1;
      FakeNotification.permission = ${JSON.stringify(answer)};
      sessionStorage.setItem('fake-permission', FakeNotification.permission);
      return FakeNotification.permission;
    }
  }
  window.Notification = FakeNotification;
  window.__shown = shown;
})();`;

const shown = (page) => page.evaluate(() => window.__shown.map((n) => n.title));

test('notifications are opt-in: the permission is asked on click, then new problems notify', async () => {
  await withDashboard(suite.browser, suite.server, { initScript: fakeNotifications('granted') }, async ({ page, problems }) => {
    assert.equal(await page.getAttribute('#notify-toggle', 'aria-pressed'), 'false');
    await sendRiemann(suite.server, { host: 'n1', service: 'api', state: 'critical', description: 'before opting in' });
    await page.waitForSelector('#problem-rows tr.row[data-key*="n1"]');
    assert.deepEqual(await shown(page), [], 'nothing before the user opted in');
    assert.equal(await page.evaluate(() => window.Notification.asked ?? 0), 0, 'not asked on load');

    await page.click('#notify-toggle');
    await page.waitForFunction(() => document.getElementById('notify-toggle').getAttribute('aria-pressed') === 'true');
    assert.equal(await page.evaluate(() => window.Notification.asked), 1);

    await sendRiemann(suite.server, { host: 'n2', service: 'api', state: 'critical', description: 'down' });
    await page.waitForFunction(() => window.__shown.length === 1);
    assert.deepEqual(await page.evaluate(() => window.__shown[0]), { title: 'critical: n2 · api', body: 'down', tag: JSON.stringify(['n2', 'api']) });
    // Better is not news; worse is.
    await sendRiemann(suite.server, { host: 'n2', service: 'api', state: 'warning' });
    await sendRiemann(suite.server, { host: 'n2', service: 'api', state: 'critical' });
    await page.waitForFunction(() => window.__shown.length === 2);
    await sendRiemann(suite.server, { host: 'n2', service: 'api', state: 'ok' });
    await page.waitForFunction(() => !document.querySelector('#problem-rows tr.row[data-key*="n2"]'));
    assert.equal((await shown(page)).length, 2);

    // The choice is remembered; switching it off stops notifications.
    await page.reload();
    await waitLive(page);
    assert.equal(await page.getAttribute('#notify-toggle', 'aria-pressed'), 'true');
    await page.click('#notify-toggle');
    assert.equal(await page.getAttribute('#notify-toggle', 'aria-pressed'), 'false');
    await sendRiemann(suite.server, { host: 'n3', service: 'api', state: 'critical' });
    await page.waitForSelector('#problem-rows tr.row[data-key*="n3"]');
    assert.deepEqual(await shown(page), []);
    assertClean(problems);
  });
});

test('a denied permission leaves notifications off and says why', async () => {
  await withDashboard(suite.browser, suite.server, { initScript: fakeNotifications('denied') }, async ({ page, problems }) => {
    await page.click('#notify-toggle');
    await page.waitForFunction(() => document.getElementById('notify-toggle').dataset.permission === 'denied');
    assert.equal(await page.getAttribute('#notify-toggle', 'aria-pressed'), 'false');
    assert.match(await page.getAttribute('#notify-toggle', 'title'), /blocked/);
    assertClean(problems);
  });
});

test(`flap damping: a service changing state more than ${FLAP_START} times notifies once that it flaps, then stays quiet`, async () => {
  await withDashboard(suite.browser, suite.server, { initScript: fakeNotifications('granted') }, async ({ page, problems }) => {
    await page.click('#notify-toggle');
    await page.waitForFunction(() => document.getElementById('notify-toggle').getAttribute('aria-pressed') === 'true');
    // ok→critical→ok→… : every critical is a new problem until the sixth change marks it flapping.
    const states = ['critical', 'ok', 'critical', 'ok', 'critical', 'ok', 'critical', 'ok', 'critical'];
    for (const state of states) await postEvents(suite.server, [{ host: 'flappy', service: 'vpn', state }]);
    await page.waitForFunction((n) => document.querySelectorAll('#log .log-item:not(.note)').length >= n, states.length);
    await page.waitForSelector('#problem-rows tr.row[data-key*="flappy"]');
    assert.deepEqual(await shown(page), [
      'critical: flappy · vpn', 'critical: flappy · vpn', 'critical: flappy · vpn', 'Flapping: flappy · vpn',
    ]);
    assert.equal(await page.evaluate(() => window.statecast.isFlapping('flappy', 'vpn')), true);
    const flagged = await page.$$eval('#log .log-item:not(.note)', (lis) => lis.filter((li) => li.querySelector('.log-flag')).length);
    assert.ok(flagged >= 1, 'the live log marks the flapping transitions');
    // Another service still notifies.
    await sendRiemann(suite.server, { host: 'steady', service: 'db', state: 'critical' });
    await page.waitForFunction(() => window.__shown.length === 5);
    assertClean(problems);
  });
});
