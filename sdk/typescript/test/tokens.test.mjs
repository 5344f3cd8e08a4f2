// The SDK against a real rcrt-server with AUTH_MODE=token and a bootstrap admin token
// (BOOTSTRAP_ADMIN_TOKEN_FILE). The tests run in order: `narrow` is minted by one and used,
// listed and revoked by the next ones.

import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { RcrtError, createClient } from '@rcrt/secrets';
import { NO_SUCH_ID, rejectsWith } from '../test-support/assert.mjs';
import { serviceToken, startServer } from '../test-support/rcrt-server.mjs';

const TOKEN_FORMAT = /^rcrt_[0-9a-f]{32}_[0-9a-f]{64}$/;

let server;
let adminToken;
let admin;
let vaultA; // in team-a, readable with the narrow token
let vaultB; // in team-b, out of its reach
let narrow; // the CreatedToken minted below

before(async () => {
  adminToken = serviceToken();
  server = await startServer({ bootstrapAdminToken: adminToken });
  admin = createClient({ baseUrl: server.baseUrl, token: adminToken });
  vaultA = await admin.createSecretVault('team-a', { API_KEY: 'team-a-value' }, { name: 'payments' });
  vaultB = await admin.createSecretVault('team-b', { API_KEY: 'team-b-value' }, { name: 'payments' });
});

after(async () => {
  await server?.stop();
});

/** Every token the admin can list, following next_cursor with pages of `limit`. */
async function allTokens(limit) {
  const items = [];
  let cursor;
  let pages = 0;
  do {
    const page = await admin.listTokens({ limit, cursor });
    assert.ok(page.items.length <= limit);
    items.push(...page.items);
    cursor = page.next_cursor ?? undefined;
    assert.ok(++pages < 100, 'paging does not end');
  } while (cursor);
  return { items, pages };
}

/** The secret half of a service token, which must never leak. */
const secretPart = (token) => token.slice(38);

describe('AUTH_MODE=token', () => {
  test("the guide's example works with the bootstrap admin token", async () => {
    const client = createClient({ baseUrl: server.baseUrl, token: adminToken });
    const workspace = 'team-a';
    const vault = await client.createSecretVault(workspace, {
      API_KEY: 'secret-value',
    });
    const vaultId = vault.id;
    const secrets = await client.getSecretsFromVault(vaultId, 'audit reason');
    assert.equal(secrets.API_KEY, 'secret-value');
  });

  test('a token function works, and the line break of a token file is ignored', async () => {
    let calls = 0;
    const client = createClient({
      baseUrl: server.baseUrl,
      token: async () => {
        calls++;
        return `${adminToken}\n`;
      },
    });
    assert.deepEqual(await client.getSecretsFromVault(vaultB.id, 'token function'), {
      API_KEY: 'team-b-value',
    });
    assert.equal(calls, 1);
  });

  test('createToken mints a narrower token and returns it with its metadata', async () => {
    narrow = await admin.createToken({
      name: 'ci deploy job',
      principal: 'ci-reader',
      roles: ['secrets.read', 'secrets.decrypt'],
      workspaces: ['team-a'],
      ttl: '1h',
    });
    assert.match(narrow.token, TOKEN_FORMAT);
    assert.notEqual(narrow.token, adminToken);
    assert.equal(narrow.id.replaceAll('-', ''), narrow.token.slice(5, 37));
    assert.equal(narrow.name, 'ci deploy job');
    assert.equal(narrow.tenant, 'default');
    assert.equal(narrow.principal, 'ci-reader');
    assert.equal(narrow.created_by, 'bootstrap-admin');
    assert.deepEqual([...narrow.roles].sort(), ['secrets.decrypt', 'secrets.read']);
    assert.deepEqual(narrow.workspaces, ['team-a']);
    assert.equal(Date.parse(narrow.expires_at) - Date.parse(narrow.created_at), 3600 * 1000);
    assert.equal(narrow.revoked_at, null);
    assert.equal(narrow.status, 'active');
  });

  test('the narrow token reads its workspace and can do nothing else', async () => {
    const reader = createClient({ baseUrl: server.baseUrl, token: narrow.token });
    assert.deepEqual(await reader.getSecretsFromVault(vaultA.id, 'ci deploy'), {
      API_KEY: 'team-a-value',
    });
    assert.deepEqual(await reader.getSecretsFromVault('payments', 'ci deploy', { workspace: 'team-a' }), {
      API_KEY: 'team-a-value',
    });
    // No secrets.write: the server answers 403, in its own workspace and in another.
    await rejectsWith(reader.createSecretVault('team-a', { K: 'v' }), 403, 'forbidden');
    await rejectsWith(reader.createSecretVault('team-b', { K: 'v' }), 403, 'forbidden');
    // Another workspace's vault does not exist for it.
    await rejectsWith(reader.getSecretsFromVault(vaultB.id, 'probe'), 404, 'not_found');
    // No tokens.create: it cannot mint, not even something narrower.
    await rejectsWith(reader.createToken({ name: 'n', roles: ['secrets.read'] }), 403, 'forbidden');
  });

  test('minting never escalates, and bad input is refused', async () => {
    const minter = await admin.createToken({
      name: 'minter',
      roles: ['secrets.read', 'tokens.create'],
      workspaces: ['team-a'],
      ttl: 600,
    });
    assert.equal(Date.parse(minter.expires_at) - Date.parse(minter.created_at), 600 * 1000);
    const client = createClient({ baseUrl: server.baseUrl, token: minter.token });
    const ok = await client.createToken({ name: 'sub', roles: ['secrets.read'], workspaces: ['team-a'], ttl: 60 });
    assert.match(ok.token, TOKEN_FORMAT);
    assert.equal(ok.principal, minter.principal);
    assert.equal(ok.created_by, minter.principal);

    const escalations = [
      { name: 'e', roles: ['secrets.decrypt'] },
      { name: 'e', roles: ['secrets.read'], workspaces: ['team-b'] },
      { name: 'e', roles: ['secrets.read'], principal: 'someone-else' },
      { name: 'e', roles: ['secrets.read'], ttl: '2h' },
    ];
    for (const input of escalations) {
      await rejectsWith(client.createToken(input), 403, 'forbidden');
    }
    await rejectsWith(admin.createToken({ name: 'e', roles: ['no.such.role'] }), 400, 'invalid_request');
    await rejectsWith(admin.createToken({ name: 'e', roles: ['secrets.read'], ttl: 'soon' }), 400, 'invalid_request');
    await rejectsWith(admin.createToken({ name: '', roles: ['secrets.read'] }), 400, 'invalid_request');
    await rejectsWith(admin.createToken({ name: 'e', roles: [] }), 400, 'invalid_request');
  });

  test('listTokens pages through metadata and never shows a token', async () => {
    const { items, pages } = await allTokens(1);
    assert.equal(pages, items.length);
    assert.equal(new Set(items.map((t) => t.id)).size, items.length, 'no token listed twice');
    assert.deepEqual((await admin.listTokens()).items, items, 'one big page = the small pages');

    const { token, ...meta } = narrow;
    assert.deepEqual(items.find((t) => t.id === narrow.id), meta);

    const bootstrap = items.find((t) => t.name === 'bootstrap-admin');
    assert.ok(bootstrap, 'the bootstrap token is listed');
    assert.equal(bootstrap.id.replaceAll('-', ''), adminToken.slice(5, 37));
    assert.ok(bootstrap.roles.includes('rcrt.operator'));
    assert.equal(bootstrap.expires_at, null);

    const text = JSON.stringify(items);
    assert.ok(!items.some((t) => 'token' in t));
    assert.ok(!text.includes(secretPart(token)));
    assert.ok(!text.includes(secretPart(adminToken)));
  });

  test('revokeToken: the revoked token gets 401 from then on', async () => {
    const reader = createClient({ baseUrl: server.baseUrl, token: narrow.token });
    await reader.getSecretsFromVault(vaultA.id, 'before revocation');

    await admin.revokeToken(narrow.id);
    await rejectsWith(reader.getSecretsFromVault(vaultA.id, 'after revocation'), 401, 'unauthorized');
    await rejectsWith(reader.listTokens(), 401, 'unauthorized');
    const listed = (await allTokens(1000)).items.find((t) => t.id === narrow.id);
    assert.equal(listed.status, 'revoked');
    assert.ok(!Number.isNaN(Date.parse(listed.revoked_at)));

    await admin.revokeToken(narrow.id); // revoking again is fine
    await rejectsWith(admin.revokeToken(NO_SUCH_ID), 404, 'not_found');
    await rejectsWith(admin.revokeToken('not-an-id'), 400, 'invalid_id');
    // The admin token is unaffected.
    assert.deepEqual(await admin.getSecretsFromVault(vaultA.id, 'admin read'), { API_KEY: 'team-a-value' });
  });

  test('revokeToken refuses the token itself in place of its id', async () => {
    const e = await admin.revokeToken(adminToken).catch((err) => err);
    assert.ok(e instanceof RcrtError);
    assert.equal(e.code, 'invalid_argument');
    assert.equal(e.status, 0);
    assert.ok(!inspect(e, { showHidden: true, depth: null }).includes(secretPart(adminToken)));
    await admin.listTokens(); // and the admin token still works
  });

  test('malformed, unknown and missing tokens get 401', async () => {
    const wrongSecret = `${adminToken.slice(0, 38)}${'0'.repeat(64)}`;
    assert.notEqual(wrongSecret, adminToken);
    const bad = [
      'not-a-token',
      'rcrt_',
      `rcrt_${'z'.repeat(32)}_${'0'.repeat(64)}`,
      adminToken.toUpperCase(),
      `${adminToken}0`,
      wrongSecret,
      serviceToken(), // well-formed, never stored
      'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', // a JWT: not accepted in token-only mode
    ];
    for (const t of bad) {
      const client = createClient({ baseUrl: server.baseUrl, token: t });
      await rejectsWith(client.listSecrets(), 401, 'unauthorized');
      await rejectsWith(client.getSecretsFromVault(vaultA.id, 'probe'), 401, 'unauthorized');
    }
    const anonymous = createClient({ baseUrl: server.baseUrl });
    await rejectsWith(anonymous.listTokens(), 401, 'unauthorized');
    await rejectsWith(anonymous.createToken({ name: 'n', roles: ['secrets.read'] }), 401, 'unauthorized');
  });

  test('a minted token never appears in an RcrtError', async () => {
    // The real server mints; the fetch in between mangles its answer the way a broken proxy
    // or connection could.
    const mangles = {
      truncated: (status, text) => ({ status, text: text.slice(0, Math.floor(text.length / 2)) }),
      'a JSON string': (status, text) => ({ status, text: JSON.stringify(text) }),
      'an error status': (_status, text) => ({ status: 502, text }),
      'no token field': (status, text) => {
        const { token, ...rest } = JSON.parse(text);
        return { status, text: JSON.stringify({ ...rest, token: null }) };
      },
    };
    const codes = {
      truncated: 'invalid_response',
      'a JSON string': 'invalid_response',
      'an error status': 'unexpected_response',
      'no token field': 'invalid_response',
    };
    for (const [what, mangle] of Object.entries(mangles)) {
      let minted;
      const client = createClient({
        baseUrl: server.baseUrl,
        token: adminToken,
        fetch: async (url, init) => {
          const res = await fetch(url, init);
          const text = await res.text();
          minted = JSON.parse(text).token;
          const out = mangle(res.status, text);
          return { status: out.status, headers: res.headers, text: async () => out.text };
        },
      });
      const e = await client.createToken({ name: `mangled ${what}`, roles: ['secrets.read'] }).catch((err) => err);
      assert.ok(e instanceof RcrtError, `${what}: ${e}`);
      assert.equal(e.code, codes[what], what);
      assert.match(minted, TOKEN_FORMAT, what);
      const shown = `${inspect(e, { showHidden: true, depth: null })} ${e.message} ${String(e.cause)}`;
      assert.ok(!shown.includes(secretPart(minted)), `${what}: ${shown}`);
      assert.ok(!shown.includes(minted.slice(5, 37)), `${what}: the token's id part`);
    }
  });
});
