/**
 * Against qemu-io 7.2 on twin images: the `compress` filter (writes through
 * it are stored compressed, padded to whole clusters; iotest 214) and
 * discard=unmap per node (qemu-io's `-d ignore` drops discards at the top
 * node, so neither the format nor the file below sees them). The same
 * command lines go to qemu-io and to blocktab's qemu-io; outputs, exit
 * status, `qemu-img map` and the guest bytes must agree.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';

const dir = tmpDir('blocktab-compress-discard-');

const timing = (t: string) => t.replace(/^(.*, \d+ ops); .*$/gm, '$1; <timing>');

function theirs(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function ours(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const { Readable } = await import('node:stream');
  const status = await runIo(args, { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
  return { status, stdout, stderr };
}

function twins(name: string, fmt: string, size: string, opts: string[] = []): [string, string] {
  const a = path.join(dir, `${name}-qemu.${fmt}`);
  const b = path.join(dir, `${name}-ours.${fmt}`);
  for (const f of [a, b]) qemuImg(['create', '-q', '-f', fmt, ...opts, f, size]);
  return [a, b];
}

/** Runs `args(image)` through both tools, one image each; outputs, status, map and bytes must agree. */
async function same(a: string, b: string, fmt: string, args: (img: string) => string[]): Promise<string> {
  const q = theirs(args(a));
  const o = await ours(args(b));
  expect(timing(o.stdout)).toBe(timing(q.stdout));
  expect(o.stderr.replaceAll(b, a)).toBe(q.stderr);
  expect(o.status).toBe(q.status);
  const map = (f: string) => qemuImg(['map', '--output=json', '-f', fmt, f]);
  expect(map(b)).toBe(map(a));
  expect(qemuImgRun(['compare', '-f', fmt, '-F', fmt, a, b]).status).toBe(0);
  return q.stdout;
}

const compressOpts = (img: string) => `driver=compress,file.driver=qcow2,file.file.driver=file,file.file.filename=${img}`;

describe('compress filter against qemu-io', () => {
  it('unaligned writes through it are whole compressed clusters; reads, zero writes and discards pass through', async () => {
    const [a, b] = twins('cmp', 'qcow2', '1M', ['-o', 'cluster_size=64k']);
    const out = await same(a, b, 'qcow2', (img) => [
      '--image-opts',
      '-c', 'write -P 0xbb 0 229376',
      '-c', 'write -P 0xcc 278528 100000',
      '-c', 'read -P 0xbb 0 229376',
      '-c', 'read -P 0 229376 32768',
      '-c', 'write -z 655360 65536',
      '-c', 'discard 0 65536',
      '-c', 'write -P 0xdd 0 1000',
      '-c', 'write -P 0xee 0 65536',
      compressOpts(img),
    ]);
    expect(out).toMatch(/wrote 229376\/229376/);
    const compressed = (f: string) => JSON.parse(qemuImg(['check', '--output=json', f]))['compressed-clusters'];
    expect(compressed(b)).toBe(compressed(a));
    expect(compressed(a)).toBeGreaterThan(4);
  });

  it('refuses a child that does not compress by itself, with QEMU\'s message', async () => {
    const [a, b] = twins('raw', 'raw', '1M');
    await same(a, b, 'raw', (img) => ['--image-opts', '-c', 'write 0 64k', `driver=compress,file.driver=raw,file.file.driver=file,file.file.filename=${img}`]);
    await same(a, b, 'raw', (img) => ['--image-opts', '-c', 'write 0 64k', `driver=compress,file.driver=file,file.filename=${img}`]);
  });
});

describe('discard=unmap per node against qemu-io', () => {
  for (const mode of ['ignore', 'unmap']) {
    it(`-d ${mode}: qcow2 clusters and the file's holes after a discard`, async () => {
      const [a, b] = twins(`q-${mode}`, 'qcow2', '1M', ['-o', 'cluster_size=64k']);
      await same(a, b, 'qcow2', (img) => ['-f', 'qcow2', '-c', 'write -P 0x11 0 512k', img]);
      const out = await same(a, b, 'qcow2', (img) => ['-f', 'qcow2', '-d', mode, '-c', 'discard 64k 256k', '-c', 'write -z -u 448k 64k', '-c', 'read -P 0x11 64k 64k', img]);
      // With ignore the data is still there; with unmap the read of the discarded range fails its pattern.
      expect(out.includes('Pattern verification failed')).toBe(mode === 'unmap');
    });

    it(`-d ${mode}: raw over file punches holes only with unmap`, async () => {
      const [a, b] = twins(`r-${mode}`, 'raw', '1M');
      await same(a, b, 'raw', (img) => ['-f', 'raw', '-c', 'write -P 0x22 0 1M', img]);
      await same(a, b, 'raw', (img) => ['-f', 'raw', '-d', mode, '-c', 'discard 0 512k', img]);
    });
  }
});
