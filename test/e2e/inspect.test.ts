/**
 * Inside the disk, in the app: a GPT disk made with sfdisk / mke2fs -d /
 * mkfs.vfat + mtools, as a qcow2 with an internal snapshot and an overlay
 * that changes files. The tree, the previews (text, image, hex) and a
 * downloaded file are compared with what the tools were given; the layer
 * view lists what the overlay changed. Then the installed app works with the
 * network off: the service worker serves the shell and the wasm, a local
 * image opens and converts, and the conversion equals qemu-img's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright';
import { qemuImg } from '../helpers/qemu.js';
import { makeExt, makeFat, MiB, partition, placeAt } from '../helpers/disk-images.js';
import { seededBytes } from '../helpers/random.js';
import { newPage, openFiles, shot, startApp, type App } from './harness.js';

let app: App;
let dir: string;
/** A 1×1 PNG (red pixel). */
const PNG = Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc00000030101001c0d5a1c0000000049454e44ae426082', 'hex');
const BIN = Buffer.from(seededBytes(20000, 7));

beforeAll(async () => {
  app = await startApp();
  dir = app.dir;
  const src = path.join(dir, 'src');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(src, 'etc', 'motd'), 'Welcome to the disk\n');
  fs.writeFileSync(path.join(src, 'pixel.png'), PNG);
  fs.writeFileSync(path.join(src, 'data.bin'), BIN);
  fs.writeFileSync(path.join(src, 'gone.txt'), 'removed by the overlay\n');
  makeExt(path.join(dir, 'p1.img'), src, 4, 'ext4', ['-b', '1024']);
  makeFat(path.join(dir, 'p2.img'), src, 4, 12, 'FATPART');
  const raw = path.join(dir, 'disk.img');
  partition(raw, 10, 'label: gpt\nstart=2048, size=4M, type=L, name=linux\nsize=4M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=fat\n');
  placeAt(raw, path.join(dir, 'p1.img'), MiB);
  placeAt(raw, path.join(dir, 'p2.img'), 5 * MiB);
  qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw, path.join(dir, 'base.qcow2')]);
  qemuImg(['snapshot', '-c', 'first', path.join(dir, 'base.qcow2')]);
  // The base changes after its snapshot: the snapshot keeps the first motd.
  fs.writeFileSync(path.join(src, 'etc', 'motd'), 'Welcome to the base, later\n');
  makeExt(path.join(dir, 'p1a.img'), src, 4, 'ext4', ['-b', '1024']);
  placeAt(raw, path.join(dir, 'p1a.img'), MiB);
  qemuImg(['convert', '-n', '-f', 'raw', '-O', 'qcow2', raw, path.join(dir, 'base.qcow2')]);
  // The overlay: motd changed, gone.txt removed, new.txt added (ext4 partition only).
  fs.writeFileSync(path.join(src, 'etc', 'motd'), 'Welcome to the changed disk\n');
  fs.rmSync(path.join(src, 'gone.txt'));
  fs.writeFileSync(path.join(src, 'new.txt'), 'added\n');
  makeExt(path.join(dir, 'p1b.img'), src, 4, 'ext4', ['-b', '1024']);
  placeAt(raw, path.join(dir, 'p1b.img'), MiB);
  qemuImg(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', path.join(dir, 'overlay.qcow2')]);
  qemuImg(['convert', '-n', '-f', 'raw', '-O', 'qcow2', '-B', 'base.qcow2', raw, path.join(dir, 'overlay.qcow2')]);
});

afterAll(async () => {
  await app?.close();
});

/** The regular files of a zip (python3's zipfile reads it, Zip64 included), by name. */
function unzip(file: string): Record<string, Buffer> {
  const out = execFileSync('python3', ['-c', 'import zipfile,sys,json; z=zipfile.ZipFile(sys.argv[1]); print(json.dumps({n: z.read(n).hex() for n in z.namelist() if not n.endswith("/")}))', file]);
  return Object.fromEntries(Object.entries(JSON.parse(out.toString()) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'hex')]));
}

async function expand(page: Page, label: RegExp | string): Promise<void> {
  await page.locator('#inside-tree .inside-label', { hasText: label }).first().click();
}

async function pick(page: Page, path: string): Promise<void> {
  await page.locator(`#inside-tree li[data-path="${path}"] > .inside-label`).click();
}

describe('inside the disk in the app', () => {
  it('shows disk → partitions → directories → files, previews and downloads files, lists what the overlay changed', async () => {
    const { context, page, errors } = await newPage(app.browser);
    // Not a first visit: the app starts empty instead of opening the demo.
    await context.addInitScript(() => localStorage.setItem('blocktab-visited', '1'));
    await page.goto(app.baseUrl);
    await page.locator('body[data-ready="true"]').waitFor();
    await openFiles(page, [path.join(dir, 'overlay.qcow2'), path.join(dir, 'base.qcow2')], 'overlay.qcow2');
    await page.locator('#inside-tree .inside-label', { hasText: 'Partition 2: fat' }).waitFor();
    const labels = await page.locator('#inside-tree .inside-partition').allInnerTexts();
    expect(labels).toEqual(['Partition 1: linux, 4 MiB, ext4', 'Partition 2: fat, 4 MiB, vfat']);
    await expand(page, 'Partition 1: linux');
    await expand(page, /^etc\//);
    await pick(page, '/etc/motd');
    await page.locator('#inside-preview pre[data-kind="text"]').waitFor();
    expect(await page.locator('#inside-preview pre').innerText()).toBe('Welcome to the changed disk\n');
    await pick(page, '/pixel.png');
    await page.locator('#inside-preview img.inside-image').waitFor();
    expect(await page.locator('#inside-preview img').evaluate((i: HTMLImageElement) => i.decode().then(() => i.naturalWidth))).toBe(1);
    await pick(page, '/data.bin');
    await page.locator('#inside-preview pre[data-kind="hex"]').waitFor();
    const firstRow = (await page.locator('#inside-preview pre').innerText()).split('\n')[0]!;
    expect(firstRow.slice(10, 57).replace(/ /g, '')).toBe(BIN.subarray(0, 16).toString('hex'));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#inside-download')]);
    expect(download.suggestedFilename()).toBe('data.bin');
    const saved = path.join(dir, 'data-from-app.bin');
    await download.saveAs(saved);
    expect(Buffer.compare(fs.readFileSync(saved), BIN)).toBe(0);
    await shot(page, '40-inside-tree');

    // The top layer's view compared with the layer under it.
    await page.locator('#inside-diff').click();
    await page.locator('#inside-diff-result[data-state="complete"]').waitFor({ timeout: 60_000 });
    const part1 = await page.locator('#inside-diff-result').innerText();
    expect(part1).toMatch(/Partition 1\s+Added \(1\)\s+new\.txt\s+Removed \(1\)\s+gone\.txt\s+Changed \(\d+\)[\s\S]*etc\/motd/);
    expect(part1).toMatch(/Partition 2\s+Added \(0\)\s+Removed \(0\)\s+Changed \(0\)/);

    // A folder as a streamed zip: the top view of partition 1, every file byte for byte.
    await page.locator('#inside-tree li:has(> .inside-label:text-is("Partition 1: linux, 4 MiB, ext4")) > .inside-zip').click();
    await page.locator('#inside-zip-download').waitFor();
    const [zip] = await Promise.all([page.waitForEvent('download'), page.click('#inside-zip-download')]);
    expect(zip.suggestedFilename()).toBe('partition-1.zip');
    const zipPath = path.join(dir, 'p1.zip');
    await zip.saveAs(zipPath);
    const files = unzip(zipPath);
    expect(Object.keys(files).sort()).toEqual(['data.bin', 'etc/motd', 'new.txt', 'pixel.png']);
    expect(files['etc/motd']!.toString()).toBe('Welcome to the changed disk\n');
    expect(Buffer.compare(files['data.bin']!, BIN)).toBe(0);
    expect(Buffer.compare(files['pixel.png']!, PNG)).toBe(0);
    expect(files['new.txt']!.toString()).toBe('added\n');
    await page.locator('#inside-zip-progress[data-state="complete"]').waitFor();

    // The base layer as it is now, then its internal snapshot: the motd of each.
    const options = await page.locator('#inside-view option').allInnerTexts();
    expect(options).toEqual([
      'The image as it is now',
      'Layer 1: base.qcow2 (as the disk was before the layers above)',
      'Layer 1: base.qcow2, snapshot first (id 1)',
    ]);
    for (const [label, motd] of [
      ['Layer 1: base.qcow2 (as the disk was before the layers above)', 'Welcome to the base, later'],
      ['Layer 1: base.qcow2, snapshot first (id 1)', 'Welcome to the disk'],
    ] as const) {
      await page.selectOption('#inside-view', { label });
      await expand(page, 'Partition 1: linux');
      await expand(page, /^etc\//);
      await pick(page, '/etc/motd');
      await page.locator('#inside-preview pre[data-kind="text"]').waitFor();
      expect(await page.locator('#inside-preview pre').innerText()).toBe(`${motd}\n`);
    }
    expect(errors).toEqual([]);
    await context.close();
  });

  it('works offline once installed: the shell and wasm come from the service worker; a local image opens and converts', async () => {
    const { context, page, errors } = await newPage(app.browser);
    await page.goto(app.baseUrl);
    expect(await page.evaluate(() => fetch('manifest.webmanifest').then((r) => r.json()).then((m: { name: string }) => m.name))).toMatch(/^blocktab/);
    await page.evaluate(() => navigator.serviceWorker.ready.then(() => undefined));
    // The page the worker controls from now on (clients.claim), then the network goes away.
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    await context.setOffline(true);
    await page.reload();
    await page.locator('body[data-ready="true"]').waitFor();
    const ready = await page.evaluate(() => (window as unknown as { blocktab: { client: { ready(): Promise<{ wasm: boolean }> } } }).blocktab.client.ready());
    expect(ready.wasm).toBe(true);
    await openFiles(page, [path.join(dir, 'base.qcow2')], 'base.qcow2');
    await page.locator('#inside-tree .inside-label', { hasText: 'Partition 1: linux' }).waitFor();
    await page.selectOption('#convert-dest', 'download');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#convert-start')]);
    const saved = path.join(dir, 'offline.raw');
    await download.saveAs(saved);
    const reference = path.join(dir, 'offline-qemu.raw');
    qemuImg(['convert', '-O', 'raw', path.join(dir, 'base.qcow2'), reference]);
    expect(Buffer.compare(fs.readFileSync(saved), fs.readFileSync(reference))).toBe(0);
    await shot(page, '41-offline');
    expect(errors).toEqual([]);
    await context.close();
  });
});
