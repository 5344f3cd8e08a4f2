// Safe by construction: security headers on the console's files, CSRF refused (a missing or
// wrong X-CSRF-Token from the console's own page; a form posted from another origin and from
// another site; a cross-origin fetch), and framing by another origin blocked.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { api, apiOk, launchBrowser, newPage, signIn } from '../support/console.mjs';
import { serviceToken, startServer } from '../support/rcrt-server.mjs';

const ADMIN = serviceToken();
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

let server;
let browser;
let context;
let page;
let attacker;
let attackerPort;
let attackerPages = {};

/** A second HTTP server on another port: the attacker's pages. */
function startAttacker() {
  return new Promise((ok) => {
    const srv = createServer((req, res) => {
      const body = attackerPages[req.url.split('?')[0]];
      if (!body) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(body);
    });
    srv.listen(0, '127.0.0.1', () => ok(srv));
  });
}

async function secretNames() {
  const r = await apiOk(server.baseUrl, ADMIN, 'GET', '/secrets?limit=1000');
  return r.items.map((s) => s.name);
}

describe('console: security headers', () => {
  before(async () => {
    server = await startServer({ bootstrapAdminToken: ADMIN });
  });

  for (const path of ['/ui', '/ui/app.js', '/ui/app.css', '/ui/favicon.svg', '/ui/session']) {
    it(`${path} carries CSP, X-Frame-Options, Referrer-Policy and Cache-Control`, async () => {
      const r = await fetch(`${server.baseUrl}${path}`);
      assert.equal(r.headers.get('content-security-policy'), CSP);
      assert.equal(r.headers.get('x-frame-options'), 'DENY');
      assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
      assert.equal(r.headers.get('cache-control'), 'no-store');
      if (path === '/ui/session') assert.equal(r.status, 401, 'not signed in');
      else assert.equal(r.status, 200);
    });
  }

  it('serves each file with its type, and /ui holds no data', async () => {
    const types = {
      '/ui': /^text\/html/,
      '/ui/app.js': /^(text|application)\/javascript/,
      '/ui/app.css': /^text\/css/,
      '/ui/favicon.svg': /^image\/svg\+xml/,
    };
    await apiOk(server.baseUrl, ADMIN, 'POST', '/secrets', { name: 'shell/probe-name', value: 'probe-value', scope_type: 'global' });
    const session = await fetch(`${server.baseUrl}/ui/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ credential: ADMIN }),
    });
    assert.equal(session.status, 201);
    const cookie = session.headers.get('set-cookie');
    assert.match(cookie, /^rcrt_console=[^;]+;/);
    assert.match(cookie, /HttpOnly/i);
    assert.match(cookie, /SameSite=Strict/i);
    assert.match(cookie, /Path=\//);
    assert.doesNotMatch(cookie, /Secure/i, 'no TLS here: not Secure');
    for (const [path, type] of Object.entries(types)) {
      const r = await fetch(`${server.baseUrl}${path}`, { headers: { Cookie: cookie.split(';')[0] } });
      assert.match(r.headers.get('content-type'), type, path);
      const text = await r.text();
      assert.ok(!text.includes('probe-name') && !text.includes('probe-value') && !text.includes('bootstrap-admin'),
        `${path} is static: no data in it even for a signed-in caller`);
    }
    // The shell has no inline script or style for the CSP to refuse.
    const shell = await (await fetch(`${server.baseUrl}/ui`)).text();
    assert.doesNotMatch(shell, /<script(?![^>]*\ssrc=)[^>]*>/i, 'no inline <script>');
    assert.doesNotMatch(shell, /\sstyle=|\son[a-z]+=/i, 'no style= or on*= attributes');
    assert.doesNotMatch(shell, /<style/i);
  });

  after(async () => {
    await server?.stop();
  });
});

describe('console: CSRF and clickjacking are refused', () => {
  before(async () => {
    server = await startServer({ bootstrapAdminToken: ADMIN });
    attacker = await startAttacker();
    attackerPort = attacker.address().port;
    browser = await launchBrowser();
    ({ context, page } = await newPage(browser));
    await signIn(page, server.baseUrl, ADMIN);
  });

  after(async () => {
    await browser?.close();
    await new Promise((r) => attacker?.close(r));
    await server?.stop();
  });

  it('the console page itself: a POST without X-CSRF-Token, or with a wrong one, is 403 csrf_failed', async () => {
    const r = await page.evaluate(async () => {
      const post = (headers, name) => fetch('/secrets', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify({ name, value: 'x', scope_type: 'global' }),
      }).then(async (res) => ({ status: res.status, body: await res.json().catch(() => null) }));
      const sess = await (await fetch('/ui/session')).json();
      return {
        none: await post({}, 'csrf/none'),
        wrong: await post({ 'X-CSRF-Token': sess.csrf_token.replace(/.$/, (c) => (c === '0' ? '1' : '0')) }, 'csrf/wrong'),
        right: await post({ 'X-CSRF-Token': sess.csrf_token }, 'csrf/right'),
        del: (await fetch('/auth/tokens/00000000-0000-0000-0000-000000000000', { method: 'DELETE' })).status,
      };
    });
    assert.equal(r.none.status, 403);
    assert.equal(r.none.body?.error?.code, 'csrf_failed');
    assert.equal(r.wrong.status, 403);
    assert.equal(r.wrong.body?.error?.code, 'csrf_failed');
    assert.equal(r.del, 403, 'a DELETE needs it too');
    assert.equal(r.right.status, 201, 'the check is not a blanket refusal');
    const names = await secretNames();
    assert.ok(!names.includes('csrf/none') && !names.includes('csrf/wrong'));
    assert.ok(names.includes('csrf/right'));
  });

  /** A page that posts a JSON-looking text/plain form to the server on load. */
  function formPage(name) {
    return `<!doctype html><html><body>
<form id="f" method="POST" action="${server.baseUrl}/secrets" enctype="text/plain">
<input type="hidden" name='{"name":"${name}","value":"pwned","scope_type":"global","x":"' value='"}'>
</form>
<script>document.getElementById('f').submit();</script>
</body></html>`;
  }

  for (const [label, host] of [
    ['another site (localhost vs 127.0.0.1: the SameSite=Strict cookie stays home)', 'localhost'],
    ['another origin on the same site (another port: the cookie goes, the CSRF token does not)', '127.0.0.1'],
  ]) {
    it(`a form posted from ${label} creates nothing`, async () => {
      const name = `csrf/form-${host}`;
      attackerPages[`/form-${host}`] = formPage(name);
      const attackPage = await context.newPage();
      const [response] = await Promise.all([
        attackPage.waitForResponse((r) => r.url() === `${server.baseUrl}/secrets` && r.request().method() === 'POST'),
        attackPage.goto(`http://${host}:${attackerPort}/form-${host}`),
      ]);
      assert.ok([401, 403, 415].includes(response.status()), `refused: ${response.status()}`);
      await attackPage.close();
      assert.ok(!(await secretNames()).includes(name), 'no secret created');
    });
  }

  it('a cross-origin fetch with credentials cannot write or read', async () => {
    attackerPages['/fetch'] = '<!doctype html><title>x</title>';
    const attackPage = await context.newPage();
    await attackPage.goto(`http://127.0.0.1:${attackerPort}/fetch`);
    const r = await attackPage.evaluate(async (base) => {
      const out = {};
      try {
        const res = await fetch(`${base}/secrets`, {
          method: 'POST',
          credentials: 'include',
          headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': 'guess' },
          body: JSON.stringify({ name: 'csrf/fetch', value: 'x', scope_type: 'global' }),
        });
        out.write = `status ${res.status}`;
      } catch (e) {
        out.write = 'blocked';
      }
      try {
        const res = await fetch(`${base}/secrets`, { credentials: 'include' });
        out.read = await res.text();
      } catch (e) {
        out.read = 'blocked';
      }
      try {
        const res = await fetch(`${base}/ui/session`, { credentials: 'include' });
        out.session = await res.text();
      } catch (e) {
        out.session = 'blocked';
      }
      return out;
    }, server.baseUrl);
    await attackPage.close();
    assert.deepEqual(r, { write: 'blocked', read: 'blocked', session: 'blocked' });
    assert.ok(!(await secretNames()).includes('csrf/fetch'));
  });

  it('a page of another origin cannot frame the console', async () => {
    attackerPages['/frame'] = `<!doctype html><title>frame</title>
<iframe id="victim" src="${server.baseUrl}/ui#/secrets" width="800" height="600"></iframe>`;
    const attackPage = await context.newPage();
    const framed = attackPage.waitForResponse((r) => r.url().startsWith(`${server.baseUrl}/ui`));
    await attackPage.goto(`http://127.0.0.1:${attackerPort}/frame`);
    const res = await framed;
    assert.equal(res.headers()['x-frame-options'], 'DENY');
    assert.match(res.headers()['content-security-policy'], /frame-ancestors 'none'/);
    await attackPage.waitForTimeout(500);
    const frame = attackPage.frames().find((f) => f !== attackPage.mainFrame());
    assert.ok(frame, 'the iframe exists');
    assert.ok(!frame.url().startsWith(server.baseUrl), `the frame did not load the console: ${frame.url()}`);
    const content = await frame.evaluate(() => document.documentElement.outerHTML).catch(() => '');
    assert.ok(!content.includes('RCRT Secrets') && !content.includes('signin') && !content.includes('app.js'),
      'nothing of the console in the frame');
    // The same page opened directly works: the block is about framing.
    await attackPage.close();
  });

  it('ran without CSP violations or script errors on the console page', () => {
    assert.deepEqual(page.problems, []);
  });
});
