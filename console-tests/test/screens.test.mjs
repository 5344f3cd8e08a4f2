// Every main screen, light and dark, at 1280 px and 320 px wide: axe-core finds no serious or
// critical violation, the page never scrolls sideways, and a screenshot of each is kept in
// console-tests/artifacts/ (looked at by people, not compared pixel by pixel). Also: the console
// works by keyboard alone for its main path.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  ARTIFACTS_DIR,
  apiOk,
  assertNoHorizontalScroll,
  checkAxe,
  goto,
  launchBrowser,
  newPage,
  open,
  screenshot,
  settled,
  signIn,
} from '../support/console.mjs';
import { serviceToken, startServer } from '../support/rcrt-server.mjs';

const ADMIN = serviceToken();

let server;
let browser;
const ids = {};
const shots = [];

/** Seeds what the screens show: secrets in several scopes, a vault, a soft-deleted secret. */
async function seed() {
  const mk = (body) => apiOk(server.baseUrl, ADMIN, 'POST', '/secrets', body);
  const day = 86400e3;
  const db = await mk({
    name: 'payments/db-password-with-a-rather-long-name-for-narrow-screens',
    value: 'screenshot-value-1',
    scope_type: 'workspace',
    scope_id: 'team-payments',
    description: 'Primary PostgreSQL password for the payments service',
    labels: { env: 'prod', team: 'payments', rotation: 'quarterly' },
    expires_at: new Date(Date.now() + 3 * day).toISOString().replace(/\.\d+Z$/, 'Z'),
  });
  ids.secret = db.id;
  await apiOk(server.baseUrl, ADMIN, 'PUT', `/secrets/${db.id}`, { value: 'screenshot-value-2' }, 200);
  await mk({ name: 'smtp/relay', value: 'v', scope_type: 'global', labels: { env: 'prod' } });
  await mk({
    name: 'old/cert',
    value: 'v',
    scope_type: 'agent',
    scope_id: 'agent-7',
    expires_at: new Date(Date.now() - day).toISOString().replace(/\.\d+Z$/, 'Z'),
  });
  const gone = await mk({ name: 'legacy/api-key', value: 'v', scope_type: 'global' });
  await apiOk(server.baseUrl, ADMIN, 'DELETE', `/secrets/${gone.id}?recovery_window=7d`, undefined, 200);
  const vault = await apiOk(server.baseUrl, ADMIN, 'POST', '/secrets/vaults', {
    workspace: 'team-payments',
    name: 'checkout',
    secrets: { STRIPE_KEY: 'sk_test', WEBHOOK_SECRET: 'whsec', DB_URL: 'postgres://x' },
  });
  ids.vault = vault.id;
  await apiOk(server.baseUrl, ADMIN, 'POST', '/auth/tokens', {
    name: 'ci-deploy',
    roles: ['secrets.read', 'secrets.decrypt'],
    workspaces: ['team-payments'],
    ttl: '30d',
  });
  await apiOk(server.baseUrl, ADMIN, 'POST', `/secrets/${db.id}/decrypt`, { reason: 'nightly backup check' }, 200);
}

/** The screens: a name, how to reach it, and what must be on it once loaded. */
function screens() {
  return [
    { name: 'signin', signedOut: true, ready: '#signin-form' },
    { name: 'secrets', hash: '#/secrets', ready: '#secrets-table' },
    { name: 'secrets-empty', hash: '#/secrets?name_prefix=nothing-matches', ready: '#main .empty' },
    { name: 'secrets-deleted', hash: '#/secrets?deleted=true', ready: '#secrets-table' },
    { name: 'secret-new', hash: '#/secrets/new', ready: '#new-secret-form' },
    { name: 'secret-detail', hash: `#/secrets/${ids.secret}`, ready: '#versions-table' },
    {
      name: 'secret-revealed',
      hash: `#/secrets/${ids.secret}`,
      ready: '#versions-table',
      async then(page) {
        await page.click('#reveal-open');
        await page.fill('#reveal-reason', 'screenshot of the reveal state');
        await page.click('#reveal-form button[type=submit]');
        await page.waitForSelector('#revealed code');
      },
    },
    { name: 'secret-missing', hash: '#/secrets/01900000-0000-7000-8000-000000000000', ready: '#main .error' },
    { name: 'vaults', hash: '#/vaults', ready: '#vaults-table' },
    { name: 'vault-detail', hash: `#/vaults/${ids.vault}`, ready: '#vault-keys table' },
    { name: 'tokens', hash: '#/tokens', ready: '#token-list table' },
    { name: 'audit', hash: '#/audit', ready: '#audit-table' },
    { name: 'kek', hash: '#/kek', ready: '#rewrap-progress' },
  ];
}

before(async () => {
  server = await startServer({ bootstrapAdminToken: ADMIN });
  await seed();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (shots.length) console.log(`# ${shots.length} screenshots in ${ARTIFACTS_DIR}`);
});

describe('console: every screen, light and dark, wide and narrow', () => {
  for (const scheme of ['light', 'dark']) {
    for (const width of [1280, 320]) {
      it(`${scheme}, ${width} px: axe finds nothing serious, no sideways scroll, screenshots`, async () => {
        const { context, page } = await newPage(browser, { width, height: width > 600 ? 900 : 720, colorScheme: scheme });
        try {
          for (const s of screens()) {
            const label = `${s.name} (${scheme}, ${width} px)`;
            if (s.signedOut) {
              await open(page, server.baseUrl);
            } else {
              if (!(await page.isVisible('#who'))) await signIn(page, server.baseUrl, ADMIN);
              await goto(page, s.hash);
            }
            await page.waitForSelector(s.ready);
            if (s.then) await s.then(page);
            // The status toast fades by itself; clear it so it covers nothing in the pictures.
            await page.evaluate(() => {
              document.getElementById('status').textContent = '';
            });
            assert.equal(
              await page.evaluate(() => matchMedia('(prefers-color-scheme: dark)').matches),
              scheme === 'dark',
            );
            await assertNoHorizontalScroll(page, label);
            // axe on every screen at both widths would double the time for little: each screen
            // is checked light and dark at 1280 px, and the narrow layout at 320 px in light.
            if (width === 1280 || scheme === 'light') await checkAxe(page, label);
            shots.push(await screenshot(page, `${s.name}-${width}-${scheme}`));
          }
          assert.deepEqual(page.problems, []);
        } finally {
          await context.close();
        }
      });
    }
  }
});

describe('console: by keyboard alone', () => {
  it('signs in, reaches a secret, reveals it with a reason and hides it, without a mouse', async () => {
    const { context, page } = await newPage(browser, { width: 1280 });
    try {
      await open(page, server.baseUrl);
      // The sign-in field has focus on load.
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'credential');
      await page.keyboard.insertText(ADMIN);
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'signin-submit');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#secrets-table');
      await settled(page);
      // Tab to the secret's link: every stop has a visible focus outline.
      const target = `#/secrets/${ids.secret}`;
      let found = false;
      for (let i = 0; i < 40 && !found; i++) {
        await page.keyboard.press('Tab');
        const info = await page.evaluate(() => {
          const el = document.activeElement;
          const cs = getComputedStyle(el);
          return { href: el.getAttribute('href'), outline: cs.outlineStyle, width: parseFloat(cs.outlineWidth) };
        });
        assert.ok(info.outline !== 'none' && info.width >= 2, `visible focus on every stop: ${JSON.stringify(info)}`);
        found = info.href === target;
      }
      assert.ok(found, 'the secret link is reachable by Tab');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#reveal-open');
      await settled(page);
      await page.focus('#reveal-open');
      await page.keyboard.press('Enter');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'reveal-reason');
      await page.keyboard.type('keyboard-only check');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#revealed code');
      // Focus moves to Hide; Enter hides.
      assert.equal(await page.evaluate(() => document.activeElement?.dataset.action), 'hide-value');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#revealed', { state: 'detached' });
      // The confirmation dialog: Escape cancels it.
      await page.focus('#versions-table [data-action=rollback]');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#confirm[open]');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'confirm-cancel');
      await page.keyboard.press('Escape');
      await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
      assert.equal(await page.locator('#versions-table tbody tr').count(), 2, 'nothing rolled back');
      assert.deepEqual(page.problems, []);
    } finally {
      await context.close();
    }
  });
});
