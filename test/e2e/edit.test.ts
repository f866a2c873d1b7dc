/**
 * The app's tools that change images, end to end: the demo's internal
 * snapshots, taking / applying / deleting a snapshot on a library copy, test
 * writes seen in the hex view, an overlay with commit and stream, and
 * convert to compressed qcow2. Every image the app saves is checked with
 * qemu-img on the Node side (check, snapshot -l, compare, qemu-io read -P).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright';
import { qemuImg, qemuImgRun, qemuIo } from '../helpers/qemu.js';
import { DEMO, hexBytes, newPage as pageIn, shot, startApp, waitForMap, type App } from './harness.js';

let app: App;
let browser: Browser;
let baseUrl: string;
let dir: string;

const newPage = () => pageIn(browser);

beforeAll(async () => {
  app = await startApp();
  ({ browser, baseUrl, dir } = app);
});

afterAll(async () => {
  await app?.close();
});

/** Tags as `qemu-img snapshot -l` prints them (the table after its header line). */
function snapshotTags(file: string): string[] {
  const lines = qemuImg(['snapshot', '-l', file]).trim().split('\n');
  const head = lines.findIndex((l) => /^ID\s+TAG/.test(l));
  return head < 0 ? [] : lines.slice(head + 1).map((l) => l.trim().split(/\s+/)[1]!);
}

function expectCheckClean(file: string): void {
  const r = qemuImgRun(['check', '--output=json', file]);
  expect(r.status, `${file}: ${r.stdout}${r.stderr}`).toBe(0);
  const check = JSON.parse(r.stdout) as { 'check-errors': number; corruptions?: number; leaks?: number };
  expect(check['check-errors']).toBe(0);
  expect(check.corruptions ?? 0).toBe(0);
  expect(check.leaks ?? 0).toBe(0);
}

/** Whether qemu-io's `read -P` finds `pattern` over the range (it exits non-zero when verification fails). */
function holdsPattern(file: string, pattern: string, offset: string, length: string): boolean {
  const r = spawnSync('qemu-io', ['-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${length}`, file], { encoding: 'utf8' });
  const failed = /Pattern verification failed/.test(r.stdout + r.stderr);
  if (!failed && r.status !== 0) throw new Error(`qemu-io failed on ${file}: ${r.stderr}`);
  return !failed;
}

async function snapshotRows(page: Page): Promise<string[][]> {
  return page.$$eval('#snapshots tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(0, 2).map((td) => td.textContent ?? '')));
}

async function openDemo(page: Page): Promise<void> {
  await page.goto(`${baseUrl}?demo`);
  await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
}

/** "Copy into the library to edit" on the read-only demo; waits until the copy is open read-write. */
async function copyDemoToLibrary(page: Page): Promise<void> {
  await page.locator('#edit-readonly').waitFor();
  await page.click('#edit-copy');
  await page.locator('#edit-tools').waitFor();
  await page.locator('#library-list li[data-name="demo.qcow2"]').waitFor();
  await waitForMap(page);
}

/** The library's Download of `name`, saved under `dir` with the same name (so backing file names resolve). */
async function exportFromLibrary(page: Page, name: string, into: string): Promise<string> {
  fs.mkdirSync(into, { recursive: true });
  const item = page.locator(`#library-list li[data-name="${name}"]`);
  const [download] = await Promise.all([page.waitForEvent('download'), item.getByRole('button', { name: /^Download/ }).click()]);
  const file = path.join(into, name);
  await download.saveAs(file);
  // The export closed the open image for a moment; wait until it is back.
  await page.locator('#edit-tools').waitFor();
  await waitForMap(page);
  return file;
}

async function writeTool(page: Page, offset: string, length: string, pattern: string | null): Promise<void> {
  await page.fill('#write-offset', offset);
  await page.fill('#write-length', length);
  if (pattern !== null) await page.fill('#write-pattern', pattern);
  await page.click(pattern === null ? '#write-zero-btn' : '#write-pattern-btn');
  await page.locator('#edit-result', { hasText: 'Wrote' }).waitFor();
  await waitForMap(page);
}

describe('changing images in the web app', () => {
  it('shows the demo with the internal snapshots qemu-img lists, in the table and the chain picture', async () => {
    const { context, page, errors } = await newPage();
    await page.goto(baseUrl);
    await page.locator('#image-title', { hasText: 'demo.qcow2' }).waitFor();
    const tags = snapshotTags(DEMO);
    expect(tags).toEqual(['installed', 'configured']);
    const info = JSON.parse(qemuImg(['info', '--output=json', DEMO])) as { snapshots: { id: string; name: string }[] };
    expect(await snapshotRows(page)).toEqual(info.snapshots.map((s) => [s.id, s.name]));
    expect(await page.$$eval('#chain .snap-dot', (b) => b.map((x) => x.textContent))).toEqual(tags);
    // Read-only here: no snapshot actions, an offer to copy into the library.
    expect(await page.locator('#snapshots button').count()).toBe(0);
    expect(await page.locator('#edit-copy').isVisible()).toBe(true);
    // Keyboard: the snapshot dots are reachable with Tab and named.
    await page.locator('#chain .layer').first().focus();
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? '');
    expect(focused).toMatch(/^Snapshot installed \(ID 1\) of demo\.qcow2/);
    await shot(page, '11-demo-snapshots', false);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('takes a snapshot of a library copy, writes a pattern, applies the snapshot and deletes it; qemu-img agrees at each step', async () => {
    const { context, page, errors } = await newPage();
    await openDemo(page);
    await copyDemoToLibrary(page);
    expect(await page.locator('#chain .layer.top').innerText()).toContain('writable');

    await page.fill('#snap-name', 'before-test');
    await page.click('#snap-create-btn');
    await expect.poll(() => snapshotRows(page)).toEqual([
      ['1', 'installed'],
      ['2', 'configured'],
      ['3', 'before-test'],
    ]);
    await shot(page, '12-snapshot-taken', false);

    // 1 MiB lies in the demo's zero range: the pattern must replace zeros there.
    await writeTool(page, '1M', '64k', '0xab');
    await page.locator('#hex-caption', { hasText: 'Sector 2048 ' }).waitFor();
    expect(hexBytes(await page.locator('#hex').innerText())).toBe('ab'.repeat(512));
    await shot(page, '13-pattern-written');

    // Apply: two clicks (the first one arms the button).
    const apply = page.getByRole('button', { name: 'Apply snapshot before-test' });
    await apply.click();
    await apply.click();
    await page.locator('#edit-result', { hasText: 'Applied snapshot before-test' }).waitFor();
    await waitForMap(page);
    await page.locator('#hex-caption', { hasText: 'Sector 2048 ' }).waitFor();
    const original = hexBytes(qemuIo(DEMO, ['read -v 1M 512'], 'qcow2'));
    expect(original).toHaveLength(1024);
    await expect.poll(async () => hexBytes(await page.locator('#hex').innerText())).toBe(original);
    await shot(page, '14-snapshot-applied');

    const first = await exportFromLibrary(page, 'demo.qcow2', path.join(dir, 'snap-1'));
    expectCheckClean(first);
    expect(snapshotTags(first)).toEqual(['installed', 'configured', 'before-test']);
    // Back at the snapshot, which was the demo's state: the guest data equals the demo's.
    expect(qemuImgRun(['compare', '-q', DEMO, first]).status).toBe(0);

    const del = page.getByRole('button', { name: 'Delete snapshot before-test' });
    await del.click();
    await del.click();
    await expect.poll(() => snapshotRows(page)).toEqual([
      ['1', 'installed'],
      ['2', 'configured'],
    ]);
    const second = await exportFromLibrary(page, 'demo.qcow2', path.join(dir, 'snap-2'));
    expectCheckClean(second);
    expect(snapshotTags(second)).toEqual(['installed', 'configured']);
    await shot(page, '15-snapshot-deleted', false);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('puts an overlay on a library image, writes into it, commits it into the base, then streams', async () => {
    const { context, page, errors } = await newPage();
    await openDemo(page);
    await copyDemoToLibrary(page);
    await page.fill('#overlay-name', 'work.qcow2');
    await page.click('#overlay-btn');
    await page.locator('#image-title', { hasText: 'work.qcow2' }).waitFor();
    await expect.poll(() => page.locator('#chain li').count()).toBe(2);
    await waitForMap(page);
    await writeTool(page, '2M', '128k', '0xcd');
    await shot(page, '16-overlay-written');

    // Exported overlay and base side by side: qemu-img follows the overlay's backing file name.
    const before = path.join(dir, 'overlay-1');
    const top1 = await exportFromLibrary(page, 'work.qcow2', before);
    const base1 = await exportFromLibrary(page, 'demo.qcow2', before);
    expectCheckClean(top1);
    expect((JSON.parse(qemuImg(['info', '--output=json', top1])) as { 'backing-filename': string })['backing-filename']).toBe('demo.qcow2');
    expect(holdsPattern(top1, '0xcd', '2M', '128k')).toBe(true);
    // The base does not have the write yet.
    expect(holdsPattern(base1, '0xcd', '2M', '128k')).toBe(false);

    await page.click('#commit-btn');
    await page.locator('#edit-result', { hasText: 'Committed work.qcow2 into demo.qcow2' }).waitFor();
    await waitForMap(page);
    await shot(page, '17-committed', false);
    const after = path.join(dir, 'overlay-2');
    const top2 = await exportFromLibrary(page, 'work.qcow2', after);
    const base2 = await exportFromLibrary(page, 'demo.qcow2', after);
    expectCheckClean(top2);
    expectCheckClean(base2);
    expect(holdsPattern(base2, '0xcd', '2M', '128k')).toBe(true);
    expect(snapshotTags(base2)).toEqual(['installed', 'configured']);
    // The overlay was emptied: every byte comes from the base.
    const topMap = JSON.parse(qemuImg(['map', '--output=json', top2])) as { depth: number; present: boolean }[];
    expect(topMap.filter((e) => e.depth === 0 && e.present)).toEqual([]);
    expect(qemuImgRun(['compare', '-q', top2, base2]).status).toBe(0);

    // Stream: the overlay takes every byte from the base and drops its backing file.
    await page.click('#stream-btn');
    await page.locator('#edit-result', { hasText: 'Streamed the backing data into work.qcow2' }).waitFor();
    await expect.poll(() => page.locator('#chain li.no-backing').count()).toBe(1);
    await waitForMap(page);
    await shot(page, '18-streamed', false);
    const streamed = path.join(dir, 'overlay-3');
    const top3 = await exportFromLibrary(page, 'work.qcow2', streamed);
    expectCheckClean(top3);
    const info3 = JSON.parse(qemuImg(['info', '--output=json', top3])) as { 'backing-filename'?: string };
    expect(info3['backing-filename']).toBeUndefined();
    expect(qemuImgRun(['compare', '-q', top3, base2]).status).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('converts the demo to compressed qcow2; qemu-img compare finds the same data and check finds no errors', async () => {
    const { context, page, errors } = await newPage();
    await openDemo(page);
    await page.selectOption('#convert-format', 'qcow2');
    await page.selectOption('#convert-cluster', '65536');
    await page.check('#convert-compress');
    await page.selectOption('#convert-dest', 'download');
    expect(await page.inputValue('#convert-name')).toBe('demo.qcow2');
    await page.fill('#convert-name', 'demo-compressed.qcow2');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#convert-start')]);
    const saved = path.join(dir, 'demo-compressed.qcow2');
    await download.saveAs(saved);
    await page.locator('#convert-result', { hasText: 'Converted demo.qcow2 to qcow2' }).waitFor();
    await shot(page, '19-convert-qcow2', false);
    expectCheckClean(saved);
    expect(qemuImgRun(['compare', DEMO, saved]).status).toBe(0);
    const info = JSON.parse(qemuImg(['info', '--output=json', saved])) as { format: string; 'cluster-size': number };
    expect(info.format).toBe('qcow2');
    expect(info['cluster-size']).toBe(65536);
    // Every data cluster of the copy is compressed (qemu-img map reports compressed clusters without an offset).
    const map = JSON.parse(qemuImg(['map', '--output=json', saved])) as { data: boolean; offset?: number }[];
    const data = map.filter((e) => e.data);
    expect(data.length).toBeGreaterThan(0);
    expect(data.filter((e) => e.offset !== undefined)).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('block jobs and dirty bitmaps in the web app', () => {
  it('full backup + bitmap, a write, "back up what changed", and a mirror completed from the job panel; qemu-img compares each chain with the image', async () => {
    const { context, page, errors } = await newPage();
    await openDemo(page);
    await copyDemoToLibrary(page);
    await page.locator('#bitmap-track').waitFor();
    await page.fill('#bitmap-name', 'changes');
    await page.click('#bitmap-track-btn');
    const row = page.locator('#bitmaps tr[data-bitmap="changes"]');
    await row.waitFor();
    await page.locator('#block-jobs', { hasText: 'No block job running' }).waitFor();
    await page.locator('#library-list li[data-name="demo.full-1.qcow2"]').waitFor();

    // A write marks the bitmap; the table shows the changed bytes.
    await writeTool(page, '1M', '64k', '0xcd');
    await expect.poll(() => row.locator('.bitmap-count').innerText()).toMatch(/^64(\.0)? KiB$/);
    await row.getByRole('button', { name: 'Back up what changed' }).click();
    await page.locator('#library-list li[data-name="demo.inc-2.qcow2"]').waitFor();
    await expect.poll(() => row.locator('.bitmap-count').innerText()).toBe('0 bytes');

    // Mirror: ready, then Complete from the panel.
    await page.click('#mirror-start');
    await page.locator('#block-jobs li[data-status="ready"] button[data-verb="block-job-complete"]').click();
    await page.locator('#block-jobs', { hasText: 'No block job running' }).waitFor();
    await page.locator('#library-list li[data-name="demo.mirror-3.qcow2"]').waitFor();
    await shot(page, '19-block-jobs', false);

    const out = path.join(dir, 'jobs-export');
    const files: Record<string, string> = {};
    for (const n of ['demo.qcow2', 'demo.full-1.qcow2', 'demo.inc-2.qcow2', 'demo.mirror-3.qcow2']) files[n] = await exportFromLibrary(page, n, out);
    for (const f of Object.values(files)) expectCheckClean(f);
    // The incremental overlay holds only the written cluster, over the full backup; the chain and the mirror equal the image.
    expect(JSON.parse(qemuImg(['info', '--output=json', files['demo.inc-2.qcow2']!]))['backing-filename']).toBe('demo.full-1.qcow2');
    expect(qemuImg(['compare', files['demo.inc-2.qcow2']!, files['demo.qcow2']!])).toContain('Images are identical');
    expect(qemuImg(['compare', files['demo.mirror-3.qcow2']!, files['demo.qcow2']!])).toContain('Images are identical');
    expect(holdsPattern(files['demo.full-1.qcow2']!, '0xcd', '1M', '64k')).toBe(false);
    expect(errors).toEqual([]);
    await context.close();
  });
});
