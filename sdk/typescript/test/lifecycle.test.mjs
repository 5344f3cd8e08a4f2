// Secret lifecycle (docs/lifecycle.md) against a real rcrt-server: versions, decrypt of a
// version, rollback, destroy, soft delete and restore, metadata, listing filters, expiry and
// idempotent writes. The first describe block checks what goes on the wire with a recording
// fetch in front of the same server.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { createClient } from '@rcrt/secrets';
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A unique name, so tests never collide on `name_taken`. */
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

/** A client whose requests are recorded (and still sent to the real server). */
function recordingClient() {
  const calls = [];
  const c = createClient({
    baseUrl: server.baseUrl,
    fetch: async (url, init) => {
      calls.push({ url, init });
      return fetch(url, init);
    },
  });
  return { c, calls };
}

describe('what the SDK sends', () => {
  test('Idempotency-Key, If-Match, the version, filters and a PATCH body', async () => {
    const { c, calls } = recordingClient();
    const name = unique('wire');
    const created = await c.createSecret(
      {
        name,
        value: 'v1',
        scope_type: 'global',
        description: 'wire test',
        labels: { env: 'prod' },
        expires_at: new Date('2031-01-02T03:04:05Z'),
        max_versions: 5,
      },
      { idempotencyKey: 'wire-create-1' },
    );
    let call = calls.at(-1);
    assert.equal(call.init.method, 'POST');
    assert.equal(call.init.headers['idempotency-key'], 'wire-create-1');
    assert.deepEqual(JSON.parse(call.init.body), {
      name,
      value: 'v1',
      scope_type: 'global',
      description: 'wire test',
      labels: { env: 'prod' },
      expires_at: '2031-01-02T03:04:05.000Z',
      max_versions: 5,
    });

    await c.updateSecret(created.id, 'v2', { ifMatch: 1, idempotencyKey: 'wire-update-1' });
    call = calls.at(-1);
    assert.equal(call.init.headers['if-match'], '"1"');
    assert.equal(call.init.headers['idempotency-key'], 'wire-update-1');

    await c.getSecret(created.id, 'wire', { version: 1 });
    assert.deepEqual(JSON.parse(calls.at(-1).init.body), { reason: 'wire', version: 1 });

    await c.rollbackSecret(created.id, 1, { ifMatch: '"2"', idempotencyKey: 'wire-rollback-1' });
    call = calls.at(-1);
    assert.equal(call.url, `${server.baseUrl}/secrets/${created.id}/rollback`);
    assert.deepEqual(JSON.parse(call.init.body), { version: 1 });
    assert.equal(call.init.headers['if-match'], '"2"');
    assert.equal(call.init.headers['idempotency-key'], 'wire-rollback-1');

    await c.updateSecretMetadata(created.id, { expires_at: null, max_versions: null });
    call = calls.at(-1);
    assert.equal(call.init.method, 'PATCH');
    assert.equal(call.init.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(call.init.body), { expires_at: null, max_versions: null });

    await c.listSecrets({
      labels: { env: 'prod', team: 'core' },
      name_prefix: 'db/',
      expiring_within: '30d',
      deleted: true,
      limit: 5,
    });
    const query = new URL(calls.at(-1).url).searchParams;
    assert.equal(query.get('label'), 'env=prod,team=core');
    assert.equal(query.get('name_prefix'), 'db/');
    assert.equal(query.get('expiring_within'), '30d');
    assert.equal(query.get('deleted'), 'true');
    // deleted: false is the default and is not sent.
    await c.listSecrets({ deleted: false });
    assert.equal(new URL(calls.at(-1).url).search, '');

    await c.listSecretVersions(created.id, { limit: 1 });
    assert.equal(calls.at(-1).url, `${server.baseUrl}/secrets/${created.id}/versions?limit=1`);
    await c.destroySecretVersion(created.id, 2);
    call = calls.at(-1);
    assert.equal(call.init.method, 'POST');
    assert.equal(call.url, `${server.baseUrl}/secrets/${created.id}/versions/2/destroy`);

    await c.deleteSecret(created.id, { recoveryWindow: '7d' });
    assert.equal(calls.at(-1).url, `${server.baseUrl}/secrets/${created.id}?recovery_window=7d`);
    await c.restoreSecret(created.id);
    assert.equal(calls.at(-1).url, `${server.baseUrl}/secrets/${created.id}/restore`);
  });

  test('bad arguments are refused before anything is sent', async () => {
    const { c, calls } = recordingClient();
    for (const key of ['', ' lead', 'trail ', 'caf\u00e9', 'new\nline', 'k'.repeat(256), 7]) {
      await rejectsWith(
        c.createSecret({ name: 'x', value: 'v', scope_type: 'global' }, { idempotencyKey: key }),
        0,
        'invalid_argument',
      );
      await rejectsWith(c.updateSecret(NO_SUCH_ID, 'v', { idempotencyKey: key }), 0, 'invalid_argument');
      await rejectsWith(c.rollbackSecret(NO_SUCH_ID, 1, { idempotencyKey: key }), 0, 'invalid_argument');
      await rejectsWith(c.setVaultSecret('v', 'K', 'x', { idempotencyKey: key }), 0, 'invalid_argument');
    }
    for (const version of [0, -1, 1.5, '2', Number.NaN]) {
      await rejectsWith(c.getSecret(NO_SUCH_ID, 'r', { version }), 0, 'invalid_argument');
      await rejectsWith(c.rollbackSecret(NO_SUCH_ID, version), 0, 'invalid_argument');
      await rejectsWith(c.destroySecretVersion(NO_SUCH_ID, version), 0, 'invalid_argument');
    }
    for (const labels of [{ env: 'a,b' }, { 'a=b': 'x' }, { 'a,b': 'x' }, { '': 'x' }, { n: 1 }]) {
      await rejectsWith(c.listSecrets({ labels }), 0, 'invalid_argument');
    }
    await rejectsWith(
      c.createSecret({ name: 'x', value: 'v', scope_type: 'global', expires_at: new Date('nope') }),
      0,
      'invalid_argument',
    );
    await rejectsWith(c.updateSecretMetadata(NO_SUCH_ID, null), 0, 'invalid_argument');
    // A generated vault name would differ on a retry: a key needs an explicit name.
    await rejectsWith(
      c.createSecretVault('ws', { K: 'v' }, { idempotencyKey: 'k1' }),
      0,
      'invalid_argument',
    );
    assert.equal(calls.length, 0, 'nothing reached the server');
  });
});

describe('metadata', () => {
  test('a plain secret shows empty metadata', async () => {
    const meta = await client.createSecret({ name: unique('plain'), value: 'v', scope_type: 'global' });
    assert.equal(meta.description, '');
    assert.deepEqual(meta.labels, {});
    assert.equal(meta.expires_at, null);
    assert.equal(meta.max_versions, null);
  });

  test('createSecret with metadata; every view shows it', async () => {
    const expires = new Date(Date.now() + 10 * 86400_000);
    const meta = await client.createSecret({
      name: unique('with-meta'),
      value: 'v',
      scope_type: 'workspace',
      scope_id: 'ws-meta-life',
      description: 'the payments database',
      labels: { env: 'prod', team: 'core' },
      expires_at: expires.toISOString(),
      max_versions: 3,
    });
    assert.equal(meta.description, 'the payments database');
    assert.deepEqual(meta.labels, { env: 'prod', team: 'core' });
    assert.ok(Math.abs(Date.parse(meta.expires_at) - expires.getTime()) < 1000, meta.expires_at);
    assert.equal(meta.max_versions, 3);
    assert.deepEqual(await client.getSecretMetadata(meta.id), meta);
    const listed = await client.listSecrets({ scope_type: 'workspace', scope_id: 'ws-meta-life' });
    assert.deepEqual(listed.items, [meta]);
    const updated = await client.updateSecret(meta.id, 'v2');
    assert.equal(updated.description, 'the payments database');
    assert.deepEqual(updated.labels, meta.labels);
  });

  test('createSecret with bad metadata -> 400 invalid_request', async () => {
    const base = { name: unique('bad-meta'), value: 'v', scope_type: 'global' };
    for (const extra of [
      { labels: { 'Bad Key': 'x' } },
      { labels: { env: 'a,b' } },
      { description: 'line\nbreak' },
      { description: 'x'.repeat(1025) },
      { max_versions: 0 },
      { max_versions: 101 },
      { expires_at: 'next tuesday' },
    ]) {
      await rejectsWith(client.createSecret({ ...base, ...extra }), 400, 'invalid_request');
    }
  });

  test('updateSecretMetadata changes only the fields given, without a new version', async () => {
    const created = await client.createSecret({
      name: unique('patch-me'),
      value: 'v',
      scope_type: 'global',
      description: 'before',
      labels: { env: 'dev' },
      expires_at: '2035-01-01T00:00:00Z',
      max_versions: 4,
    });
    const described = await client.updateSecretMetadata(created.id, { description: 'after' });
    assert.equal(described.description, 'after');
    assert.deepEqual(described.labels, { env: 'dev' });
    assert.equal(described.max_versions, 4);
    assert.equal(described.version, 1, 'no new version');
    assert.equal(Date.parse(described.expires_at), Date.parse('2035-01-01T00:00:00Z'));

    const relabelled = await client.updateSecretMetadata(created.id, { labels: { tier: '1' } });
    assert.deepEqual(relabelled.labels, { tier: '1' }, 'labels replace the whole set');
    const cleared = await client.updateSecretMetadata(created.id, {
      labels: {},
      expires_at: null,
      max_versions: null,
    });
    assert.deepEqual(cleared.labels, {});
    assert.equal(cleared.expires_at, null);
    assert.equal(cleared.max_versions, null);
    assert.equal(cleared.description, 'after');
    assert.deepEqual(await client.getSecretMetadata(created.id), cleared);
    assert.equal((await client.getSecret(created.id, 'still v1')).version, 1);

    await rejectsWith(client.updateSecretMetadata(NO_SUCH_ID, { description: 'x' }), 404, 'not_found');
    await rejectsWith(
      client.updateSecretMetadata(created.id, { max_versions: 1000 }),
      400,
      'invalid_request',
    );
  });

  test('listSecrets filters by labels, name prefix and expiry', async () => {
    const ws = unique('ws-filter');
    const scope = { scope_type: 'workspace', scope_id: ws };
    const day = 86400_000;
    const mk = (name, extra) => client.createSecret({ name, value: 'v', ...scope, ...extra });
    const prodCore = await mk('db/main', { labels: { env: 'prod', team: 'core' } });
    const prodEdge = await mk('db/edge', {
      labels: { env: 'prod', team: 'edge' },
      expires_at: new Date(Date.now() + 10 * day),
    });
    const dev = await mk('api/key', {
      labels: { env: 'dev' },
      expires_at: new Date(Date.now() + 60 * day),
    });
    const ids = async (q) =>
      (await client.listSecrets({ ...scope, ...q })).items.map((m) => m.id).sort();

    assert.deepEqual(await ids({ labels: { env: 'prod' } }), [prodCore.id, prodEdge.id].sort());
    assert.deepEqual(await ids({ labels: { env: 'prod', team: 'core' } }), [prodCore.id]);
    assert.deepEqual(await ids({ labels: { env: 'staging' } }), []);
    assert.deepEqual(await ids({ name_prefix: 'db/' }), [prodCore.id, prodEdge.id].sort());
    assert.deepEqual(await ids({ name_prefix: 'api/' }), [dev.id]);
    assert.deepEqual(await ids({ expiring_within: '30d' }), [prodEdge.id]);
    assert.deepEqual(await ids({ expiring_within: '90d' }), [prodEdge.id, dev.id].sort());
    assert.deepEqual(await ids({ labels: { env: 'prod' }, expiring_within: '30d' }), [prodEdge.id]);
    await rejectsWith(client.listSecrets({ expiring_within: 'soon' }), 400, 'invalid_request');
  });
});

describe('versions', () => {
  test('listSecretVersions: newest first, states, no values, paging', async () => {
    const created = await client.createSecret({ name: unique('versions'), value: 'value-1', scope_type: 'global' });
    await client.updateSecret(created.id, 'value-2');
    await client.updateSecret(created.id, 'value-3');
    const page = await client.listSecretVersions(created.id);
    assert.deepEqual(
      page.versions.map((v) => [v.version, v.state, v.destroyed_at]),
      [
        [3, 'current', null],
        [2, 'kept', null],
        [1, 'kept', null],
      ],
    );
    assert.equal(page.next_cursor, null);
    for (const v of page.versions) {
      assert.ok(!Number.isNaN(Date.parse(v.created_at)));
      assert.equal(typeof v.created_by, 'string');
    }
    assert.ok(!JSON.stringify(page).includes('value-'), 'never a value');

    const first = await client.listSecretVersions(created.id, { limit: 2 });
    assert.deepEqual(first.versions.map((v) => v.version), [3, 2]);
    assert.equal(typeof first.next_cursor, 'string');
    const second = await client.listSecretVersions(created.id, { limit: 2, cursor: first.next_cursor });
    assert.deepEqual(second.versions.map((v) => v.version), [1]);
    assert.equal(second.next_cursor, null);

    await rejectsWith(client.listSecretVersions(NO_SUCH_ID), 404, 'not_found');
  });

  test('getSecret of a given version; unknown -> 404 version_not_found', async () => {
    const created = await client.createSecret({ name: unique('by-version'), value: 'old', scope_type: 'global' });
    await client.updateSecret(created.id, 'new');
    assert.deepEqual(await client.getSecret(created.id, 'old one', { version: 1 }), { value: 'old', version: 1 });
    assert.deepEqual(await client.getSecret(created.id, 'new one', { version: 2 }), { value: 'new', version: 2 });
    assert.deepEqual(await client.getSecret(created.id, 'current'), { value: 'new', version: 2 });
    await rejectsWith(client.getSecret(created.id, 'nope', { version: 3 }), 404, 'version_not_found');
  });

  test('rollbackSecret writes a new version with the old value; ifMatch is honoured', async () => {
    const created = await client.createSecret({ name: unique('rollback'), value: 'good', scope_type: 'global' });
    await client.updateSecret(created.id, 'bad');
    const rolled = await client.rollbackSecret(created.id, 1);
    assert.equal(rolled.id, created.id);
    assert.equal(rolled.version, 3);
    assert.deepEqual(await client.getSecret(created.id, 'after rollback'), { value: 'good', version: 3 });
    const states = (await client.listSecretVersions(created.id)).versions.map((v) => v.state);
    assert.deepEqual(states, ['current', 'kept', 'kept']);

    await rejectsWith(client.rollbackSecret(created.id, 2, { ifMatch: 2 }), 412, 'version_mismatch');
    const again = await client.rollbackSecret(created.id, 2, { ifMatch: 3 });
    assert.equal(again.version, 4);
    assert.equal((await client.getSecret(created.id, 'r')).value, 'bad');
    await rejectsWith(client.rollbackSecret(created.id, 99), 404, 'version_not_found');
    await rejectsWith(client.rollbackSecret(NO_SUCH_ID, 1), 404, 'not_found');
  });

  test('destroySecretVersion shreds one version; the current one -> 409 current_version', async () => {
    const created = await client.createSecret({ name: unique('destroy'), value: 'd1', scope_type: 'global' });
    await client.updateSecret(created.id, 'd2');
    await client.updateSecret(created.id, 'd3');
    assert.equal(await client.destroySecretVersion(created.id, 2), undefined);
    const versions = (await client.listSecretVersions(created.id)).versions;
    assert.deepEqual(
      versions.map((v) => [v.version, v.state]),
      [
        [3, 'current'],
        [2, 'destroyed'],
        [1, 'kept'],
      ],
    );
    assert.ok(!Number.isNaN(Date.parse(versions[1].destroyed_at)));
    await rejectsWith(client.getSecret(created.id, 'gone', { version: 2 }), 410, 'version_destroyed');
    await rejectsWith(client.rollbackSecret(created.id, 2), 410, 'version_destroyed');
    // Destroying it again is fine.
    assert.equal(await client.destroySecretVersion(created.id, 2), undefined);
    await rejectsWith(client.destroySecretVersion(created.id, 3), 409, 'current_version');
    assert.deepEqual(await client.getSecret(created.id, 'kept', { version: 1 }), { value: 'd1', version: 1 });
    await rejectsWith(client.destroySecretVersion(created.id, 42), 404, 'version_not_found');
  });

  test('max_versions: older versions are destroyed as new ones arrive', async () => {
    const created = await client.createSecret({
      name: unique('capped'),
      value: 'c1',
      scope_type: 'global',
      max_versions: 2,
    });
    for (const v of ['c2', 'c3', 'c4']) await client.updateSecret(created.id, v);
    const versions = (await client.listSecretVersions(created.id)).versions;
    assert.deepEqual(
      versions.map((v) => [v.version, v.state]),
      [
        [4, 'current'],
        [3, 'kept'],
        [2, 'destroyed'],
        [1, 'destroyed'],
      ],
    );
    await rejectsWith(client.getSecret(created.id, 'capped', { version: 1 }), 410, 'version_destroyed');
    assert.equal((await client.getSecret(created.id, 'capped', { version: 3 })).value, 'c3');
  });
});

describe('soft delete and restore', () => {
  test('deleteSecret with a recovery window; listDeletedSecrets; restoreSecret', async () => {
    const name = unique('soft');
    const scope = { scope_type: 'workspace', scope_id: unique('ws-soft') };
    const created = await client.createSecret({ name, value: 'keep me', ...scope });
    const deletion = await client.deleteSecret(created.id, { recoveryWindow: '7d' });
    assert.equal(deletion.id, created.id);
    const window = Date.parse(deletion.purge_at) - Date.parse(deletion.deleted_at);
    assert.equal(window, 7 * 86400_000);

    await rejectsWith(client.getSecretMetadata(created.id), 404, 'not_found');
    await rejectsWith(client.getSecret(created.id, 'hidden'), 404, 'not_found');
    assert.deepEqual((await client.listSecrets(scope)).items, []);
    const deleted = await client.listDeletedSecrets(scope);
    assert.equal(deleted.items.length, 1);
    assert.equal(deleted.items[0].id, created.id);
    assert.equal(deleted.items[0].deleted_at, deletion.deleted_at);
    assert.equal(deleted.items[0].purge_at, deletion.purge_at);
    // The name stays reserved during the window.
    await rejectsWith(client.createSecret({ name, value: 'other', ...scope }), 409, 'name_taken');

    const restored = await client.restoreSecret(created.id);
    assert.equal(restored.id, created.id);
    assert.equal(restored.version, 1);
    assert.deepEqual(await client.getSecret(created.id, 'back'), { value: 'keep me', version: 1 });
    assert.deepEqual((await client.listDeletedSecrets(scope)).items, []);
    await rejectsWith(client.restoreSecret(created.id), 404, 'not_found');
  });

  test('deleteSecret without a window shreds at once (undefined); restore -> 404', async () => {
    const created = await client.createSecret({ name: unique('hard'), value: 'v', scope_type: 'global' });
    assert.equal(await client.deleteSecret(created.id), undefined);
    await rejectsWith(client.restoreSecret(created.id), 404, 'not_found');
    const zero = await client.createSecret({ name: unique('zero'), value: 'v', scope_type: 'global' });
    assert.equal(await client.deleteSecret(zero.id, { recoveryWindow: '0' }), undefined);
    await rejectsWith(client.restoreSecret(zero.id), 404, 'not_found');
  });

  test('a bad recovery window -> 400 invalid_request', async () => {
    const created = await client.createSecret({ name: unique('bad-window'), value: 'v', scope_type: 'global' });
    await rejectsWith(client.deleteSecret(created.id, { recoveryWindow: '91d' }), 400, 'invalid_request');
    await rejectsWith(client.deleteSecret(created.id, { recoveryWindow: 'a week' }), 400, 'invalid_request');
    assert.equal((await client.getSecretMetadata(created.id)).id, created.id, 'still there');
  });
});

describe('expiry', () => {
  test('an expired secret -> 410 expired on decrypt; metadata, update and patch still work', async () => {
    const created = await client.createSecret({
      name: unique('expiring'),
      value: 'short-lived',
      scope_type: 'global',
      expires_at: new Date(Date.now() + 1500),
    });
    assert.equal((await client.getSecret(created.id, 'before expiry')).value, 'short-lived');
    await sleep(2000);
    await rejectsWith(client.getSecret(created.id, 'after expiry'), 410, 'expired');
    assert.equal((await client.getSecretMetadata(created.id)).id, created.id);
    const expired = await client.listSecrets({ expiring_within: '1s' });
    assert.ok(expired.items.some((m) => m.id === created.id), 'listed as expiring');
    // Rotating it: a new value and a new expiry.
    await client.updateSecret(created.id, 'rotated');
    await client.updateSecretMetadata(created.id, { expires_at: new Date(Date.now() + 86400_000) });
    assert.deepEqual(await client.getSecret(created.id, 'rotated'), { value: 'rotated', version: 2 });
  });
});

describe('idempotent writes', () => {
  test('createSecret: a retry returns the first answer; another request -> 422', async () => {
    const key = randomUUID();
    const input = { name: unique('idem'), value: 'first', scope_type: 'global', labels: { a: 'b' } };
    const first = await client.createSecret(input, { idempotencyKey: key });
    const retry = await client.createSecret(input, { idempotencyKey: key });
    assert.deepEqual(retry, first, 'same answer, not 409');
    // The value is not part of the fingerprint: a retry changing only the value gets the first
    // answer, and the stored value is the first one.
    const changedValue = await client.createSecret({ ...input, value: 'second' }, { idempotencyKey: key });
    assert.equal(changedValue.id, first.id);
    assert.equal((await client.getSecret(first.id, 'idem')).value, 'first');

    await rejectsWith(
      client.createSecret({ ...input, name: unique('idem-other') }, { idempotencyKey: key }),
      422,
      'idempotency_key_reused',
    );
    await rejectsWith(
      client.createSecret({ ...input, labels: { a: 'c' } }, { idempotencyKey: key }),
      422,
      'idempotency_key_reused',
    );
    // Without the key, the name is taken.
    await rejectsWith(client.createSecret(input), 409, 'name_taken');
  });

  test('updateSecret and rollbackSecret: a retry writes no second version', async () => {
    const created = await client.createSecret({ name: unique('idem-upd'), value: 'u1', scope_type: 'global' });
    const key = randomUUID();
    const first = await client.updateSecret(created.id, 'u2', { idempotencyKey: key });
    const retry = await client.updateSecret(created.id, 'u2', { idempotencyKey: key });
    assert.equal(first.version, 2);
    assert.deepEqual(retry, first);
    assert.equal((await client.getSecretMetadata(created.id)).version, 2);
    // The same key on another route, or with another If-Match: reused.
    await rejectsWith(client.rollbackSecret(created.id, 1, { idempotencyKey: key }), 422, 'idempotency_key_reused');
    await rejectsWith(
      client.updateSecret(created.id, 'u2', { idempotencyKey: key, ifMatch: 2 }),
      422,
      'idempotency_key_reused',
    );

    const rollbackKey = randomUUID();
    const rolled = await client.rollbackSecret(created.id, 1, { idempotencyKey: rollbackKey });
    const rolledAgain = await client.rollbackSecret(created.id, 1, { idempotencyKey: rollbackKey });
    assert.equal(rolled.version, 3);
    assert.deepEqual(rolledAgain, rolled);
    assert.equal((await client.listSecretVersions(created.id)).versions.length, 3);
    await rejectsWith(
      client.rollbackSecret(created.id, 2, { idempotencyKey: rollbackKey }),
      422,
      'idempotency_key_reused',
    );
  });

  test('createSecretVault and setVaultSecret: a retry returns the first answer', async () => {
    const workspace = unique('ws-idem');
    const name = unique('vault-idem');
    const key = randomUUID();
    const vault = await client.createSecretVault(workspace, { A: '1' }, { name, idempotencyKey: key });
    const retry = await client.createSecretVault(workspace, { A: '1' }, { name, idempotencyKey: key });
    assert.deepEqual(retry, vault);
    await rejectsWith(
      client.createSecretVault(workspace, { A: '1' }, { name: unique('vault-other'), idempotencyKey: key }),
      422,
      'idempotency_key_reused',
    );

    const setKey = randomUUID();
    const set = await client.setVaultSecret(vault.id, 'A', '2', { idempotencyKey: setKey });
    const setRetry = await client.setVaultSecret(vault.id, 'A', '2', { idempotencyKey: setKey });
    assert.deepEqual(setRetry, set);
    const secretA = (await client.listSecrets({ scope_type: 'workspace', scope_id: workspace })).items.find(
      (m) => m.name === `${name}/A`,
    );
    assert.equal(secretA.version, 2, 'one new version, not two');
    await rejectsWith(
      client.setVaultSecret(vault.id, 'B', '2', { idempotencyKey: setKey }),
      422,
      'idempotency_key_reused',
    );
  });
});
