// The package as a user gets it: `npm pack` (which runs `prepare`, the build), then a fresh
// project installs the tarball offline and uses it from an ESM script, a CommonJS script (dynamic
// import()) and a TypeScript project with module/moduleResolution `nodenext`, type-checked by
// this package's own tsc. The scripts talk to a real rcrt-server.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';

import { startServer } from '../test-support/rcrt-server.mjs';

const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TSC = join(SDK_DIR, 'node_modules', '.bin', 'tsc');
const run = promisify(execFile);
// npm and tsc run here: a hung one must fail the run, not stall CI until its own limit.
const TIMEOUT = { timeout: 120_000 };

let work;
let app;
let tarball;
let packed;
let server;

/**
 * The environment for the child npm and node processes: without the npm_* variables the outer
 * `npm test` sets (its prefix, its lifecycle event...), which would make the inner npm act on
 * this package instead of the fresh project.
 */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.toLowerCase().startsWith('npm_')) env[k] = v;
  }
  return { ...env, ...extra };
}

async function sh(file, args, options) {
  try {
    return await run(file, args, { env: cleanEnv(), maxBuffer: 16 << 20, ...options });
  } catch (e) {
    throw new Error(`${file} ${args.join(' ')} failed:\n${e.stdout ?? ''}\n${e.stderr ?? ''}`, {
      cause: e,
    });
  }
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'rcrt-sdk-pack-'));
  // Packed from a copy of the sources without dist/, as a fresh clone has them: `prepare` must
  // build it. (Packing here would also rewrite dist/ while other test files import it.)
  const source = join(work, 'source');
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md', 'src', 'scripts']) {
    await cp(join(SDK_DIR, entry), join(source, entry), { recursive: true });
  }
  await symlink(join(SDK_DIR, 'node_modules'), join(source, 'node_modules'), 'dir');
  const [packOut] = await Promise.all([
    sh('npm', ['pack', '--json', '--pack-destination', work], { cwd: source }),
    (async () => {
      server = await startServer();
    })(),
  ]);
  [packed] = JSON.parse(packOut.stdout);
  tarball = join(work, packed.filename);

  app = join(work, 'app');
  await mkdir(app);
  // No "type": plain .js would be CommonJS, the default of a project that never chose.
  await writeFile(
    join(app, 'package.json'),
    JSON.stringify({ name: 'fresh-consumer', version: '0.0.0', private: true }),
  );
  // --offline with an empty cache: the install must need nothing but the tarball.
  await sh(
    'npm',
    ['install', '--no-audit', '--no-fund', '--offline', '--cache', join(work, 'npm-cache'), tarball],
    { cwd: app },
  );
}, TIMEOUT);

after(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, TIMEOUT);

describe('npm pack', () => {
  test('the tarball holds the built ESM, its declarations, and no sources or tests', TIMEOUT, () => {
    const files = packed.files.map((f) => f.path).sort();
    assert.ok(files.includes('dist/index.js'), files.join(', '));
    assert.ok(files.includes('dist/index.d.ts'), files.join(', '));
    assert.ok(files.includes('package.json'));
    for (const f of files) {
      assert.ok(
        f === 'package.json' || f === 'README.md' || f.startsWith('dist/'),
        `unexpected file in the tarball: ${f}`,
      );
    }
  });

  test('the installed manifest: ESM only, types and import conditions, no runtime dependencies', TIMEOUT, async () => {
    const manifest = JSON.parse(
      await readFile(join(app, 'node_modules', '@rcrt', 'secrets', 'package.json'), 'utf8'),
    );
    assert.equal(manifest.type, 'module');
    assert.equal(manifest.main, './dist/index.js');
    assert.equal(manifest.types, './dist/index.d.ts');
    const root = manifest.exports['.'];
    assert.deepEqual(Object.keys(root).slice(0, 2), ['types', 'import'], 'types must come first');
    assert.equal(root.types, './dist/index.d.ts');
    assert.equal(root.import, './dist/index.js');
    for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
      assert.deepEqual(manifest[field] ?? {}, {}, `${field} must be empty: the SDK uses fetch only`);
    }
    const lock = JSON.parse(await readFile(join(app, 'package-lock.json'), 'utf8'));
    assert.deepEqual(Object.keys(lock.packages).sort(), ['', 'node_modules/@rcrt/secrets']);
  });
});

describe('a fresh project using the installed tarball', () => {
  test('an ESM script imports it and runs the guide example against a real server', TIMEOUT, async () => {
    await writeFile(
      join(app, 'guide.mjs'),
      `import { createClient, RcrtError } from '@rcrt/secrets';

const client = createClient({ baseUrl: process.env.RCRT_URL });
const vault = await client.createSecretVault('pack-esm', { API_KEY: 'secret-value' });
const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');
const missing = await client.getVault('no-such-vault').catch((e) => e);
console.log(JSON.stringify({ secrets, missing: missing instanceof RcrtError && missing.code }));
`,
    );
    const { stdout } = await sh('node', ['guide.mjs'], {
      cwd: app,
      env: cleanEnv({ RCRT_URL: server.baseUrl }),
    });
    assert.deepEqual(JSON.parse(stdout), {
      secrets: { API_KEY: 'secret-value' },
      missing: 'not_found',
    });
  });

  test('a CommonJS script loads it with dynamic import()', TIMEOUT, async () => {
    await writeFile(
      join(app, 'guide.cjs'),
      `'use strict';
// The README's CommonJS recipe.
async function main() {
  const { createClient } = await import('@rcrt/secrets');
  const client = createClient({ baseUrl: process.env.RCRT_URL });
  const vault = await client.createSecretVault('pack-cjs', { API_KEY: 'from-cjs' });
  const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');
  console.log(JSON.stringify({ kind: typeof module, secrets }));
}
main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
`,
    );
    const { stdout } = await sh('node', ['guide.cjs'], {
      cwd: app,
      env: cleanEnv({ RCRT_URL: server.baseUrl }),
    });
    assert.deepEqual(JSON.parse(stdout), { kind: 'object', secrets: { API_KEY: 'from-cjs' } });
  });

  test('a TypeScript nodenext project type-checks against the shipped declarations', TIMEOUT, async () => {
    const ts = join(work, 'ts-app');
    await mkdir(ts);
    await writeFile(
      join(ts, 'package.json'),
      JSON.stringify({ name: 'ts-consumer', version: '0.0.0', private: true, type: 'module' }),
    );
    // The installed package, exactly as npm laid it out in the fresh project.
    await sh('npm', ['install', '--no-audit', '--no-fund', '--offline', '--cache', join(work, 'npm-cache'), tarball], {
      cwd: ts,
    });
    await writeFile(
      join(ts, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noUncheckedIndexedAccess: true,
          exactOptionalPropertyTypes: true,
          skipLibCheck: false,
          noEmit: true,
        },
        include: ['src'],
      }),
    );
    await mkdir(join(ts, 'src'));
    // ESM (the package is "type": "module"): a static import with the types in use. Each
    // @ts-expect-error fails the check if the types were missing (everything `any`).
    await writeFile(
      join(ts, 'src', 'guide.ts'),
      `import { createClient, RcrtError, type Vault, type ValueOptions } from '@rcrt/secrets';

const client = createClient({ baseUrl: 'http://127.0.0.1:8081' });

export async function guide(workspace: string): Promise<string | undefined> {
  const vault: Vault = await client.createSecretVault(workspace, { API_KEY: 'secret-value' });
  const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');
  const empty: ValueOptions = { allowEmpty: true };
  await client.setVaultSecret(vault.id, 'OPTIONAL', '', empty);
  try {
    await client.updateSecret(vault.id, '', { ifMatch: 1 });
  } catch (e) {
    if (e instanceof RcrtError && e.code === 'empty_value') return undefined;
    throw e;
  }
  // @ts-expect-error the reason is required
  await client.getSecretsFromVault(vault.id);
  // @ts-expect-error values are strings
  await client.createSecretVault(workspace, { PORT: 8080 });
  return secrets.API_KEY;
}
`,
    );
    // CommonJS (.cts): the README's dynamic import(), typed as well.
    await writeFile(
      join(ts, 'src', 'legacy.cts'),
      `export async function legacy(baseUrl: string): Promise<string[]> {
  const { createClient } = await import('@rcrt/secrets');
  const vault = await createClient({ baseUrl }).getVault('payments');
  // @ts-expect-error keys are strings
  const n: number = vault.keys[0];
  void n;
  return vault.keys;
}
`,
    );
    // One deliberate error, so the run shows the check is not vacuous: it must be the only one.
    await writeFile(
      join(ts, 'src', 'wrong.ts'),
      `import { createClient } from '@rcrt/secrets';
export const v: number = await createClient({ baseUrl: 'http://x' }).getVault('v');
`,
    );
    const result = await run(TSC, ['-p', join(ts, 'tsconfig.json'), '--pretty', 'false'], {
      cwd: ts,
      env: cleanEnv(),
    }).then(
      () => ({ code: 0, stdout: '' }),
      (e) => ({ code: e.code, stdout: String(e.stdout) }),
    );
    const errors = result.stdout.split('\n').filter((line) => /error TS\d+/.test(line));
    assert.notEqual(result.code, 0, result.stdout);
    assert.equal(errors.length, 1, result.stdout);
    assert.match(errors[0], /^src\/wrong\.ts\(2,14\): error TS2322: Type 'Vault' is not assignable to type 'number'/);
  });
});
