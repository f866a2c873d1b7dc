/**
 * The app with a web image under a local overlay, end to end in Chromium:
 * "Open URL" with "keep my changes in this browser" over the test range
 * server, the cache and overlay figures, "Export changes" (the overlay as a
 * download, the whole disk through a save-file picker) read back by qemu-img,
 * and "Attach to emulator": v86 (the npm package, Debian's SeaBIOS) boots a
 * hand-assembled boot sector from the overlay, and the sector the guest wrote
 * is in the overlay, read through blocktab and by qemu-img from the export
 * (qemu-img follows the exported overlay's URL backing file to the range server).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';
import { bootSector, guestMarker } from '../helpers/boot-sector.js';
import { newPage, shot, startApp, type App } from './harness.js';

let app: App;
let ranges: RangeServer;
const SEABIOS = '/usr/share/seabios/bios.bin';
const VGABIOS = '/usr/share/seabios/vgabios-stdvga.bin';

beforeAll(async () => {
  app = await startApp();
  ranges = await startRangeServer(app.dir);
});

afterAll(async () => {
  await ranges?.close();
  await app?.close();
});

/** qemu-img compare, run without blocking this process: the range server it reads the backing file from lives here. */
const compare = (overlay: string, expected: string) => promisify(execFile)('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', overlay, expected]);

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Opens `name` of the range server under a local overlay and waits for the remote panel. */
async function openWithOverlay(page: Page, name: string): Promise<string> {
  const url = `${ranges.baseUrl}${name}`;
  await page.goto(app.baseUrl);
  await page.locator('body[data-ready="true"]').waitFor();
  await page.check('#url-overlay');
  await page.fill('#url-input', url);
  await page.click('#url-form button[type="submit"]');
  await page.locator('#remote-section:not([hidden])').waitFor();
  return url;
}

const figure = (page: Page, label: string) => page.locator(`#remote-status [data-fact="${label}"]`).getAttribute('data-value').then(Number);

/** The open image's node in the worker (the page exposes the app for tests and the console). */
const nodeOf = (page: Page) => page.evaluate(() => (window as unknown as { blocktab: { app: { session: { node: string } } } }).blocktab.app.session.node);


describe('remote disk: overlay, status, export, emulator', () => {
  it('opens a URL under a local overlay, shows cache and overlay figures, and exports changes qemu-img reads equal', async () => {
    const base = path.join(app.dir, 'web.raw');
    qemuImg(['create', '-q', '-f', 'raw', base, '8M']);
    qemuIo(base, ['write -P 0x11 0 1M', 'write -P 0x22 5M 512k'], 'raw');
    const expected = path.join(app.dir, 'web-expected.raw');
    fs.copyFileSync(base, expected);
    qemuIo(expected, ['write -P 0x5a 1M 64k'], 'raw');

    const { context, page, errors } = await newPage(app.browser);
    // No picker for the overlay: the download path; a picker that hands out an OPFS file for the whole disk.
    await context.addInitScript(() => {
      localStorage.setItem('blocktab-visited', '1');
      (window as unknown as { testPicker: boolean }).testPicker = false;
      Object.defineProperty(window, 'showSaveFilePicker', {
        configurable: true,
        get: () =>
          (window as unknown as { testPicker: boolean }).testPicker
            ? async (o: { suggestedName: string }) => (await navigator.storage.getDirectory()).getFileHandle(`picked-${o.suggestedName}`, { create: true })
            : undefined,
      });
    });
    const url = await openWithOverlay(page, 'web.raw');
    await expect.poll(() => figure(page, 'Bytes fetched')).toBeGreaterThan(0);
    expect(await figure(page, 'Allocated in the overlay')).toBe(0);

    // A write through the edit tools lands in the overlay.
    await page.fill('#write-offset', '1M');
    await page.fill('#write-length', '64k');
    await page.fill('#write-pattern', '0x5a');
    await page.click('#write-pattern-btn');
    await expect.poll(() => figure(page, 'Allocated in the overlay')).toBe(65536);
    expect(await figure(page, 'Overlay file')).toBeGreaterThan(65536);

    // After a reload the library lists the overlay (its backing file read over the web) and opens it with the write in it.
    await page.reload();
    const entry = page.locator('#library-list li[data-name^="overlays/web-"]');
    await entry.locator('.lib-meta', { hasText: 'qcow2' }).waitFor();
    expect(await entry.locator('.lib-error').count()).toBe(0);
    await entry.getByRole('button', { name: /^Open / }).click();
    await page.locator('#remote-section:not([hidden])').waitFor();
    await expect.poll(() => figure(page, 'Allocated in the overlay')).toBe(65536);
    await shot(page, '20-remote-overlay');

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-overlay')]);
    const changes = path.join(app.dir, 'changes.qcow2');
    await download.saveAs(changes);
    const info = JSON.parse(qemuImg(['info', '--output=json', changes])) as { format: string; 'backing-filename': string; 'actual-size': number };
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBe(url);
    expect(fs.statSync(changes).size).toBeLessThan(1024 * 1024);
    // qemu-img follows the overlay's backing file over HTTP (its curl driver) to the range server.
    await compare(changes, expected);

    // The whole disk through the (test's) picker: raw, equal to qemu-img's view of the expected disk.
    await page.evaluate(() => void ((window as unknown as { testPicker: boolean }).testPicker = true));
    await page.click('#export-merged');
    await page.locator('#export-result', { hasText: 'Saved web.raw' }).waitFor();
    const pickedSha = await page.evaluate(async () => {
      const f = await (await (await navigator.storage.getDirectory()).getFileHandle('picked-web.raw')).getFile();
      const d = await crypto.subtle.digest('SHA-256', await f.arrayBuffer());
      return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
    });
    expect(pickedSha).toBe(sha256(fs.readFileSync(expected)));
    expect(errors).toEqual([]);
    await context.close();
  });

  it('boots v86 from the overlay: the sector the guest writes lands in the overlay', async () => {
    const disk = new Uint8Array(1024 * 1024);
    disk.set(bootSector(), 0);
    const sector1 = new Uint8Array(512).map((_, i) => (i * 37 + 11) & 0xff);
    disk.set(sector1, 512);
    const base = path.join(app.dir, 'boot.raw');
    fs.writeFileSync(base, disk);
    const expected = disk.slice();
    expected.set(guestMarker(sector1), 1024);
    fs.mkdirSync(path.join(app.dir, 'bios'), { recursive: true });
    fs.copyFileSync(SEABIOS, path.join(app.dir, 'bios/seabios.bin'));
    fs.copyFileSync(VGABIOS, path.join(app.dir, 'bios/vgabios.bin'));

    const { context, page, errors } = await newPage(app.browser);
    await context.addInitScript(() => {
      localStorage.setItem('blocktab-visited', '1');
      Object.defineProperty(window, 'showSaveFilePicker', { configurable: true, value: undefined });
    });
    await openWithOverlay(page, 'boot.raw');
    await page.fill('#emulator-bios', `${ranges.baseUrl}bios/seabios.bin`);
    await page.fill('#emulator-vga-bios', `${ranges.baseUrl}bios/vgabios.bin`);
    await page.click('#emulator-boot');
    await page.locator('body[data-emulator="running"]').waitFor({ timeout: 30_000 });
    const node = await nodeOf(page);
    // The guest's write, read through blocktab from the open overlay.
    const readSector2 = () =>
      page.evaluate(
        async (n) => [...(await (window as unknown as { blocktab: { client: { read(n: string, o: number, b: number): Promise<Uint8Array> } } }).blocktab.client.read(n, 1024, 512))],
        node,
      );
    await expect.poll(readSector2, { timeout: 60_000 }).toEqual([...guestMarker(sector1)]);
    await expect.poll(() => figure(page, 'Allocated in the overlay')).toBeGreaterThan(0);
    await shot(page, '21-v86-booted');
    await page.click('#emulator-stop');
    await page.locator('#emulator-status', { hasText: 'Stopped.' }).waitFor();

    // The guest's whole view, through blocktab, is the expected disk.
    const viewSha = await page.evaluate(async (n) => {
      const c = (window as unknown as { blocktab: { client: { read(n: string, o: number, b: number): Promise<Uint8Array<ArrayBuffer>> } } }).blocktab.client;
      const d = await crypto.subtle.digest('SHA-256', await c.read(n, 0, 1024 * 1024));
      return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
    }, node);
    expect(viewSha).toBe(sha256(expected));

    // The exported overlay, over the same base, reads as the guest's view in qemu-img.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-overlay')]);
    const changes = path.join(app.dir, 'boot-changes.qcow2');
    await download.saveAs(changes);
    const expectedFile = path.join(app.dir, 'boot-expected.raw');
    fs.writeFileSync(expectedFile, expected);
    await compare(changes, expectedFile);
    expect(errors).toEqual([]);
    await context.close();
  });
});
