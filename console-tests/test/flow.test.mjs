// The daily work through the console, in a real Chromium against a real rcrt-server: sign in with
// the admin token, create a secret, reveal it with a reason (hidden again by the button and by
// the timer), find the decrypt's audit row, update and roll back (three versions), mint a token
// (shown once) and revoke it, sign out (the session is revoked server-side).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  api,
  apiOk,
  confirmDialog,
  goto,
  launchBrowser,
  newPage,
  open,
  settled,
  signIn,
} from '../support/console.mjs';
import { serviceToken, startServer } from '../support/rcrt-server.mjs';

const ADMIN = serviceToken();
const NAME = 'app/db-password';
const VALUE1 = `first-${Math.random().toString(36).slice(2)}-value`;
const VALUE2 = `second-${Math.random().toString(36).slice(2)}-value`;
const REASON = `INC-4711 checking the replica password ${Date.now()}`;

let server;
let browser;
let context;
let page;
let secretId;

/** Everything the page holds: DOM, URL, title. A value must be in none of them once hidden. */
async function pageText() {
  return page.evaluate(() => `${location.href}\n${document.title}\n${document.documentElement.outerHTML}`);
}

describe('console: the daily flow', () => {
  before(async () => {
    server = await startServer({ bootstrapAdminToken: ADMIN });
    browser = await launchBrowser();
    ({ context, page } = await newPage(browser));
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('signs in with the admin token; the browser keeps neither the token nor a readable cookie', async () => {
    await signIn(page, server.baseUrl, ADMIN);
    assert.equal(await page.textContent('#who-user'), 'bootstrap-admin');
    assert.equal(await page.textContent('#who-tenant'), 'default');
    assert.equal(await page.isVisible('#nav-kek'), true, 'an operator sees the KEK screen');
    assert.equal(await page.$('#signin-form'), null);
    const stored = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
    }));
    assert.deepEqual(stored, { local: 0, session: 0, cookie: '' });
    assert.ok(!(await pageText()).includes(ADMIN), 'the token is nowhere in the page');
    const cookies = await context.cookies();
    const c = cookies.find((x) => x.name === 'rcrt_console');
    assert.ok(c, `session cookie set: ${JSON.stringify(cookies)}`);
    assert.equal(c.httpOnly, true);
    assert.equal(c.sameSite, 'Strict');
    assert.equal(c.path, '/');
    assert.notEqual(c.value, ADMIN, 'the cookie is a session, not the credential');
  });

  it('creates a secret through the form', async () => {
    await goto(page, '#/secrets/new');
    await page.fill('#new-name', NAME);
    await page.selectOption('#new-scope-type', 'workspace');
    await page.fill('#new-scope-id', 'team-a');
    await page.fill('#new-value', VALUE1);
    await page.fill('#new-labels', 'env=prod, team=core');
    await page.click('#new-secret-form button[type=submit]');
    await page.waitForFunction(() => /^#\/secrets\/[0-9a-f-]{36}$/.test(location.hash));
    await settled(page);
    secretId = page.url().split('#/secrets/')[1];
    assert.equal(await page.textContent('#secret-title'), NAME);
    const meta = await apiOk(server.baseUrl, ADMIN, 'GET', `/secrets/${secretId}`);
    assert.equal(meta.scope_id, 'team-a');
    assert.deepEqual(meta.labels, { env: 'prod', team: 'core' });
    assert.ok(!(await pageText()).includes(VALUE1), 'the value is not kept on the page');
    // Listed by scope, with its labels.
    await goto(page, '#/secrets?scope_type=workspace&scope_id=team-a');
    const row = page.locator(`#secrets-table tr[data-secret-id="${secretId}"]`);
    assert.match(await row.textContent(), /env=prod/);
    assert.ok(!(await pageText()).includes(VALUE1));
  });

  it('reveals the value only with a reason, then hides it by the button', async () => {
    await goto(page, `#/secrets/${secretId}`);
    let decrypts = 0;
    page.on('request', (r) => {
      if (r.url().endsWith('/decrypt')) decrypts++;
    });
    await page.click('#reveal-open');
    await page.click('#reveal-form button[type=submit]');
    await page.waitForSelector('#reveal-form [role=alert]');
    assert.equal(decrypts, 0, 'no decrypt without a reason');

    await page.fill('#reveal-reason', REASON);
    await page.click('#reveal-form button[type=submit]');
    await page.waitForSelector('#revealed code');
    assert.equal(await page.textContent('#revealed code'), VALUE1);
    assert.equal(decrypts, 1);
    assert.ok(!page.url().includes(VALUE1) && !(await page.title()).includes(VALUE1));
    assert.match(await page.textContent('#revealed .countdown'), /in (30|29|28) s/);
    await page.click('#revealed [data-action=hide-value]');
    await page.waitForSelector('#revealed', { state: 'detached' });
    assert.ok(!(await pageText()).includes(VALUE1), 'hidden: gone from the DOM');
    assert.ok(!page.consoleLines.some((l) => l.includes(VALUE1)), 'never logged');
  });

  it('hides a revealed value automatically, and when the screen is left', async () => {
    // The route may shorten the 30 s (never lengthen it): hide after 2 s.
    await goto(page, `#/secrets/${secretId}?hide=2`);
    await page.click('#reveal-open');
    await page.fill('#reveal-reason', `${REASON} (auto-hide)`);
    await page.click('#reveal-form button[type=submit]');
    await page.waitForSelector('#revealed code');
    assert.equal(await page.textContent('#revealed code'), VALUE1);
    const t0 = Date.now();
    await page.waitForSelector('#revealed', { state: 'detached', timeout: 6000 });
    assert.ok(Date.now() - t0 >= 1000, 'not hidden at once');
    assert.ok(!(await pageText()).includes(VALUE1));

    // A longer delay than 30 s is not accepted: still 30.
    await goto(page, `#/secrets/${secretId}?hide=999`);
    await page.click('#reveal-open');
    await page.fill('#reveal-reason', `${REASON} (leave)`);
    await page.click('#reveal-form button[type=submit]');
    await page.waitForSelector('#revealed code');
    assert.match(await page.textContent('#revealed .countdown'), /in (30|29) s/);
    await goto(page, '#/secrets');
    assert.ok(!(await pageText()).includes(VALUE1), 'leaving the screen hides the value');
  });

  it('shows the decrypt in the audit log with its reason', async () => {
    await goto(page, '#/audit');
    await page.fill('#a-secret-id', secretId);
    await page.selectOption('#a-action', 'decrypt');
    await page.click('form[role=search] button[type=submit]');
    await page.waitForFunction((id) => location.hash.includes(id), secretId);
    await settled(page);
    const rows = page.locator('#audit-table tbody tr');
    assert.equal(await rows.count(), 3, 'three decrypts so far');
    const reasons = await page.locator('#audit-table .audit-reason').allTextContents();
    assert.ok(reasons.includes(REASON), `the reason is listed: ${JSON.stringify(reasons)}`);
    const row = page.locator('#audit-table tbody tr').filter({
      has: page.locator('.audit-reason', { hasText: new RegExp(`^${REASON}$`) }),
    });
    assert.equal(await row.count(), 1);
    assert.match(await row.textContent(), /decrypt.*success.*bootstrap-admin/s);
  });

  it('updates the value and rolls back: three versions, the first value current again', async () => {
    await goto(page, `#/secrets/${secretId}`);
    await page.fill('#update-value', VALUE2);
    await page.click('#update-form button[type=submit]');
    await page.waitForSelector('#versions-table tr[data-version="2"]');
    assert.equal(await page.inputValue('#update-value'), '', 'the new value is cleared from the form');
    await page.click('#versions-table tr[data-version="1"] [data-action=rollback]');
    await confirmDialog(page);
    await page.waitForSelector('#versions-table tr[data-version="3"]');
    assert.equal(await page.locator('#versions-table tbody tr').count(), 3);
    assert.match(await page.textContent('#versions-table tr[data-version="3"]'), /current/);
    assert.match(await page.textContent('#secret-meta'), /v3/);
    const versions = await apiOk(server.baseUrl, ADMIN, 'GET', `/secrets/${secretId}/versions`);
    assert.deepEqual(versions.versions.map((v) => v.version), [3, 2, 1]);
    // The rollback wrote v1's value as v3.
    await page.click('#reveal-open');
    await page.fill('#reveal-reason', `${REASON} (after rollback)`);
    await page.click('#reveal-form button[type=submit]');
    await page.waitForSelector('#revealed code');
    assert.equal(await page.textContent('#revealed code'), VALUE1);
    await page.click('#revealed [data-action=hide-value]');
    await page.waitForSelector('#revealed', { state: 'detached' });
  });

  it('mints a token shown once, then revokes it', async () => {
    await goto(page, '#/tokens');
    await page.fill('#token-name', 'ci-deploy');
    await page.check('#role-secrets-read');
    await page.fill('#token-workspaces', 'team-a');
    // A token for a new service outlives the console session (1 h): it may live as long as
    // the admin token the session was opened with could make it.
    await page.fill('#token-ttl', '30d');
    await page.click('#token-form button[type=submit]');
    await page.waitForSelector('#token-value');
    const token = await page.textContent('#token-value');
    assert.match(token, /^rcrt_[0-9a-f]{32}_[0-9a-f]{64}$/);
    const minted = (await apiOk(server.baseUrl, ADMIN, 'GET', '/auth/tokens', undefined, 200)).items
      .find((t) => t.name === 'ci-deploy');
    const days = (new Date(minted.expires_at) - new Date(minted.created_at)) / 86400e3;
    assert.equal(Math.round(days), 30, `30 days, not the session's hour: ${minted.expires_at}`);
    // It works, with the reach it was given.
    const listed = await api(server.baseUrl, token, 'GET', '/secrets?scope_type=workspace&scope_id=team-a');
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.data.items.map((s) => s.name), [NAME]);
    // The list never shows it; Done removes it; a reload never brings it back.
    const row = page.locator('#token-list tr[data-token-name="ci-deploy"]');
    await row.waitFor();
    assert.ok(!(await row.textContent()).includes(token));
    // The list marks this browser's own session, and only it.
    assert.equal(await page.locator('[data-current-session]').count(), 1, 'this session is marked');
    await page.click('#token-done');
    await page.waitForSelector('#token-value', { state: 'detached' });
    assert.ok(!(await pageText()).includes(token));
    await page.reload();
    await settled(page);
    await row.waitFor();
    assert.ok(!(await pageText()).includes(token));
    assert.match(await row.textContent(), /active/);

    await row.locator('[data-action=revoke]').click();
    await confirmDialog(page);
    await page.waitForFunction(() => /revoked/.test(document.querySelector('#token-list tr[data-token-name="ci-deploy"]')?.textContent ?? ''));
    assert.equal((await api(server.baseUrl, token, 'GET', '/secrets')).status, 401, 'revoked: refused');
  });

  it('reads the KEK status once (each read is audited) and follows the re-wrap from /metrics', async () => {
    const calls = { status: 0, metrics: 0 };
    const count = (r) => {
      const path = new URL(r.url()).pathname;
      if (path === '/admin/kek/status') calls.status++;
      if (path === '/metrics') calls.metrics++;
    };
    page.on('request', count);
    await goto(page, '#/kek');
    await page.waitForSelector('#rewrap-progress');
    await page.waitForFunction(() => /from \/metrics/.test(document.querySelector('#kek-updated')?.textContent ?? ''),
      null, { timeout: 15000 });
    assert.equal(calls.status, 1, 'one audited status read while the screen stays open');
    assert.ok(calls.metrics >= 1, 'progress polled from /metrics');
    await page.click('#kek-refresh');
    await page.waitForFunction(() => !document.querySelector('#kek-refresh')?.disabled);
    assert.equal(calls.status, 2, 'Refresh reads the status again');
    page.off('request', count);
    const audit = await apiOk(server.baseUrl, ADMIN, 'GET', '/audit?action=kek_status', undefined, 200);
    assert.equal(audit.items.length, 2, 'two kek_status rows, not one every 5 seconds');
  });

  it('signs out: the session is revoked on the server, and /ui shows the sign-in', async () => {
    const cookie = (await context.cookies()).find((x) => x.name === 'rcrt_console');
    const asCookie = { Cookie: `rcrt_console=${cookie.value}` };
    assert.equal((await api(server.baseUrl, null, 'GET', '/secrets', undefined, asCookie)).status, 200,
      'the cookie works before sign-out');
    await page.click('#sign-out');
    await page.waitForSelector('#signin-form');
    assert.equal(await page.isVisible('#who'), false);
    assert.equal(await page.isVisible('#nav'), false);
    assert.equal((await context.cookies()).find((x) => x.name === 'rcrt_console'), undefined, 'cookie cleared');
    await open(page, server.baseUrl);
    assert.ok(await page.$('#signin-form'), 'a reload shows the sign-in');
    const after = await api(server.baseUrl, null, 'GET', '/secrets', undefined, asCookie);
    assert.equal(after.status, 401, 'the old cookie no longer works');
    const sess = await api(server.baseUrl, null, 'GET', '/ui/session', undefined, asCookie);
    assert.equal(sess.status, 401);
  });

  it('ran without CSP violations or script errors', () => {
    assert.deepEqual(page.problems, []);
  });
});
