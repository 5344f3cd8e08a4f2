// Vault API against a real rcrt-server (authentication disabled, loopback), including the
// production guide's "Integration with RCRT SDK" example exactly as written there.

import assert from 'node:assert/strict';
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

describe('the production guide example', () => {
  test('createSecretVault + getSecretsFromVault, verbatim', async () => {
    const workspace = 'guide-workspace';

    // From rcrt-secrets-production-guide.md, "Integration with RCRT SDK":
    const vault = await client.createSecretVault(workspace, { API_KEY: 'secret-value' });
    const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');

    assert.equal(secrets.API_KEY, 'secret-value');
    assert.deepEqual(secrets, { API_KEY: 'secret-value' });
  });

  test('the same with a vaultId variable, as the guide names it', async () => {
    const workspace = 'guide-workspace-2';
    const vault = await client.createSecretVault(workspace, {
      API_KEY: 'secret-value', // Encrypted with DEK, DEK encrypted with KEK
    });
    const vaultId = vault.id;
    const secrets = await client.getSecretsFromVault(vaultId, 'audit reason');
    assert.equal(secrets.API_KEY, 'secret-value');
  });
});

describe('vaults', () => {
  test('createSecretVault generates a vault-<random> name and returns sorted keys', async () => {
    const vault = await client.createSecretVault('ws-gen', { ZETA: 'z', ALPHA: 'a', 'db.url': 'u' });
    assert.match(vault.id, /^[0-9a-f-]{36}$/);
    assert.match(vault.name, /^vault-[0-9a-f]{16}$/);
    assert.equal(vault.workspace, 'ws-gen');
    assert.deepEqual(vault.keys, ['ALPHA', 'ZETA', 'db.url']);
    const other = await client.createSecretVault('ws-gen', { K: 'v' });
    assert.notEqual(other.name, vault.name);
    assert.ok(!JSON.stringify(vault).includes('"z"'), 'the vault view never holds values');
  });

  test('createSecretVault with a name, and an empty vault', async () => {
    const named = await client.createSecretVault('ws-named', { K: 'v' }, { name: 'payments' });
    assert.equal(named.name, 'payments');
    const empty = await client.createSecretVault('ws-named', {}, { name: 'empty' });
    assert.deepEqual(empty.keys, []);
    assert.deepEqual(await client.getSecretsFromVault(empty.id, 'empty vault'), {});
  });

  test('a duplicate vault name in the same workspace -> 409 name_taken', async () => {
    await client.createSecretVault('ws-dup', { K: 'v' }, { name: 'twice' });
    await rejectsWith(
      client.createSecretVault('ws-dup', { K: 'v' }, { name: 'twice' }),
      409,
      'name_taken',
    );
  });

  test('invalid vault name, key or workspace -> 400 invalid_request', async () => {
    await rejectsWith(
      client.createSecretVault('ws-bad', { K: 'v' }, { name: 'no spaces' }),
      400,
      'invalid_request',
    );
    await rejectsWith(client.createSecretVault('ws-bad', { 'BAD KEY': 'v' }), 400, 'invalid_request');
    await rejectsWith(client.createSecretVault('', { K: 'v' }), 400, 'invalid_request');
  });

  test('getVault by id and by name (with and without workspace)', async () => {
    const vault = await client.createSecretVault(
      'ws-get',
      { A: '1', B: '2' },
      { name: 'get-by-name' },
    );
    assert.deepEqual(await client.getVault(vault.id), vault);
    assert.deepEqual(await client.getVault('get-by-name'), vault);
    assert.deepEqual(await client.getVault('get-by-name', { workspace: 'ws-get' }), vault);
    await rejectsWith(client.getVault('get-by-name', { workspace: 'elsewhere' }), 404, 'not_found');
  });

  test('a name used in two workspaces needs the workspace (or the id)', async () => {
    const a = await client.createSecretVault('ws-amb-a', { K: 'a' }, { name: 'shared-name' });
    const b = await client.createSecretVault('ws-amb-b', { K: 'b' }, { name: 'shared-name' });
    await rejectsWith(client.getVault('shared-name'), 409, 'ambiguous_vault');
    await rejectsWith(client.getSecretsFromVault('shared-name', 'ambiguous'), 409, 'ambiguous_vault');
    assert.equal((await client.getVault('shared-name', { workspace: 'ws-amb-b' })).id, b.id);
    assert.deepEqual(
      await client.getSecretsFromVault('shared-name', 'pick a', { workspace: 'ws-amb-a' }),
      { K: 'a' },
    );
    // Writes take no workspace: by id they work, by the ambiguous name they are refused.
    await rejectsWith(client.setVaultSecret('shared-name', 'K', 'x'), 409, 'ambiguous_vault');
    await client.setVaultSecret(a.id, 'K', 'a2');
    assert.deepEqual(await client.getSecretsFromVault(a.id, 'after write'), { K: 'a2' });
  });

  test('getVault / getSecretsFromVault of an unknown vault -> 404 not_found', async () => {
    await rejectsWith(client.getVault(NO_SUCH_ID), 404, 'not_found');
    await rejectsWith(client.getVault('no-such-vault'), 404, 'not_found');
    await rejectsWith(client.getSecretsFromVault(NO_SUCH_ID, 'lookup'), 404, 'not_found');
  });

  test('getSecretsFromVault without a reason -> 400 reason_required', async () => {
    const vault = await client.createSecretVault('ws-reason', { K: 'v' });
    await rejectsWith(client.getSecretsFromVault(vault.id, ''), 400, 'reason_required');
    await rejectsWith(client.getSecretsFromVault(vault.id, '  '), 400, 'reason_required');
    await rejectsWith(client.getSecretsFromVault(vault.id, undefined), 400, 'reason_required');
  });

  test('a reason that cannot travel in a header is refused before sending', async () => {
    const vault = await client.createSecretVault('ws-reason', { K: 'v' });
    await rejectsWith(client.getSecretsFromVault(vault.id, 'audit\nreason'), 0, 'invalid_argument');
    await rejectsWith(client.getSecretsFromVault(vault.id, 'prüfung'), 0, 'invalid_argument');
  });

  test('setVaultSecret adds, replaces; deleteVaultSecret removes', async () => {
    const vault = await client.createSecretVault('ws-keys', { FIRST: 'one' }, { name: 'keys' });

    const added = await client.setVaultSecret(vault.id, 'SECOND', 'two');
    assert.deepEqual(added.keys, ['FIRST', 'SECOND']);
    assert.equal(added.id, vault.id);
    assert.deepEqual(await client.getSecretsFromVault(vault.id, 'after add'), {
      FIRST: 'one',
      SECOND: 'two',
    });

    const replaced = await client.setVaultSecret('keys', 'FIRST', 'uno');
    assert.deepEqual(replaced.keys, ['FIRST', 'SECOND']);
    assert.deepEqual(await client.getSecretsFromVault('keys', 'after replace'), {
      FIRST: 'uno',
      SECOND: 'two',
    });

    assert.equal(await client.deleteVaultSecret(vault.id, 'FIRST'), undefined);
    assert.deepEqual((await client.getVault(vault.id)).keys, ['SECOND']);
    assert.deepEqual(await client.getSecretsFromVault(vault.id, 'after remove'), { SECOND: 'two' });

    await rejectsWith(client.deleteVaultSecret(vault.id, 'FIRST'), 404, 'not_found');
    await rejectsWith(client.setVaultSecret(vault.id, 'bad key', 'v'), 400, 'invalid_request');
    await rejectsWith(client.setVaultSecret(NO_SUCH_ID, 'K', 'v'), 404, 'not_found');
    await rejectsWith(client.deleteVaultSecret(NO_SUCH_ID, 'K'), 404, 'not_found');
    // `.` and `..` would be resolved away by URL parsing and hit another endpoint.
    await rejectsWith(client.deleteVaultSecret(vault.id, '..'), 0, 'invalid_argument');
    await rejectsWith(client.setVaultSecret(vault.id, '.', 'v'), 0, 'invalid_argument');
  });

  test('an empty vault value -> 400 empty_value naming the key; allowEmpty stores it', async () => {
    const secrets = { SET: 'value', UNSET: '' };
    await rejectsWith(
      client.createSecretVault('ws-empty', secrets, { name: 'half-empty' }),
      400,
      'empty_value',
    );
    const e = await client.createSecretVault('ws-empty', secrets, { name: 'half-empty' }).catch((err) => err);
    assert.match(e.message, /UNSET/, e.message);
    assert.match(e.message, /allowEmpty: true/, e.message);
    // Refused as a whole: no vault, no key.
    await rejectsWith(client.getVault('half-empty', { workspace: 'ws-empty' }), 404, 'not_found');
    assert.equal((await client.listSecrets({ scope_type: 'workspace', scope_id: 'ws-empty' })).items.length, 0);

    const vault = await client.createSecretVault('ws-empty', secrets, {
      name: 'half-empty',
      allowEmpty: true,
    });
    assert.deepEqual(vault.keys, ['SET', 'UNSET']);
    assert.deepEqual(await client.getSecretsFromVault(vault.id, 'empty on purpose'), secrets);

    await rejectsWith(client.setVaultSecret(vault.id, 'SET', ''), 400, 'empty_value');
    await rejectsWith(client.setVaultSecret(vault.id, 'NEW', ''), 400, 'empty_value');
    const put = await client.setVaultSecret(vault.id, 'SET', '', { allowEmpty: true });
    assert.deepEqual(put.keys, ['SET', 'UNSET']);
    assert.deepEqual(await client.getSecretsFromVault(vault.id, 'after put'), { SET: '', UNSET: '' });
  });

  test('vault keys are workspace secrets named <vault>/<KEY>', async () => {
    const vault = await client.createSecretVault('ws-members', { TOKEN: 't' }, { name: 'members' });
    const page = await client.listSecrets({ scope_type: 'workspace', scope_id: 'ws-members' });
    assert.deepEqual(
      page.items.map((m) => m.name),
      ['members/TOKEN'],
    );
    const [member] = page.items;
    assert.deepEqual(await client.getSecret(member.id, 'member read'), { value: 't', version: 1 });
    await client.setVaultSecret(vault.id, 'TOKEN', 't2');
    assert.equal((await client.getSecretMetadata(member.id)).version, 2);
  });

  test('deleteVault removes the vault and its keys', async () => {
    const vault = await client.createSecretVault('ws-del', { K: 'v' }, { name: 'doomed' });
    const [member] = (await client.listSecrets({ scope_type: 'workspace', scope_id: 'ws-del' })).items;
    assert.equal(await client.deleteVault('doomed'), undefined);
    await rejectsWith(client.getVault(vault.id), 404, 'not_found');
    await rejectsWith(client.getSecretsFromVault(vault.id, 'after delete'), 404, 'not_found');
    await rejectsWith(client.getSecretMetadata(member.id), 404, 'not_found');
    await rejectsWith(client.deleteVault(vault.id), 404, 'not_found');
    // The name is free again.
    await client.createSecretVault('ws-del', { K: 'v' }, { name: 'doomed' });
  });

  test('listVaults: metadata in id order, a workspace filter, paging, bad parameters', async () => {
    const made = [];
    for (const name of ['l0', 'l1', 'l2', 'l3', 'l4']) {
      made.push(await client.createSecretVault('ws-list', { K: 'v' }, { name }));
    }
    await client.createSecretVault('ws-list-other', { K: 'v' }, { name: 'l0' });
    const ids = made.map((v) => v.id).sort();

    const page = await client.listVaults({ workspace: 'ws-list' });
    assert.deepEqual(page.items.map((v) => v.id), ids);
    assert.equal(page.next_cursor, null);
    const [first] = page.items;
    assert.deepEqual(Object.keys(first).sort(), ['created_at', 'id', 'name', 'workspace']);
    assert.equal(first.workspace, 'ws-list');
    assert.ok(!Number.isNaN(Date.parse(first.created_at)), first.created_at);

    // Pages of two: the cursor goes on where the last page ended.
    const paged = [];
    let cursor;
    do {
      const p = await client.listVaults({ workspace: 'ws-list', limit: 2, cursor });
      assert.ok(p.items.length <= 2);
      paged.push(...p.items.map((v) => v.id));
      cursor = p.next_cursor ?? undefined;
    } while (cursor !== undefined);
    assert.deepEqual(paged, ids);

    // Without a filter (an administrator here): these and the other workspace's.
    const all = [];
    cursor = undefined;
    do {
      const p = await client.listVaults({ limit: 1000, cursor });
      all.push(...p.items);
      cursor = p.next_cursor ?? undefined;
    } while (cursor !== undefined);
    for (const id of ids) assert.ok(all.some((v) => v.id === id), id);
    assert.ok(all.some((v) => v.workspace === 'ws-list-other' && v.name === 'l0'));

    await rejectsWith(client.listVaults({ limit: 0 }), 400, 'invalid_request');
    await rejectsWith(client.listVaults({ cursor: 'nope' }), 400, 'invalid_request');
    await rejectsWith(client.listVaults({ workspace: 'two words' }), 400, 'invalid_request');
  });
});
