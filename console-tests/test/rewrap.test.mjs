// A KEK rotation watched in the console: a store written under KEK A is served with KEK B (A as
// LOCAL_KEK_BASE64_OLD, the re-wrap not started by itself and paced), an operator opens the KEK
// screen, sees every version under the old KEK, starts the re-wrap, and watches the count fall
// live (from /metrics, without another audited status read) to zero.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { apiOk, goto, launchBrowser, newPage, screenshot, signIn } from '../support/console.mjs';
import { serviceToken, startServer } from '../support/rcrt-server.mjs';

const ADMIN = serviceToken();
const KEK_A = randomBytes(32).toString('base64');
const KEK_B = randomBytes(32).toString('base64');
const SECRETS = 40;

let dir;
let server;
let browser;
let page;

const remaining = async () => Number(await page.textContent('#rewrap-remaining'));

describe('console: a KEK rotation, live', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcrt-console-rewrap-'));
    const first = await startServer({ dir, bootstrapAdminToken: ADMIN, env: { LOCAL_KEK_BASE64: KEK_A } });
    for (let i = 0; i < SECRETS; i++) {
      await apiOk(first.baseUrl, ADMIN, 'POST', '/secrets', { name: `svc/key-${i}`, value: `v${i}`, scope_type: 'global' });
    }
    await first.stop();
    server = await startServer({
      dir,
      bootstrapAdminToken: ADMIN,
      env: {
        LOCAL_KEK_BASE64: KEK_B,
        LOCAL_KEK_BASE64_OLD: KEK_A,
        REWRAP_AUTO: 'false',
        REWRAP_BATCH_SIZE: '1',
        REWRAP_MAX_ROWS_PER_SEC: '3',
      },
    });
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
    await signIn(page, server.baseUrl, ADMIN);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows the versions under the old KEK, then the re-wrap progressing to zero', async () => {
    let statusReads = 0;
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/admin/kek/status') statusReads++;
    });
    await goto(page, '#/kek');
    await page.waitForSelector('#rewrap-remaining');
    assert.equal(await remaining(), SECRETS, 'every version still under KEK A');
    const perKek = await page.locator('table tbody tr').allTextContents();
    assert.ok(perKek.some((row) => /configured \(old\)/.test(row) && row.includes(String(SECRETS))),
      `the old KEK holds ${SECRETS} versions: ${perKek}`);
    await page.click('#kek-rewrap');
    // Part-way: fewer than all, more than none, shown without reloading the status.
    await page.waitForFunction((n) => {
      const v = Number(document.querySelector('#rewrap-remaining')?.textContent);
      return v > 0 && v < n;
    }, SECRETS, { timeout: 30000 });
    await screenshot(page, 'kek-rewrap-in-progress-1280-light');
    assert.ok(Number(await page.textContent('#rewrapped-total')) > 0, 'the re-wrapped count follows too');
    // Done: the screen reads the full status once more, and every version is under KEK B.
    await page.waitForFunction(() => /completed|idle/.test(document.querySelector('#rewrap-state')?.textContent ?? '')
      && document.querySelector('#rewrap-remaining')?.textContent === '0'
      && /current/.test(document.querySelector('table tbody')?.textContent ?? ''), null, { timeout: 60000 });
    assert.match(await page.textContent('label[for="rewrap-progress"]'), new RegExp(`${SECRETS} of ${SECRETS}`));
    const rows = await page.locator('table tbody tr').allTextContents();
    assert.equal(rows.length, 1, `one KEK left in use: ${rows}`);
    assert.match(rows[0], new RegExp(`${SECRETS}.*current`));
    assert.equal(statusReads, 2, 'audited status reads: on opening and once when the re-wrap finished');
    // The server agrees.
    const status = await apiOk(server.baseUrl, ADMIN, 'GET', '/admin/kek/status', undefined, 200);
    assert.equal(status.rewrap.remaining, 0);
  });

  it('ran without CSP violations or script errors', () => {
    assert.deepEqual(page.problems, []);
  });
});
