/**
 * The web app end to end: Debian's Chromium (Playwright) drives the app that
 * vite serves from this repo, and every answer the page shows is checked
 * against qemu-img on the Node side. Each step saves a screenshot under
 * test-results/e2e/ to look at the layout.
 *
 * The demo image is made by scripts/make-demo-image.mjs (as `npm start` does);
 * every other image is made here with qemu-img in a temp directory.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright';
import { build, preview, type PreviewServer } from 'vite';
import { qemuImg, qemuIo, repoRoot, tmpDir } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../browser/range-server.js';

const SHOTS = path.join(repoRoot, 'test-results/e2e');
const DEMO = path.join(repoRoot, 'public/demo/demo.qcow2');

let vite: PreviewServer;
let browser: Browser;
let baseUrl: string;
let dir: string;
let ranges: RangeServer;

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

interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Bytes per map kind as the app's legend counts them, computed from qemu-img map. */
function kindTotals(file: string): Record<string, number> {
  const map = JSON.parse(qemuImg(['map', '--output=json', file])) as QemuMapEntry[];
  const t: Record<string, number> = { data: 0, 'compressed data': 0, zero: 0, unallocated: 0 };
  for (const e of map) {
    const kind = !e.present ? 'unallocated' : e.depth > 0 ? `from backing layer ${e.depth}` : !e.data ? 'zero' : e.offset === undefined ? 'compressed data' : 'data';
    t[kind] = (t[kind] ?? 0) + e.length;
  }
  return t;
}

async function newPage(): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, errors };
}

async function shot(page: Page, name: string, fullPage = true): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
}

async function fact(page: Page, label: string): Promise<string> {
  return (await page.locator(`[data-fact="${label}"] dd`).innerText()).trim();
}

async function waitForMap(page: Page): Promise<void> {
  await page.locator('#map-canvas[data-state="complete"]').waitFor({ timeout: 30_000 });
}

async function legendBytes(page: Page): Promise<Record<string, number>> {
  return page.$$eval('#legend li[data-kind]', (lis) =>
    Object.fromEntries(lis.map((li) => [li.childNodes[1]!.textContent!.trim(), Number((li as HTMLElement).dataset.bytes)])),
  );
}

/** Opens `files` through the file input (as the "Open files…" button does) and waits for the first fact. */
async function openFiles(page: Page, files: string[], title: string): Promise<void> {
  await page.setInputFiles('#file-input', files);
  await page.locator('#image-title', { hasText: title }).waitFor();
}

beforeAll(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  execFileSync(process.execPath, [path.join(repoRoot, 'scripts/make-demo-image.mjs')], { stdio: 'ignore' });
  dir = tmpDir('blocktab-e2e-');
  const port = await freePort();
  // The production build, served as `vite preview` does: what users get (worker bundle, wasm asset, public/ demo).
  const outDir = path.join(dir, 'dist-app');
  await build({ root: repoRoot, logLevel: 'error', build: { outDir, emptyOutDir: true } });
  vite = await preview({ root: repoRoot, logLevel: 'error', build: { outDir }, preview: { host: '127.0.0.1', port, strictPort: true } });
  baseUrl = `http://127.0.0.1:${port}/`;
  ranges = await startRangeServer(dir);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

afterAll(async () => {
  await browser?.close();
  await ranges?.close();
  await vite?.close();
});

describe('the blocktab web app', () => {
  it('shows the demo image on the first visit: the facts and map qemu-img gives, and a sector in the hex view', async () => {
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    // The built worker found its wasm kernels (vite inlines or emits build/blocktab.wasm).
    const ready = await page.evaluate(() => (window as unknown as { blocktab: { client: { ready(): Promise<{ wasm: boolean }> } } }).blocktab.client.ready());
    expect(ready.wasm).toBe(true);
    const info = JSON.parse(qemuImg(['info', '--output=json', DEMO])) as Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } };
    expect(await fact(page, 'Format')).toBe(info.format);
    expect(await fact(page, 'Virtual size')).toContain(`(${info['virtual-size']} bytes)`);
    expect(await fact(page, 'Cluster size')).toContain(`(${info['cluster-size']} bytes)`);
    expect(await fact(page, 'Compat')).toBe(info['format-specific'].data.compat);
    expect(await fact(page, 'Corrupt')).toBe('no');
    await waitForMap(page);
    const shown = await legendBytes(page);
    const expected = kindTotals(DEMO);
    for (const [kind, bytes] of Object.entries(expected)) expect(shown[kind], kind).toBe(bytes);
    await shot(page, '01-demo-first-visit', false);

    // A click on the first cell shows sector 0: the same 512 bytes qemu-io reads.
    await page.locator('#map-canvas').click({ position: { x: 3, y: 3 } });
    await page.locator('#hex-caption', { hasText: 'Sector 0' }).waitFor();
    const hexBytes = (text: string) => [...text.matchAll(/^[0-9a-f]{8}:?\s+((?:[0-9a-f]{2}\s+){15}[0-9a-f]{2})/gm)].map((m) => m[1]!.split(/\s+/).join('')).join('');
    const fromQemu = hexBytes(qemuIo(DEMO, ['read -v 0 512'], 'qcow2'));
    expect(fromQemu).toHaveLength(1024);
    expect(hexBytes(await page.locator('#hex').innerText())).toBe(fromQemu);
    expect(await page.locator('#hex').innerText()).toContain('blocktab demo im');
    // Keyboard: focus the map, move right and press Enter, Next goes one sector on.
    await page.locator('#map-canvas').focus();
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('Enter');
    await page.locator('#hex-caption', { hasText: 'Sector 128 ' }).waitFor();
    await page.locator('#hex-next').click();
    await page.locator('#hex-caption', { hasText: 'Sector 129 ' }).waitFor();
    await shot(page, '02-demo-hex-view');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('converts the demo to raw; the download is byte for byte what qemu-img convert -O raw makes', async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${baseUrl}?demo`);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await page.selectOption('#convert-dest', 'download');
    await page.selectOption('#convert-sparse', '4096');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#convert-start')]);
    const saved = path.join(dir, 'from-app.raw');
    await download.saveAs(saved);
    expect(download.suggestedFilename()).toBe('demo.raw');
    const reference = path.join(dir, 'from-qemu.raw');
    qemuImg(['convert', '-O', 'raw', DEMO, reference]);
    expect(fs.statSync(saved).size).toBe(fs.statSync(reference).size);
    expect(Buffer.compare(fs.readFileSync(saved), fs.readFileSync(reference))).toBe(0);
    await page.locator('#convert-result', { hasText: 'Converted demo.qcow2 to raw' }).waitFor();
    await shot(page, '03-convert-done');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('keeps an overlay and its backing file in the library, exports them unchanged and deletes them', async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${baseUrl}?demo`);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await page.click('#open-demo-overlay');
    await page.locator('#image-title', { hasText: 'demo-overlay.qcow2' }).waitFor();
    await expect.poll(() => page.locator('#chain li').count()).toBe(2);
    await waitForMap(page);
    const overlayFile = path.join(repoRoot, 'public/demo/demo-overlay.qcow2');
    const shown = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(overlayFile))) expect(shown[kind], kind).toBe(bytes);

    await page.click('#import-current');
    const item = page.locator('#library-list li[data-name="demo-overlay.qcow2"]');
    await item.waitFor();
    await expect.poll(() => item.locator('.lib-meta').innerText()).toContain('backing: demo.qcow2');
    await page.locator('#library-list li[data-name="demo.qcow2"]').waitFor();
    await shot(page, '04-library');

    const [download] = await Promise.all([page.waitForEvent('download'), item.getByRole('button', { name: /^Download/ }).click()]);
    const exported = path.join(dir, 'exported.qcow2');
    await download.saveAs(exported);
    expect(Buffer.compare(fs.readFileSync(exported), fs.readFileSync(overlayFile))).toBe(0);

    // Opening from the library resolves the backing file inside the library.
    await item.getByRole('button', { name: /^Open/ }).click();
    await expect.poll(() => page.locator('#chain').innerText()).toContain('demo.qcow2');
    for (const name of ['demo-overlay.qcow2', 'demo.qcow2']) {
      const del = page.locator(`#library-list li[data-name="${name}"]`).getByRole('button', { name: /^Delete/ });
      await del.click();
      await del.click();
      await page.locator(`#library-list li[data-name="${name}"]`).waitFor({ state: 'detached' });
    }
    // The deleted image was open: the app closed it first and shows the empty state, without an error.
    await page.locator('#empty-state').waitFor();
    expect(await page.getByRole('alert').count()).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('opens dropped qemu-img images: snapshots and facts as qemu-img info, an overlay with its backing file', async () => {
    const base = path.join(dir, 'snapbase.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=131072', base, '1G']);
    qemuIo(base, ['write -P 0xab 0 1M', 'write -z 8M 1M'], 'qcow2');
    qemuImg(['snapshot', '-c', 'before-upgrade', base]);
    qemuIo(base, ['write -P 0xcd 512k 256k'], 'qcow2');
    qemuImg(['snapshot', '-c', 'after-upgrade', base]);
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await openFiles(page, [base], 'snapbase.qcow2');
    const info = JSON.parse(qemuImg(['info', '--output=json', base])) as { format: string; 'virtual-size': number; 'cluster-size': number; snapshots: { name: string; id: string }[] };
    expect(await fact(page, 'Format')).toBe(info.format);
    expect(await fact(page, 'Virtual size')).toBe(`1 GiB (${info['virtual-size']} bytes)`);
    expect(await fact(page, 'Cluster size')).toBe(`128 KiB (${info['cluster-size']} bytes)`);
    expect(await fact(page, 'Snapshots')).toBe(String(info.snapshots.length));
    const rows = await page.$$eval('#snapshots tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(0, 2).map((td) => td.textContent)));
    expect(rows).toEqual(info.snapshots.map((s) => [s.id, s.name]));
    await waitForMap(page);
    const shown = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(base))) expect(shown[kind], kind).toBe(bytes);
    await shot(page, '05-dropped-snapshots');

    // An overlay dropped together with its backing file: the overlay is opened, on top of the chain.
    const top = path.join(dir, 'top.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'snapbase.qcow2', '-F', 'qcow2', top]);
    qemuIo(top, ['write -P 0x11 2M 1M'], 'qcow2');
    await openFiles(page, [base, top], 'top.qcow2');
    await expect.poll(() => page.locator('#chain li').count()).toBe(2);
    await waitForMap(page);
    const shownTop = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(top))) expect(shownTop[kind], kind).toBe(bytes);
    await shot(page, '06-dropped-overlay');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('opens an image by URL with HTTP Range requests', async () => {
    const img = path.join(dir, 'remote.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '4G']);
    qemuIo(img, ['write -P 0x42 1G 2M', 'write -c -P 0x43 3G 64k'], 'qcow2');
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await page.fill('#url-input', `${ranges.baseUrl}remote.qcow2`);
    await page.click('#url-form button[type="submit"]');
    await page.locator('#image-title', { hasText: 'remote.qcow2' }).waitFor();
    expect(await fact(page, 'Virtual size')).toBe('4 GiB (4294967296 bytes)');
    await waitForMap(page);
    const shown = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(img))) expect(shown[kind], kind).toBe(bytes);
    expect(ranges.log.some((l) => /^GET \/remote\.qcow2 bytes=/.test(l))).toBe(true);
    await shot(page, '07-url');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('says in words which image is corrupt and what is wrong, and keeps the page usable', async () => {
    const bad = path.join(dir, 'broken.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', bad, '64M']);
    // l1_table_offset (header offset 40) pointing inside a cluster: qemu-img refuses this image too.
    const fd = fs.openSync(bad, 'r+');
    const field = Buffer.alloc(8);
    field.writeBigUInt64BE(0x30201n);
    fs.writeSync(fd, field, 0, 8, 40);
    fs.closeSync(fd);
    expect(() => qemuImg(['info', bad])).toThrow();
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await page.setInputFiles('#file-input', [bad]);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    const text = await alert.innerText();
    expect(text).toContain('Could not open broken.qcow2');
    expect(text).toMatch(/L1/i);
    // The demo stays on screen.
    expect(await page.locator('#image-title').innerText()).toBe('demo.qcow2');
    await shot(page, '08-corrupt-error', false);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('cancels a running conversion in the worker', async () => {
    const img = path.join(dir, 'full.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '512M']);
    qemuIo(img, ['write -P 0x5a 0 512M'], 'qcow2');
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await openFiles(page, [img], 'full.qcow2');
    await page.selectOption('#convert-dest', 'download');
    await page.click('#convert-start');
    await page.locator('#convert-progress-text', { hasText: '%' }).waitFor();
    await shot(page, '09-convert-running', false);
    await page.click('#convert-cancel');
    await page.locator('#convert-result', { hasText: 'Cancelled.' }).waitFor();
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'cancelled' }).count()).toBe(1);
    expect(await page.locator('#convert-start').isDisabled()).toBe(false);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('shows a 1 TiB sparse qcow2 from a file quickly', async () => {
    const big = path.join(dir, 'huge.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', big, '1T']);
    qemuIo(big, ['write -P 1 0 64k', 'write -P 2 500G 1M', 'write -z 900G 1G', 'write -P 3 1023G 64k'], 'qcow2');
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    const t0 = Date.now();
    await openFiles(page, [big], 'huge.qcow2');
    const factsMs = Date.now() - t0;
    await waitForMap(page);
    const mapMs = Date.now() - t0;
    console.log(`1 TiB sparse qcow2: facts after ${factsMs} ms, whole map after ${mapMs} ms`);
    expect(await fact(page, 'Virtual size')).toBe('1 TiB (1099511627776 bytes)');
    const shown = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(big))) expect(shown[kind], kind).toBe(bytes);
    // Generous bounds for a shared 2-core machine; the aims are 200 ms and 1 s.
    expect(factsMs).toBeLessThan(2000);
    expect(mapMs).toBeLessThan(5000);
    // Zoom: one cell per 512 MiB at first, a quarter of that per step, down to one cluster per cell.
    const range = page.locator('#map-range');
    expect(await range.innerText()).toContain('1 TiB shown · 512 MiB per cell');
    await page.click('#zoom-in');
    await expect.poll(() => range.innerText()).toContain('128 MiB per cell');
    await page.locator('#map-canvas').focus();
    for (let i = 0; i < 6; i++) await page.keyboard.press('+');
    await expect.poll(() => range.innerText()).toContain('64 KiB per cell');
    await page.keyboard.press('0');
    await expect.poll(() => range.innerText()).toContain('512 MiB per cell');
    await shot(page, '10-one-tebibyte', false);
    expect(errors).toEqual([]);
    await context.close();
  });
});
