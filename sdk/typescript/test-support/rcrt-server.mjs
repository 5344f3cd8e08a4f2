// Starts a real rcrt-server for the SDK tests: a fresh KEK, a free loopback port and a temporary
// working directory (so its rcrt.db is new and no .env is read). Kept outside test/ because
// node's test runner treats every .mjs file under a test/ directory as a test file.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The server binary: $RCRT_SERVER_BIN, else ../../target/debug/rcrt-server from the SDK dir. */
export function serverBinary() {
  const bin = process.env.RCRT_SERVER_BIN
    ? resolve(process.env.RCRT_SERVER_BIN)
    : resolve(SDK_DIR, '../../target/debug/rcrt-server');
  if (!existsSync(bin)) {
    throw new Error(
      `rcrt-server binary not found at ${bin}: build it with cargo build --bin rcrt-server ` +
        '(from the repository root), or set RCRT_SERVER_BIN to its path',
    );
  }
  return bin;
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts rcrt-server and waits until GET /health answers.
 *
 * @param {{ env?: Record<string,string> | ((dir: string) => Promise<Record<string,string>>), dir?: string, bootstrapAdminToken?: string }} [options]
 *   extra environment (e.g. AUTH_MODE=jwt ...; or an async function of the working directory
 *   returning it, to name files written there), an existing working directory to use (kept on
 *   stop, so a store survives a restart), and a service token (see serviceToken()) to write to
 *   `<dir>/bootstrap-admin.token` (mode 0600) and pass as BOOTSTRAP_ADMIN_TOKEN_FILE; AUTH_MODE
 *   then defaults to `token`.
 * @returns {Promise<{ baseUrl: string, port: number, dir: string, logs: () => string, stop: () => Promise<void> }>}
 */
export async function startServer(options = {}) {
  const bin = serverBinary();
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'rcrt-sdk-test-')));
  let env = (typeof options.env === 'function' ? await options.env(dir) : options.env) ?? {};
  if (options.bootstrapAdminToken !== undefined) {
    const file = join(dir, 'bootstrap-admin.token');
    await writeFile(file, `${options.bootstrapAdminToken}\n`, { mode: 0o600 });
    env = { AUTH_MODE: 'token', BOOTSTRAP_ADMIN_TOKEN_FILE: file, ...env };
  }
  let lastError;
  // A port found free can be taken before the server binds it: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      const server = await launch(bin, dir, port, env);
      return {
        ...server,
        port,
        dir,
        async stop() {
          await server.stop();
          if (!options.dir) await rm(dir, { recursive: true, force: true });
        },
      };
    } catch (e) {
      lastError = e;
    }
  }
  if (!options.dir) await rm(dir, { recursive: true, force: true });
  throw lastError;
}

async function launch(bin, dir, port, extraEnv) {
  // A minimal environment: nothing from the caller's AUTH_MODE, DB_URL, KEK... leaks in.
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    LOCAL_KEK_BASE64: randomBytes(32).toString('base64'),
    BIND_ADDR: `127.0.0.1:${port}`,
    RUST_LOG: 'warn',
    ...extraEnv,
  };
  const child = spawn(bin, [], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((r) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      r(exited);
    });
    child.on('error', (error) => {
      exited = { error };
      r(exited);
    });
  });

  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      throw new Error(
        `rcrt-server exited before it was healthy (${JSON.stringify(exited)}):\n${output}`,
      );
    }
    try {
      const res = await fetch(`${baseUrl}/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`rcrt-server did not answer GET /health within 30 s:\n${output}`);
    }
    await sleep(50);
  }

  return {
    baseUrl,
    logs: () => output,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
  };
}

/** A new service token in the server's format: `rcrt_<32 lowercase hex>_<64 lowercase hex>`. */
export function serviceToken() {
  return `rcrt_${randomBytes(16).toString('hex')}_${randomBytes(32).toString('hex')}`;
}

/**
 * An HS256 secret for JWT_HS256_SECRET_FILE: 48 random bytes.
 *
 * The server trims ASCII whitespace from both ends of the file's bytes before using them as the
 * key, so a secret starting or ending with such a byte would verify against a different key
 * than the one tokens are signed with. We draw again in that case instead of signing with a
 * trimmed key, so the tests use exactly the bytes in the file.
 */
export function hs256Secret() {
  const ws = new Set([0x09, 0x0a, 0x0c, 0x0d, 0x20]); // Rust u8::is_ascii_whitespace
  for (;;) {
    const secret = randomBytes(48);
    if (!ws.has(secret[0]) && !ws.has(secret[secret.length - 1])) return secret;
  }
}

/** Writes `secret` to a file in `dir` (mode 0600) and returns its path. */
export async function writeSecretFile(dir, secret) {
  const path = join(dir, 'jwt-hs256.key');
  await writeFile(path, secret, { mode: 0o600 });
  return path;
}

/** Mints an HS256 JWT: HMAC-SHA256 over base64url(header).base64url(payload). */
export function mintHs256(secret, claims) {
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signingInput = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}
