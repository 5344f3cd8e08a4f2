// A user sees exactly what the API would show them: a token reading only workspace team-a never
// sees team-b's secrets or vaults in the console, and has no action it may not take; a JWT user of
// another tenant sees nothing of the default tenant.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { api, apiOk, goto, launchBrowser, newPage, signIn } from '../support/console.mjs';
import {
  hs256Secret,
  mintHs256,
  serviceToken,
  startServer,
  writeSecretFile,
} from '../support/rcrt-server.mjs';

const ADMIN = serviceToken();

let server;
let browser;
let page;
let narrow;
const ids = {};

async function html() {
  return page.evaluate(() => `${location.href}\n${document.title}\n${document.documentElement.outerHTML}`);
}

describe('console: a narrower token sees only its workspaces', () => {
  before(async () => {
    server = await startServer({ bootstrapAdminToken: ADMIN });
    const mk = async (name, scope_type, scope_id) => {
      const body = { name, value: `value-of-${name}`, scope_type, ...(scope_id ? { scope_id } : {}) };
      ids[name] = (await apiOk(server.baseUrl, ADMIN, 'POST', '/secrets', body)).id;
    };
    await mk('a/only-team-a', 'workspace', 'team-a');
    await mk('b/only-team-b', 'workspace', 'team-b');
    await mk('b/also-team-b', 'workspace', 'team-b');
    const vault = await apiOk(server.baseUrl, ADMIN, 'POST', '/secrets/vaults', {
      workspace: 'team-b',
      name: 'vault-of-b',
      secrets: { B_SECRET_KEY_NAME: 'b-vault-value' },
    });
    ids.vaultB = vault.id;
    ids.vaultA = (await apiOk(server.baseUrl, ADMIN, 'POST', '/secrets/vaults', {
      workspace: 'team-a',
      name: 'vault-of-a',
      secrets: { A_KEY: 'a-vault-value' },
    })).id;
    const minted = await apiOk(server.baseUrl, ADMIN, 'POST', '/auth/tokens', {
      name: 'team-a-reader',
      roles: ['secrets.read'],
      workspaces: ['team-a'],
      ttl: '1h',
    });
    narrow = minted.token;
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
    await signIn(page, server.baseUrl, narrow);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('lists what the API lists for that token: team-a, never team-b', async () => {
    const shown = await page.locator('#secrets-table tbody tr td:first-child').allTextContents();
    const viaApi = (await apiOk(server.baseUrl, narrow, 'GET', '/secrets')).items.map((s) => s.name);
    assert.deepEqual([...shown].sort(), [...viaApi].sort());
    assert.ok(shown.includes('a/only-team-a'), `team-a listed: ${shown}`);
    const text = await html();
    assert.ok(!text.includes('only-team-b') && !text.includes('also-team-b'), 'no team-b name on the page');
  });

  it('lists the vaults of team-a only, as GET /secrets/vaults does for that token', async () => {
    await goto(page, '#/vaults');
    await page.waitForSelector('#vaults-table');
    const shown = await page.locator('#vaults-table tbody tr td:first-child').allTextContents();
    const viaApi = (await apiOk(server.baseUrl, narrow, 'GET', '/secrets/vaults')).items.map((v) => v.name);
    assert.deepEqual(shown, viaApi);
    assert.deepEqual(shown, ['vault-of-a']);
    assert.ok(!(await html()).includes('vault-of-b'), 'no team-b vault on the page');
  });

  it('asking for team-b by filter or by id shows an error, never its secrets', async () => {
    await goto(page, '#/secrets?scope_type=workspace&scope_id=team-b');
    const shown = await page.locator('#secrets-table tbody tr').count().catch(() => 0);
    assert.equal(shown, 0);
    assert.ok(await page.locator('#main .error, #main .empty').count(), 'an error or empty state is shown');
    assert.ok(!(await html()).includes('team-b/'), 'nothing of team-b');
    assert.ok(!(await html()).includes('only-team-b'));

    await goto(page, `#/secrets/${ids['b/only-team-b']}`);
    assert.match(await page.textContent('#main h1'), /not available/);
    assert.ok(await page.locator('#main [role=alert]').count());
    assert.ok(!(await html()).includes('only-team-b'));

    await goto(page, `#/vaults/${ids.vaultB}`);
    assert.match(await page.textContent('#main h1'), /not available/);
    const text = await html();
    assert.ok(!text.includes('B_SECRET_KEY_NAME') && !text.includes('vault-of-b'));
  });

  it('offers no action the token may not take', async () => {
    assert.equal(await page.isVisible('#nav-kek'), false, 'not an operator: no KEK screen');
    assert.equal(await page.isVisible('#nav-audit'), false, 'no audit.read: no audit screen');
    await goto(page, '#/secrets');
    assert.equal(await page.$('#new-secret'), null, 'no secrets.write: no New secret');
    await goto(page, `#/secrets/${ids['a/only-team-a']}`);
    assert.equal(await page.textContent('#secret-title'), 'a/only-team-a');
    assert.equal(await page.$('#reveal-open'), null, 'no secrets.decrypt: no Reveal');
    assert.equal(await page.$('#update-form'), null);
    assert.equal(await page.$('#delete-form'), null);
    assert.equal(await page.$('[data-action=rollback]'), null);
    // The KEK screen by its URL says it is for operators and calls nothing.
    let kekCalls = 0;
    page.on('request', (r) => {
      if (r.url().includes('/admin/kek')) kekCalls++;
    });
    await goto(page, '#/kek');
    assert.match(await page.textContent('#main'), /for operators/);
    assert.equal(kekCalls, 0);
  });

  it('its cookie carries no more than the token: the API refuses team-b and writes', async () => {
    const r = await page.evaluate(async () => {
      const list = await fetch('/secrets?scope_type=workspace&scope_id=team-b');
      const sess = await (await fetch('/ui/session')).json();
      const write = await fetch('/secrets', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': sess.csrf_token },
        body: JSON.stringify({ name: 'a/sneaky', value: 'x', scope_type: 'workspace', scope_id: 'team-a' }),
      });
      return { list: list.status, listBody: await list.text(), write: write.status };
    });
    assert.ok(!r.listBody.includes('only-team-b'), r.listBody);
    assert.equal(r.write, 403);
    assert.equal((await api(server.baseUrl, ADMIN, 'GET', '/secrets?name_prefix=a/sneaky')).data.items.length, 0);
  });

  it('a session revoked elsewhere: the next call returns to the sign-in, saying why', async () => {
    const tokens = (await apiOk(server.baseUrl, ADMIN, 'GET', '/auth/tokens?limit=1000')).items;
    const minted = tokens.find((t) => t.name === 'team-a-reader');
    const sessions = tokens.filter((t) => t.name === 'console:session' && t.principal === minted.principal && t.status === 'active');
    assert.equal(sessions.length, 1, 'one console session for that principal');
    await apiOk(server.baseUrl, ADMIN, 'DELETE', `/auth/tokens/${sessions[0].id}`, undefined, 204);
    await page.click('a[data-nav=secrets]');
    await page.waitForSelector('#signin-form [role=alert]');
    assert.match(await page.textContent('#signin-form [role=alert]'), /session has ended/);
    assert.equal(await page.isVisible('#nav'), false);
    assert.ok(!(await html()).includes('only-team-a'), 'nothing of the old screen is left');
  });

  it('ran without CSP violations or script errors', () => {
    assert.deepEqual(page.problems, []);
  });
});

describe('console: sign-in with a JWT (AUTH_MODE=jwt,token)', () => {
  const ISSUER = 'https://idp.console.test';
  const AUDIENCE = 'rcrt-console-test';
  const secret = hs256Secret();
  let jwtServer;
  let jwtBrowser;
  let jwtPage;

  before(async () => {
    jwtServer = await startServer({
      bootstrapAdminToken: serviceToken(),
      env: async (dir) => ({
        AUTH_MODE: 'jwt,token',
        JWT_HS256_SECRET_FILE: await writeSecretFile(dir, secret),
        JWT_ISSUER: ISSUER,
        JWT_AUDIENCE: AUDIENCE,
      }),
    });
    jwtBrowser = await launchBrowser();
    ({ page: jwtPage } = await newPage(jwtBrowser));
  });

  after(async () => {
    await jwtBrowser?.close();
    await jwtServer?.stop();
  });

  it('signs in with a JWT; the session ends no later than the JWT', async () => {
    const now = Math.floor(Date.now() / 1000);
    const jwt = mintHs256(secret, {
      sub: 'alice',
      owner_id: 'acme',
      roles: ['secrets.read', 'secrets.decrypt', 'secrets.write'],
      workspaces: ['team-a'],
      iss: ISSUER,
      aud: AUDIENCE,
      iat: now,
      exp: now + 600,
    });
    // A wrong signature is refused with a message, and no session starts.
    await jwtPage.goto(`${jwtServer.baseUrl}/ui`);
    await jwtPage.fill('#credential', `${jwt.slice(0, -4)}AAAA`);
    await jwtPage.click('#signin-submit');
    await jwtPage.waitForSelector('#signin-form [role=alert]');
    assert.equal(await jwtPage.isVisible('#who'), false);

    await signIn(jwtPage, jwtServer.baseUrl, jwt);
    assert.equal(await jwtPage.textContent('#who-user'), 'alice');
    assert.equal(await jwtPage.textContent('#who-tenant'), 'acme');
    const sess = await jwtPage.evaluate(async () => (await fetch('/ui/session')).json());
    assert.equal(sess.auth, 'jwt,token');
    assert.ok(new Date(sess.expires_at).getTime() <= (now + 600) * 1000, `session ends with the JWT: ${sess.expires_at}`);
    assert.equal(await jwtPage.$('#credential'), null, 'the sign-in field, and the JWT in it, are gone');
    assert.ok(!(await jwtPage.content()).includes(jwt));
    // The new tenant is empty: its own empty state.
    assert.match(await jwtPage.textContent('#main .empty'), /No secrets/);
    assert.deepEqual(jwtPage.problems, []);
  });
});

describe('console: AUTH_MODE=disabled on loopback', () => {
  let openServer;
  let openBrowser;

  before(async () => {
    openServer = await startServer({ env: { AUTH_MODE: 'disabled' } });
    openBrowser = await launchBrowser();
  });

  after(async () => {
    await openBrowser?.close();
    await openServer?.stop();
  });

  it('works without signing in, as the API does, and offers no sign-out', async () => {
    const { page: p } = await newPage(openBrowser);
    await p.goto(`${openServer.baseUrl}/ui#/secrets/new`);
    await p.waitForSelector('#new-secret-form');
    assert.equal(await p.$('#signin-form'), null);
    assert.equal(await p.textContent('#who-user'), 'anonymous');
    assert.equal(await p.isVisible('#sign-out'), false);
    await p.fill('#new-name', 'open/created-in-the-console');
    await p.selectOption('#new-scope-type', 'global');
    await p.fill('#new-value', 'v');
    await p.click('#new-secret-form button[type=submit]');
    await p.waitForSelector('#secret-title');
    assert.equal(await p.textContent('#secret-title'), 'open/created-in-the-console');
    assert.deepEqual(p.problems, []);
  });
});
