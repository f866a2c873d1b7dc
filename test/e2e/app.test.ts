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
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser } from 'playwright';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';
import { DEMO, DEMO_OVERLAY, fact, hexBytes, kindTotals, legendBytes, makeHugeSparseQcow2, newPage as pageIn, openFiles, shot, startApp, waitForMap, type App } from './harness.js';

let app: App;
let browser: Browser;
let baseUrl: string;
let dir: string;
let ranges: RangeServer;

const newPage = () => pageIn(browser);

beforeAll(async () => {
  app = await startApp();
  ({ browser, baseUrl, dir } = app);
  ranges = await startRangeServer(dir);
});

afterAll(async () => {
  await ranges?.close();
  await app?.close();
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

  it('offers every format the engine can create; each converted download is the demo for qemu-img, and such images open', async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${baseUrl}?demo`);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    const offered = await page.locator('#convert-format option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
    expect(offered[0]).toBe('raw');
    expect([...offered].sort()).toEqual(['parallels', 'qcow', 'qcow2', 'qed', 'raw', 'vdi', 'vhdx', 'vmdk', 'vpc']);
    await page.selectOption('#convert-dest', 'download');
    for (const [format, ext] of [['vmdk', 'vmdk'], ['vhdx', 'vhdx'], ['vpc', 'vhd'], ['vdi', 'vdi'], ['qed', 'qed'], ['qcow', 'qcow'], ['parallels', 'hdd']] as const) {
      await page.selectOption('#convert-format', format);
      expect(await page.inputValue('#convert-name')).toBe(`demo.${ext}`);
      if (format === 'vmdk') await page.fill('#convert-options', 'subformat=streamOptimized');
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#convert-start')]);
      const saved = path.join(dir, `from-app.${ext}`);
      await download.saveAs(saved);
      await page.locator('#convert-result', { hasText: `Converted demo.qcow2 to ${format}` }).waitFor();
      const info = JSON.parse(qemuImg(['info', '--output=json', saved])) as { format: string; 'format-specific'?: { data?: { 'create-type'?: string } } };
      expect(info.format, format).toBe(format);
      // -o reached the driver.
      if (format === 'vmdk') expect(info['format-specific']?.data?.['create-type']).toBe('streamOptimized');
      expect(qemuImg(['compare', '-f', 'qcow2', '-F', format, DEMO, saved]), format).toContain('Images are identical');
    }
    // A vhdx made by qemu-img opens with qemu-img's facts.
    const vhdx = path.join(dir, 'qemu-made.vhdx');
    qemuImg(['convert', '-O', 'vhdx', DEMO, vhdx]);
    await openFiles(page, [vhdx], 'qemu-made.vhdx');
    expect(await fact(page, 'Format')).toBe('vhdx');
    await shot(page, '03b-convert-formats');
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
    const overlayFile = DEMO_OVERLAY;
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

  it('shows a 1 TiB sparse qcow2 from a file: facts and the whole map as qemu-img counts them', async () => {
    // How fast this is lives in bench/app.bench.mjs (facts and whole map, beside qemu-img info and map).
    const big = path.join(dir, 'huge.qcow2');
    makeHugeSparseQcow2(big);
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    await openFiles(page, [big], 'huge.qcow2');
    await waitForMap(page);
    expect(await fact(page, 'Virtual size')).toBe('1 TiB (1099511627776 bytes)');
    const shown = await legendBytes(page);
    for (const [kind, bytes] of Object.entries(kindTotals(big))) expect(shown[kind], kind).toBe(bytes);
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
