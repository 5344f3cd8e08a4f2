// Secrets API against a real rcrt-server (authentication disabled, loopback).

import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { RcrtClient, RcrtError, createClient } from '@rcrt/secrets';
import { NO_SUCH_ID, rejectsWith } from '../test-support/assert.mjs';
import { startServer } from '../test-support/rcrt-server.mjs';

let server;
let client;

before(async () => {
  server = await startServer();
  client = createClient({ baseUrl: server.baseUrl });
});

after(async () => {
  await server?.stop();
});

describe('createClient', () => {
  test('returns an RcrtClient and normalises the base URL', () => {
    assert.ok(client instanceof RcrtClient);
    assert.equal(createClient({ baseUrl: 'http://127.0.0.1:1/' }).baseUrl, 'http://127.0.0.1:1');
    assert.equal(
      createClient({ baseUrl: 'https://gw.example/rcrt//' }).baseUrl,
      'https://gw.example/rcrt',
    );
  });

  test('rejects a missing or malformed baseUrl with invalid_argument', () => {
    for (const bad of [undefined, {}, { baseUrl: '' }, { baseUrl: 'not a url' }, { baseUrl: 'ftp://x' }]) {
      assert.throws(
        () => createClient(bad),
        (e) => e instanceof RcrtError && e.code === 'invalid_argument' && e.status === 0,
      );
    }
    // The parser's error quotes the whole input: it is not kept, so credentials stay out.
    const e = (() => {
      try {
        createClient({ baseUrl: 'http://user:hunter2@host:bad-port/' });
      } catch (err) {
        return err;
      }
    })();
    assert.equal(e.code, 'invalid_argument');
    assert.ok(!inspect(e).includes('hunter2'), inspect(e));
  });

  test('does not expose the token on the client object', () => {
    const c = createClient({ baseUrl: server.baseUrl, token: 'tok-should-stay-private' });
    assert.ok(!JSON.stringify(c).includes('tok-should-stay-private'));
    assert.ok(!Object.values(c).includes('tok-should-stay-private'));
    assert.ok(!inspect(c, { showHidden: true, depth: 5 }).includes('tok-should-stay-private'));
  });
});

describe('secrets', () => {
  test('createSecret (global) returns metadata with version 1', async () => {
    const meta = await client.createSecret({
      name: 'global-api-key',
      value: 'g-value',
      scope_type: 'global',
    });
    assert.match(meta.id, /^[0-9a-f-]{36}$/);
    assert.equal(meta.name, 'global-api-key');
    assert.equal(meta.scope_type, 'global');
    assert.equal(meta.scope_id, null);
    assert.equal(meta.version, 1);
    assert.ok(!Number.isNaN(Date.parse(meta.created_at)));
    assert.ok(!Number.isNaN(Date.parse(meta.updated_at)));
    assert.ok(!('value' in meta), 'metadata never carries the value');
  });

  test('createSecret (workspace and agent scopes)', async () => {
    const ws = await client.createSecret({
      name: 'db/password',
      value: 'pw',
      scope_type: 'workspace',
      scope_id: 'ws-create',
    });
    assert.equal(ws.scope_type, 'workspace');
    assert.equal(ws.scope_id, 'ws-create');
    const agent = await client.createSecret({
      name: 'db/password',
      value: 'pw2',
      scope_type: 'agent',
      scope_id: 'agent-7',
    });
    assert.equal(agent.scope_type, 'agent');
    assert.equal(agent.scope_id, 'agent-7');
    assert.notEqual(agent.id, ws.id);
  });

  test('createSecret with a duplicate name in the same scope -> 409 name_taken', async () => {
    const input = { name: 'dup', value: 'one', scope_type: 'workspace', scope_id: 'ws-dup' };
    await client.createSecret(input);
    await rejectsWith(client.createSecret({ ...input, value: 'two' }), 409, 'name_taken');
    // The same name in another scope is fine.
    await client.createSecret({ ...input, scope_id: 'ws-dup-2' });
  });

  test('createSecret with an invalid name or scope -> 400 invalid_request', async () => {
    await rejectsWith(
      client.createSecret({ name: 'has space', value: 'v', scope_type: 'global' }),
      400,
      'invalid_request',
    );
    await rejectsWith(
      client.createSecret({ name: 'ok', value: 'v', scope_type: 'planet' }),
      400,
      'invalid_request',
    );
    await rejectsWith(
      client.createSecret({ name: 'ok', value: 'v', scope_type: 'workspace' }),
      400,
      'invalid_request',
    );
  });

  test('createSecret with a value over the limit -> 413 value_too_large', async () => {
    await rejectsWith(
      client.createSecret({ name: 'huge', value: 'x'.repeat(65537), scope_type: 'global' }),
      413,
      'value_too_large',
    );
  });

  test('an empty value -> 400 empty_value naming the allowEmpty option; allowEmpty stores it', async () => {
    const input = { name: 'maybe-empty', value: '', scope_type: 'workspace', scope_id: 'ws-empty' };
    await rejectsWith(client.createSecret(input), 400, 'empty_value');
    const e = await client.createSecret(input).catch((err) => err);
    assert.match(e.message, /empty/);
    assert.match(e.message, /allowEmpty: true/, e.message);
    // false is the default: refused the same way.
    await rejectsWith(client.createSecret(input, { allowEmpty: false }), 400, 'empty_value');
    assert.equal((await client.listSecrets({ scope_type: 'workspace', scope_id: 'ws-empty' })).items.length, 0);

    const created = await client.createSecret(input, { allowEmpty: true });
    assert.equal(created.version, 1);
    assert.deepEqual(await client.getSecret(created.id, 'empty on purpose'), { value: '', version: 1 });

    const updated = await client.updateSecret(created.id, 'now set');
    assert.equal(updated.version, 2);
    await rejectsWith(client.updateSecret(created.id, ''), 400, 'empty_value');
    await rejectsWith(client.updateSecret(created.id, '', { ifMatch: 2 }), 400, 'empty_value');
    assert.deepEqual(await client.getSecret(created.id, 'still set'), { value: 'now set', version: 2 });
    const emptied = await client.updateSecret(created.id, '', { allowEmpty: true, ifMatch: 2 });
    assert.equal(emptied.version, 3);
    assert.deepEqual(await client.getSecret(created.id, 'emptied'), { value: '', version: 3 });
    // allowEmpty with a non-empty value changes nothing.
    assert.equal((await client.updateSecret(created.id, 'x', { allowEmpty: true })).version, 4);
  });

  test('allowEmpty must be a boolean; it is refused before sending', async () => {
    const input = { name: 'bad-flag', value: '', scope_type: 'global' };
    await rejectsWith(client.createSecret(input, { allowEmpty: 'yes' }), 0, 'invalid_argument');
    await rejectsWith(client.updateSecret(NO_SUCH_ID, '', { allowEmpty: 1 }), 0, 'invalid_argument');
  });

  test('getSecretMetadata returns the same metadata', async () => {
    const created = await client.createSecret({
      name: 'meta-me',
      value: 'v',
      scope_type: 'workspace',
      scope_id: 'ws-meta',
    });
    const meta = await client.getSecretMetadata(created.id);
    assert.deepEqual(meta, created);
  });

  test('getSecretMetadata of an unknown id -> 404 not_found with a request id', async () => {
    await rejectsWith(client.getSecretMetadata(NO_SUCH_ID), 404, 'not_found');
    const e = await client.getSecretMetadata(NO_SUCH_ID).catch((err) => err);
    assert.equal(typeof e.requestId, 'string');
    assert.ok(e.requestId.length > 0);
  });

  test('getSecretMetadata of a malformed id -> 400 invalid_id', async () => {
    await rejectsWith(client.getSecretMetadata('not-a-uuid'), 400, 'invalid_id');
  });

  test('empty and dot path segments are refused before sending', async () => {
    await rejectsWith(client.getSecretMetadata(''), 0, 'invalid_argument');
    await rejectsWith(client.deleteSecret('..'), 0, 'invalid_argument');
  });

  test('getSecret decrypts value and version, unicode intact', async () => {
    const value = 'pässwörd 🔑 "quoted" \\ back\nslash\u0000nul';
    const created = await client.createSecret({ name: 'unicode', value, scope_type: 'global' });
    const got = await client.getSecret(created.id, 'unit test: round trip');
    assert.deepEqual(got, { value, version: 1 });
  });

  test('getSecret without a reason -> 400 reason_required', async () => {
    const created = await client.createSecret({
      name: 'needs-reason',
      value: 'v',
      scope_type: 'global',
    });
    await rejectsWith(client.getSecret(created.id, ''), 400, 'reason_required');
    await rejectsWith(client.getSecret(created.id, '   '), 400, 'reason_required');
    await rejectsWith(client.getSecret(created.id, undefined), 400, 'reason_required');
  });

  test('getSecret of an unknown id -> 404 not_found', async () => {
    await rejectsWith(client.getSecret(NO_SUCH_ID, 'why not'), 404, 'not_found');
  });

  test('updateSecret writes a new version', async () => {
    const created = await client.createSecret({ name: 'rotate-me', value: 'v1', scope_type: 'global' });
    const updated = await client.updateSecret(created.id, 'v2');
    assert.equal(updated.id, created.id);
    assert.equal(updated.version, 2);
    assert.deepEqual(await client.getSecret(created.id, 'check rotation'), {
      value: 'v2',
      version: 2,
    });
  });

  test('updateSecret with ifMatch: current succeeds, stale -> 412 version_mismatch', async () => {
    const created = await client.createSecret({ name: 'cas', value: 'v1', scope_type: 'global' });
    const v2 = await client.updateSecret(created.id, 'v2', { ifMatch: 1 });
    assert.equal(v2.version, 2);
    // An ETag-style string works too.
    const v3 = await client.updateSecret(created.id, 'v3', { ifMatch: '"2"' });
    assert.equal(v3.version, 3);
    await rejectsWith(client.updateSecret(created.id, 'lost', { ifMatch: 2 }), 412, 'version_mismatch');
    assert.equal((await client.getSecret(created.id, 'check cas')).value, 'v3');
    // A well-formed tag that is none of ours matches nothing (RFC 9110): 412, as does a version
    // written otherwise than the ETag ("03" is not "3").
    await rejectsWith(client.updateSecret(created.id, 'bad', { ifMatch: 'soon' }), 412, 'version_mismatch');
    await rejectsWith(client.updateSecret(created.id, 'bad', { ifMatch: '03' }), 412, 'version_mismatch');
    // A malformed field (an unterminated tag) is bad input.
    await rejectsWith(client.updateSecret(created.id, 'bad', { ifMatch: '"3' }), 400, 'invalid_request');
    assert.equal((await client.getSecret(created.id, 'check cas')).value, 'v3');
  });

  test('updateSecret of an unknown id -> 404 not_found', async () => {
    await rejectsWith(client.updateSecret(NO_SUCH_ID, 'v'), 404, 'not_found');
  });

  test('deleteSecret removes the secret; a second delete -> 404', async () => {
    const created = await client.createSecret({ name: 'delete-me', value: 'v', scope_type: 'global' });
    assert.equal(await client.deleteSecret(created.id), undefined);
    await rejectsWith(client.getSecretMetadata(created.id), 404, 'not_found');
    await rejectsWith(client.getSecret(created.id, 'after delete'), 404, 'not_found');
    await rejectsWith(client.deleteSecret(created.id), 404, 'not_found');
  });

  test('listSecrets filters by scope and pages with next_cursor', async () => {
    const scope = { scope_type: 'workspace', scope_id: 'ws-list' };
    const ids = [];
    for (const name of ['a', 'b', 'c']) {
      ids.push((await client.createSecret({ name, value: `value-${name}`, ...scope })).id);
    }
    const first = await client.listSecrets({ ...scope, limit: 2 });
    assert.equal(first.items.length, 2);
    assert.equal(typeof first.next_cursor, 'string');
    const second = await client.listSecrets({ ...scope, limit: 2, cursor: first.next_cursor });
    assert.equal(second.items.length, 1);
    assert.equal(second.next_cursor, null);
    const seen = [...first.items, ...second.items];
    assert.deepEqual(seen.map((m) => m.id).sort(), [...ids].sort());
    for (const m of seen) {
      assert.equal(m.scope_id, 'ws-list');
      assert.ok(!('value' in m));
    }

    const all = await client.listSecrets();
    assert.ok(Array.isArray(all.items));
    assert.ok(all.items.length >= 1);

    // A scope id alone: the workspace and agent scopes of that id.
    const agent = await client.createSecret({
      name: 'a', value: 'agent-value', scope_type: 'agent', scope_id: 'ws-list',
    });
    const byId = await client.listSecrets({ scope_id: 'ws-list' });
    assert.deepEqual(byId.items.map((m) => m.id).sort(), [...ids, agent.id].sort());
  });

  test('listSecrets with a bad query -> 400 invalid_request', async () => {
    await rejectsWith(client.listSecrets({ limit: 0 }), 400, 'invalid_request');
    await rejectsWith(client.listSecrets({ cursor: 'nope' }), 400, 'invalid_request');
  });
});

describe('transport', () => {
  test('a server that is not there -> RcrtError network_error, status 0', async () => {
    // Stop a dedicated server so its port is known to be closed.
    const gone = await startServer();
    await gone.stop();
    const c = createClient({ baseUrl: gone.baseUrl });
    await rejectsWith(c.listSecrets(), 0, 'network_error');
    const e = await c.listSecrets().catch((err) => err);
    assert.ok(e.cause, 'the fetch failure is kept as cause');
    assert.equal(e.requestId, undefined);
  });

  test('a custom fetch receives JSON, the bearer token and the reason header', async () => {
    const seen = [];
    const recording = async (url, init) => {
      seen.push({ url, init });
      return fetch(url, init);
    };
    let calls = 0;
    const c = createClient({
      baseUrl: `${server.baseUrl}/`,
      fetch: recording,
      token: async () => `token-${++calls}`,
    });
    const meta = await c.createSecret({ name: 'via-custom-fetch', value: 'v', scope_type: 'global' });
    await c.getSecret(meta.id, 'custom fetch');
    const vault = await c.createSecretVault('ws-fetch', { K: 'v' });
    await c.getSecretsFromVault(vault.id, 'custom fetch', { workspace: 'ws-fetch' });

    assert.equal(seen.length, 4);
    const [create, decrypt, vcreate, vread] = seen;
    assert.equal(create.url, `${server.baseUrl}/secrets`);
    assert.equal(create.init.method, 'POST');
    assert.equal(create.init.headers['content-type'], 'application/json');
    assert.equal(create.init.headers.authorization, 'Bearer token-1');
    assert.deepEqual(JSON.parse(create.init.body), {
      name: 'via-custom-fetch',
      value: 'v',
      scope_type: 'global',
    });
    assert.equal(decrypt.url, `${server.baseUrl}/secrets/${meta.id}/decrypt`);
    assert.deepEqual(JSON.parse(decrypt.init.body), { reason: 'custom fetch' });
    assert.equal(decrypt.init.headers.authorization, 'Bearer token-2');
    assert.equal(vcreate.url, `${server.baseUrl}/secrets/vaults`);
    assert.equal(vread.init.method, 'GET');
    assert.equal(vread.init.body, undefined);
    assert.equal(vread.init.headers['content-type'], undefined);
    assert.equal(vread.init.headers['x-access-reason'], 'custom fetch');
    assert.equal(vread.url, `${server.baseUrl}/secrets/vault/${vault.id}?workspace=ws-fetch`);
    // No allow_empty unless asked for: a server without the flag sees the same body as before.
    assert.ok(!('allow_empty' in JSON.parse(vcreate.init.body)));
  });

  test('allowEmpty: true adds "allow_empty": true to the body of every call that stores values', async () => {
    const bodies = [];
    const c = createClient({
      baseUrl: server.baseUrl,
      fetch: async (url, init) => {
        if (init.body !== undefined) bodies.push(JSON.parse(init.body));
        return fetch(url, init);
      },
    });
    const yes = { allowEmpty: true };
    const meta = await c.createSecret({ name: 'flagged', value: '', scope_type: 'global' }, yes);
    await c.updateSecret(meta.id, '', yes);
    await c.updateSecret(meta.id, 'set', { allowEmpty: false });
    const vault = await c.createSecretVault('ws-flag', { EMPTY: '' }, { name: 'flagged', ...yes });
    await c.setVaultSecret(vault.id, 'OTHER', '', yes);
    assert.deepEqual(bodies, [
      { name: 'flagged', value: '', scope_type: 'global', allow_empty: true },
      { value: '', allow_empty: true },
      { value: 'set' },
      { workspace: 'ws-flag', name: 'flagged', secrets: { EMPTY: '' }, allow_empty: true },
      { value: '', allow_empty: true },
    ]);
  });

  test('a non-RCRT error response -> unexpected_response; bad success body -> invalid_response', async () => {
    const fake = (status, body) => async () => ({
      status,
      headers: { get: (h) => (h === 'x-request-id' ? 'req-123' : null) },
      text: async () => body,
    });
    const proxyError = createClient({ baseUrl: 'http://x', fetch: fake(502, '<html>bad gateway</html>') });
    await rejectsWith(proxyError.listSecrets(), 502, 'unexpected_response');
    const e = await proxyError.listSecrets().catch((err) => err);
    assert.equal(e.requestId, 'req-123');
    assert.ok(!e.message.includes('<html>'));
    const garbled = createClient({ baseUrl: 'http://x', fetch: fake(200, 'not json') });
    await rejectsWith(garbled.listSecrets(), 200, 'invalid_response');
    // A broken decrypt body: JSON.parse's message would quote the value around the error.
    const broken = createClient({
      baseUrl: 'http://x',
      fetch: fake(200, '{"value":"hunter2-QWERTY","v":}'),
    });
    await rejectsWith(broken.getSecret(NO_SUCH_ID, 'why'), 200, 'invalid_response');
    const leak = await broken.getSecret(NO_SUCH_ID, 'why').catch((err) => err);
    assert.ok(!/hunter2|ERTY/.test(inspect(leak)), inspect(leak));
  });

  test('timeoutMs aborts a slow request with code timeout', async () => {
    const never = (_url, init) =>
      new Promise((_, reject) => {
        init.signal.addEventListener('abort', () => reject(init.signal.reason));
      });
    const c = createClient({ baseUrl: 'http://x', fetch: never, timeoutMs: 50 });
    await rejectsWith(c.listSecrets(), 0, 'timeout');
  });
});
