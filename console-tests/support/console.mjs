// Browser-side helpers for the console tests: Debian's Chromium driven by playwright-core,
// sign-in, calls to the JSON API with a bearer token (to seed data and check what the console
// did), axe-core, screenshots.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const SUITE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** Where screenshots go: $CONSOLE_ARTIFACTS_DIR, else console-tests/artifacts. */
export const ARTIFACTS_DIR = process.env.CONSOLE_ARTIFACTS_DIR
  ? resolve(process.env.CONSOLE_ARTIFACTS_DIR)
  : join(SUITE_DIR, 'artifacts');

/** Debian's Chromium: $CHROMIUM_BIN, else /usr/bin/chromium. */
export function chromiumPath() {
  const bin = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
  if (!existsSync(bin)) {
    throw new Error(`Chromium not found at ${bin}: apt-get install chromium (or set CHROMIUM_BIN)`);
  }
  return bin;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    // Containers often have a small /dev/shm. (playwright runs Chromium without its sandbox by default.)
    args: ['--disable-dev-shm-usage'],
  });
}

/**
 * A new context and page. Every console message of type error and every CSP violation is
 * collected in page.problems (the console must run without either).
 */
export async function newPage(browser, opts = {}) {
  const context = await browser.newContext({
    viewport: { width: opts.width ?? 1280, height: opts.height ?? 900 },
    colorScheme: opts.colorScheme ?? 'light',
    reducedMotion: 'reduce',
    ...(opts.contextOptions ?? {}),
  });
  const page = await context.newPage();
  if (DEV_ASSETS_DIR) await serveAssetsFromDisk(page);
  page.problems = [];
  page.consoleLines = [];
  page.on('console', (msg) => {
    page.consoleLines.push(msg.text());
    // API answers of 4xx are logged by Chromium as "Failed to load resource": expected (a 401
    // before sign-in, refusals the tests provoke). Anything else logged as an error, CSP
    // violations ("Refused to ...") first, is a problem.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      page.problems.push(`console error: ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  // The console's own files must always load.
  page.on('response', (res) => {
    if (/\/ui(\/(app\.js|app\.css|favicon\.svg))?$/.test(res.url().split(/[?#]/)[0]) && res.status() !== 200) {
      page.problems.push(`asset ${res.url()} answered ${res.status()}`);
    }
  });
  return { context, page };
}

/**
 * For working on the assets without rebuilding the server: with CONSOLE_DEV_ASSETS_DIR set (to
 * crates/rcrt-server/console), the console's four files are answered from that directory, with
 * the server's own headers. Never set by scripts/test-console: the tests test the binary.
 */
const DEV_ASSETS_DIR = process.env.CONSOLE_DEV_ASSETS_DIR ? resolve(process.env.CONSOLE_DEV_ASSETS_DIR) : null;
if (DEV_ASSETS_DIR) console.error(`console tests: assets from ${DEV_ASSETS_DIR}, not from the server binary`);

async function serveAssetsFromDisk(page) {
  const files = { '/ui': 'index.html', '/ui/app.js': 'app.js', '/ui/app.css': 'app.css', '/ui/favicon.svg': 'favicon.svg' };
  await page.route((url) => url.pathname in files, async (route) => {
    const response = await route.fetch();
    const body = await readFile(join(DEV_ASSETS_DIR, files[new URL(route.request().url()).pathname]));
    await route.fulfill({ response, body });
  });
}

/** Waits until the console shows a screen: no loading indicator left in <main>. */
export async function settled(page) {
  await page.waitForSelector('#main h1');
  await page.waitForFunction(() => !document.querySelector('#main .loading'));
}

/** Opens /ui at `hash` and waits for the screen. */
export async function open(page, baseUrl, hash = '') {
  await page.goto(`${baseUrl}/ui${hash}`);
  await settled(page);
}

/** Signs in through the sign-in form with a token or JWT; waits for the secrets screen. */
export async function signIn(page, baseUrl, credential, hash = '#/secrets') {
  await page.goto(`${baseUrl}/ui${hash}`);
  await page.waitForSelector('#signin-form');
  await page.fill('#credential', credential);
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/ui/session') && r.request().method() === 'POST'),
    page.click('#signin-submit'),
  ]);
  await page.waitForSelector('#who:not([hidden])');
  await settled(page);
}

/** Navigates within the signed-in console (hash route) and waits for the screen. */
export async function goto(page, hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await page.waitForFunction((h) => location.hash === h, hash);
  await settled(page);
}

/** The JSON API with a bearer token. Returns {status, data, headers}. */
export async function api(baseUrl, token, method, path, body, headers = {}) {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  return { status: res.status, data, headers: res.headers };
}

/** Like api() but fails unless the status is `expect`. */
export async function apiOk(baseUrl, token, method, path, body, expect) {
  const r = await api(baseUrl, token, method, path, body);
  const want = expect ?? (method === 'POST' ? 201 : 200);
  assert.equal(r.status, want, `${method} ${path}: ${r.status} ${JSON.stringify(r.data)}`);
  return r.data;
}

let axeSource = null;

/**
 * Runs axe-core on the page and fails on any violation of impact serious or critical. The
 * source is evaluated through the DevTools protocol (page.evaluate), which the page's CSP does
 * not govern: no <script> tag is injected and no policy is bypassed for the page itself.
 */
export async function checkAxe(page, label) {
  if (!axeSource) axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  const loaded = await page.evaluate(() => typeof window.axe === 'object');
  if (!loaded) await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, {
      resultTypes: ['violations'],
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${label}: axe found serious or critical violations:\n${JSON.stringify(bad, null, 2)}`);
  return result;
}

/** A full-page screenshot into the artifacts directory; returns its path. */
export async function screenshot(page, name) {
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** The page itself never scrolls sideways (wide tables scroll inside their own container). */
export async function assertNoHorizontalScroll(page, label) {
  const { scrollWidth, clientWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
  }));
  assert.ok(scrollWidth <= clientWidth, `${label}: the page scrolls sideways (${scrollWidth} > ${clientWidth})`);
}

/** Clicks the confirm button of the console's <dialog>. */
export async function confirmDialog(page) {
  await page.waitForSelector('#confirm[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
}
