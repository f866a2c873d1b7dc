// The web app with a large image: time from choosing a 1 TiB sparse qcow2 in
// the file input to the image's facts, and to the complete allocation map,
// in Debian's Chromium on the production build (into a temp folder, as the
// e2e harness does). Baselines in the same run: `qemu-img info` and
// `qemu-img map --output=json` of the same file. These figures were once
// asserted in test/e2e/app.test.ts; tests now check only what is shown.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { build, preview } from 'vite';
import { chromium } from 'playwright';
import { bench, best, root, runQemu, scratchDir } from './lib.mjs';

const dir = scratchDir();
const big = path.join(dir, 'huge.qcow2');
execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', big, '1T']);
execFileSync('qemu-io', ['-f', 'qcow2', ...['write -P 1 0 64k', 'write -P 2 500G 1M', 'write -z 900G 1G', 'write -P 3 1023G 64k'].flatMap((c) => ['-c', c]), big], {
  stdio: 'ignore',
});
execFileSync(process.execPath, [path.join(root, 'scripts/make-demo-image.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });

const outDir = path.join(dir, 'dist-app');
await build({ root, logLevel: 'error', build: { outDir, emptyOutDir: true } });
const port = await new Promise((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
const server = await preview({ root, logLevel: 'error', build: { outDir }, preview: { host: '127.0.0.1', port, strictPort: true } });
const url = `http://127.0.0.1:${port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});

/** One round: a fresh page, then the file chosen; ms to the facts and to the whole map. */
async function round() {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  try {
    const page = await context.newPage();
    await page.goto(url);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor({ timeout: 60_000 });
    await page.locator('#map-canvas[data-state="complete"]').waitFor({ timeout: 60_000 });
    const t0 = performance.now();
    await page.setInputFiles('#file-input', [big]);
    await page.locator('#image-title', { hasText: 'huge.qcow2' }).waitFor({ timeout: 60_000 });
    const facts = performance.now() - t0;
    await page.locator('#map-canvas[data-state="complete"]').waitFor({ timeout: 60_000 });
    return { facts, map: performance.now() - t0 };
  } finally {
    await context.close();
  }
}

let failed = false;
try {
  const rounds = [];
  for (let i = 0; i < 3; i++) rounds.push(await round());
  const facts = Math.min(...rounds.map((r) => r.facts));
  const map = Math.min(...rounds.map((r) => r.map));
  const qInfo = best(3, () => runQemu(dir, ['info', big]));
  const qMap = best(3, () => runQemu(dir, ['map', '--output=json', big]));
  const line = (name, value, baseline, aim) =>
    bench({ name, value: Math.round(value), unit: 'ms', baseline: Math.round(baseline), ratio: +(value / baseline).toFixed(2), aim });
  line('app: 1 TiB sparse qcow2 chosen -> facts shown (vs qemu-img info)', facts, qInfo, '<200 ms');
  line('app: 1 TiB sparse qcow2 chosen -> whole map shown (vs qemu-img map)', map, qMap, '<1000 ms');
} catch (e) {
  console.error(`app.bench: ${e instanceof Error ? e.message : e}`);
  failed = true;
} finally {
  await browser.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
