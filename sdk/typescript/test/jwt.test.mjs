// The SDK against a real rcrt-server with AUTH_MODE=jwt (HS256 tokens minted here).

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { createClient } from '@rcrt/secrets';
import { rejectsWith } from '../test-support/assert.mjs';
import {
  hs256Secret,
  mintHs256,
  startServer,
  writeSecretFile,
} from '../test-support/rcrt-server.mjs';

const ISSUER = 'https://idp.test.rcrt';
const AUDIENCE = 'rcrt-secrets';
const ALL_ROLES = ['secrets.read', 'secrets.decrypt', 'secrets.write', 'secrets.admin'];

let dir;
let secret;
let server;

/** A token for `owner_id` with the given claims overriding the defaults. */
function token(owner_id, overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  return mintHs256(secret, {
    sub: `agent-of-${owner_id}`,
    owner_id,
    roles: ALL_ROLES,
    workspaces: ['team-a'],
    iss: ISSUER,
    aud: AUDIENCE,
    iat: now,
    exp: now + 600,
    ...overrides,
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rcrt-sdk-jwt-'));
  secret = hs256Secret();
  const keyFile = await writeSecretFile(dir, secret);
  server = await startServer({
    dir,
    env: {
      AUTH_MODE: 'jwt',
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      JWT_HS256_SECRET_FILE: keyFile,
    },
  });
});

after(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('AUTH_MODE=jwt', () => {
  test('a client with a valid token works end to end', async () => {
    const client = createClient({ baseUrl: server.baseUrl, token: token('tenant-a') });
    const vault = await client.createSecretVault('team-a', { API_KEY: 'secret-value' });
    const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');
    assert.equal(secrets.API_KEY, 'secret-value');

    const meta = await client.createSecret({
      name: 'jwt-secret',
      value: 'jwt-value',
      scope_type: 'workspace',
      scope_id: 'team-a',
    });
    assert.deepEqual(await client.getSecret(meta.id, 'jwt test'), { value: 'jwt-value', version: 1 });
    assert.equal((await client.updateSecret(meta.id, 'v2', { ifMatch: 1 })).version, 2);
    const page = await client.listSecrets({ scope_type: 'workspace', scope_id: 'team-a' });
    assert.ok(page.items.some((m) => m.id === meta.id));
    await client.deleteSecret(meta.id);
  });

  test('a token function is called per request', async () => {
    let calls = 0;
    const client = createClient({
      baseUrl: server.baseUrl,
      token: async () => {
        calls++;
        return token('tenant-a');
      },
    });
    await client.listSecrets();
    await client.listSecrets();
    assert.equal(calls, 2);
  });

  test('no token -> 401 unauthorized', async () => {
    const anonymous = createClient({ baseUrl: server.baseUrl });
    await rejectsWith(anonymous.listSecrets(), 401, 'unauthorized');
    await rejectsWith(anonymous.createSecretVault('team-a', { K: 'v' }), 401, 'unauthorized');
    await rejectsWith(anonymous.getSecretsFromVault('anything', 'audit reason'), 401, 'unauthorized');
    const e = await anonymous.listSecrets().catch((err) => err);
    assert.equal(typeof e.requestId, 'string');
  });

  test('bad tokens -> 401 unauthorized', async () => {
    const now = Math.floor(Date.now() / 1000);
    const bad = [
      'not-a-jwt',
      token('tenant-a', { exp: now - 3600 }),
      token('tenant-a', { aud: 'someone-else' }),
      token('tenant-a', { iss: 'https://evil.example' }),
      `${token('tenant-a').slice(0, -2)}xx`,
    ];
    for (const t of bad) {
      await rejectsWith(createClient({ baseUrl: server.baseUrl, token: t }).listSecrets(), 401, 'unauthorized');
    }
  });

  test('a token without secrets.write -> 403 forbidden on writes', async () => {
    const reader = createClient({
      baseUrl: server.baseUrl,
      token: token('tenant-a', { roles: ['secrets.read', 'secrets.decrypt'] }),
    });
    await rejectsWith(
      reader.createSecret({ name: 'nope', value: 'v', scope_type: 'workspace', scope_id: 'team-a' }),
      403,
      'forbidden',
    );
    await rejectsWith(reader.createSecretVault('team-a', { K: 'v' }), 403, 'forbidden');
  });

  test("another owner_id cannot see the first tenant's vault or secrets (404)", async () => {
    const a = createClient({ baseUrl: server.baseUrl, token: token('tenant-a') });
    const b = createClient({ baseUrl: server.baseUrl, token: token('tenant-b') });

    const vault = await a.createSecretVault('team-a', { API_KEY: 'tenant-a-only' }, { name: 'private' });
    const meta = await a.createSecret({
      name: 'private-secret',
      value: 'tenant-a-only',
      scope_type: 'workspace',
      scope_id: 'team-a',
    });

    await rejectsWith(b.getVault(vault.id), 404, 'not_found');
    await rejectsWith(b.getVault('private'), 404, 'not_found');
    await rejectsWith(b.getSecretsFromVault(vault.id, 'cross-tenant probe'), 404, 'not_found');
    await rejectsWith(b.setVaultSecret(vault.id, 'API_KEY', 'overwrite'), 404, 'not_found');
    await rejectsWith(b.deleteVault(vault.id), 404, 'not_found');
    await rejectsWith(b.getSecretMetadata(meta.id), 404, 'not_found');
    await rejectsWith(b.getSecret(meta.id, 'cross-tenant probe'), 404, 'not_found');
    await rejectsWith(b.deleteSecret(meta.id), 404, 'not_found');
    const listed = await b.listSecrets();
    assert.ok(!listed.items.some((m) => m.id === meta.id));

    // Tenant B has its own namespace: the same vault name in the same workspace is free.
    const mine = await b.createSecretVault('team-a', { API_KEY: 'tenant-b' }, { name: 'private' });
    assert.notEqual(mine.id, vault.id);

    // And tenant A's data is untouched.
    assert.deepEqual(await a.getSecretsFromVault(vault.id, 'owner read'), { API_KEY: 'tenant-a-only' });
    assert.deepEqual(await a.getSecretsFromVault('private', 'owner read'), { API_KEY: 'tenant-a-only' });
  });

  test('within a tenant, a non-admin outside the workspace sees 404', async () => {
    const a = createClient({ baseUrl: server.baseUrl, token: token('tenant-a') });
    const vault = await a.createSecretVault('team-a', { K: 'v' });
    const outsider = createClient({
      baseUrl: server.baseUrl,
      token: token('tenant-a', {
        sub: 'outsider',
        roles: ['secrets.read', 'secrets.decrypt'],
        workspaces: ['team-b'],
      }),
    });
    await rejectsWith(outsider.getVault(vault.id), 404, 'not_found');
    await rejectsWith(outsider.getSecretsFromVault(vault.id, 'probe'), 404, 'not_found');
    const member = createClient({
      baseUrl: server.baseUrl,
      token: token('tenant-a', {
        sub: 'member',
        roles: ['secrets.read', 'secrets.decrypt'],
        workspaces: ['team-a'],
      }),
    });
    assert.deepEqual(await member.getSecretsFromVault(vault.id, 'member read'), { K: 'v' });
  });
});
