// npm's `prepare` step: builds dist/ (tsc -p tsconfig.json) before `npm pack`/`npm publish`, after
// `npm ci` here, and when another project installs this package from a git URL or a path.
//
// A git install runs it with the dev dependencies installed; a path install (`npm install
// ../sdk/typescript`) links this folder and runs it here with whatever node_modules/ the folder
// has. Without TypeScript the build cannot run: say what to do instead of npm's bare
// "tsc: not found", and never leave the install looking successful without dist/.

import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

let tsc;
try {
  tsc = createRequire(resolve(sdkDir, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.error(
    `@rcrt/secrets: cannot build dist/: TypeScript (a dev dependency) is not installed in ${sdkDir}.\n` +
      `Install the SDK's dev dependencies first, then install it again:\n` +
      `  (cd ${sdkDir} && npm ci)\n` +
      `or install a packed tarball instead of the folder:\n` +
      `  (cd ${sdkDir} && npm ci && npm pack)   # then: npm install <path to rcrt-secrets-<version>.tgz>`,
  );
  process.exit(1);
}

// From scratch: tsc never removes outputs, and a file left from an older build would be packed.
rmSync(resolve(sdkDir, 'dist'), { recursive: true, force: true });
const run = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], {
  cwd: sdkDir,
  stdio: 'inherit',
});
if (run.error) throw run.error;
process.exit(run.status ?? 1);
