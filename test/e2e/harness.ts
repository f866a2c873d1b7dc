/**
 * What every app end-to-end file shares: the production build of the app
 * (vite.config.ts, as `npm run build:app` makes it, but into a temp folder so
 * neither dist/ (the CLI) nor dist-app/ is touched) served as `vite preview`
 * serves it, Debian's Chromium through Playwright, the demo images made by
 * scripts/make-demo-image.mjs (with blocktab's own engine from dist/, built
 * first when missing, as `npm start` does), and small page helpers.
 * Screenshots go to test-results/e2e/.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright';
import { build, preview, type PreviewServer } from 'vite';
import { qemuImg, qemuIo, repoRoot, tmpDir } from '../helpers/qemu.js';

export const SHOTS = path.join(repoRoot, 'test-results/e2e');
export const DEMO = path.join(repoRoot, 'public/demo/demo.qcow2');
export const DEMO_OVERLAY = path.join(repoRoot, 'public/demo/demo-overlay.qcow2');

export interface App {
  baseUrl: string;
  /** A temp directory for this file's images and downloads. */
  dir: string;
  browser: Browser;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Makes the demo images, builds the app, serves it and starts Chromium. */
export async function startApp(): Promise<App> {
  fs.mkdirSync(SHOTS, { recursive: true });
  // The demo maker runs the compiled engine (dist/) and the app imports the wasm kernels (build/).
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  if (!fs.existsSync(path.join(repoRoot, 'build/blocktab.wasm'))) execFileSync(npm, ['run', 'build:asm'], { cwd: repoRoot, stdio: 'ignore' });
  if (!fs.existsSync(path.join(repoRoot, 'dist/engine/engine.js'))) execFileSync(npm, ['run', 'build:ts'], { cwd: repoRoot, stdio: 'ignore' });
  execFileSync(process.execPath, [path.join(repoRoot, 'scripts/make-demo-image.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const dir = tmpDir('blocktab-e2e-');
  const port = await freePort();
  // The production build: what users get (worker bundle, wasm asset, public/ demo). One build per
  // vitest run, shared by the e2e files (they run one after another), in the run's scratch folder.
  const outDir = path.join(process.env.BLOCKTAB_TEST_TMP ?? dir, 'dist-app');
  const built = path.join(outDir, '.built');
  if (!fs.existsSync(built)) {
    await build({ root: repoRoot, logLevel: 'error', build: { outDir, emptyOutDir: true } });
    fs.writeFileSync(built, '');
  }
  const vite: PreviewServer = await preview({ root: repoRoot, logLevel: 'error', build: { outDir }, preview: { host: '127.0.0.1', port, strictPort: true } });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  return {
    baseUrl: `http://127.0.0.1:${port}/`,
    dir,
    browser,
    async close() {
      await browser.close();
      await vite.close();
    },
  };
}

export async function newPage(browser: Browser): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, errors };
}

export async function shot(page: Page, name: string, fullPage = true): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
}

/** Opens `files` through the file input (as the "Open files…" button does) and waits for the first fact. */
export async function openFiles(page: Page, files: string[], title: string): Promise<void> {
  await page.setInputFiles('#file-input', files);
  await page.locator('#image-title', { hasText: title }).waitFor();
}

/** A 1 TiB qcow2 with a little data, a zeroed GiB and data near the end (the app's large-image case). */
export function makeHugeSparseQcow2(file: string): void {
  qemuImg(['create', '-q', '-f', 'qcow2', file, '1T']);
  qemuIo(file, ['write -P 1 0 64k', 'write -P 2 500G 1M', 'write -z 900G 1G', 'write -P 3 1023G 64k'], 'qcow2');
}

export async function fact(page: Page, label: string): Promise<string> {
  return (await page.locator(`[data-fact="${label}"] dd`).innerText()).trim();
}

export async function waitForMap(page: Page): Promise<void> {
  await page.locator('#map-canvas[data-state="complete"]').waitFor({ timeout: 30_000 });
}

export async function legendBytes(page: Page): Promise<Record<string, number>> {
  return page.$$eval('#legend li[data-kind]', (lis) =>
    Object.fromEntries(lis.map((li) => [li.childNodes[1]!.textContent!.trim(), Number((li as HTMLElement).dataset.bytes)])),
  );
}

export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Bytes per map kind as the app's legend counts them, computed from qemu-img map. */
export function kindTotals(file: string): Record<string, number> {
  const map = JSON.parse(qemuImg(['map', '--output=json', file])) as QemuMapEntry[];
  const t: Record<string, number> = { data: 0, 'compressed data': 0, zero: 0, unallocated: 0 };
  for (const e of map) {
    const kind = !e.present ? 'unallocated' : e.depth > 0 ? `from backing layer ${e.depth}` : !e.data ? 'zero' : e.offset === undefined ? 'compressed data' : 'data';
    t[kind] = (t[kind] ?? 0) + e.length;
  }
  return t;
}

/** The hex view's bytes as one hex string (the dump's middle columns). */
export function hexBytes(text: string): string {
  return [...text.matchAll(/^[0-9a-f]{8}:?\s+((?:[0-9a-f]{2}\s+){15}[0-9a-f]{2})/gm)].map((m) => m[1]!.split(/\s+/).join('')).join('');
}
