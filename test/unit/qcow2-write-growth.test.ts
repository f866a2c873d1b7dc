/**
 * Metadata growth on the write path: the refcount table (512-byte clusters,
 * so one refcount table cluster covers only 8 MiB) and the L1 table (resize,
 * then a write far out), each checked by qemu-img and read back by qemu-io.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { BlockBackend } from '../../src/block/backend.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('qcow2-grow-');
const st = new FileStorage();

function headerU32(file: string, at: number): number {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(4);
  fs.readSync(fd, b, 0, 4, at);
  fs.closeSync(fd);
  return b.readUInt32BE(0);
}

function expectClean(file: string): void {
  const r = qemuImgRun(['check', '--output=json', file]);
  const j = JSON.parse(r.stdout);
  expect({ status: r.status, corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0 }).toEqual({ status: 0, corruptions: 0, leaks: 0 });
}

describe('qcow2 metadata growth', () => {
  it('grows the refcount table (512-byte clusters, 16 MiB written, refcount_bits 16 and 64)', async () => {
    for (const bits of [16, 64]) {
      const file = path.join(dir, `reftable-${bits}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=512,refcount_bits=${bits}`, file, '256M']);
      const before = headerU32(file, 56);
      const bs = await openImage(st, file);
      const blk = new BlockBackend(bs);
      const chunk = new Uint8Array(64 * 1024);
      for (let i = 0; i < 256; i++) {
        chunk.fill(i & 0xff);
        // Spread over the disk so many L2 tables are allocated too.
        await blk.write(i * 1024 * 1024, chunk.length, chunk);
      }
      await closeNode(bs);
      expect(headerU32(file, 56)).toBeGreaterThan(before);
      expectClean(file);
      const out = qemuIo(file, [0, 1, 77, 128, 255].map((i) => `read -P ${i} ${i * 1024 * 1024} 65536`), 'qcow2');
      expect(out).not.toMatch(/Pattern verification failed|error/i);
      expect(out.match(/read 65536\/65536/g)?.length).toBe(5);
    }
  }, 120_000);

  it('grows the L1 table on resize and writes far out', async () => {
    const file = path.join(dir, 'l1.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '1M']);
    const l1Before = headerU32(file, 36);
    const bs = await openImage(st, file);
    const blk = new BlockBackend(bs);
    await blk.write(0, 4096, new Uint8Array(4096).fill(1));
    await blk.truncate(4 * 2 ** 30);
    const far = 4 * 2 ** 30 - 8192;
    await blk.write(far, 8192, new Uint8Array(8192).fill(2));
    await blk.write(2 * 2 ** 30, 100, new Uint8Array(100).fill(3));
    await closeNode(bs);
    expect(headerU32(file, 36)).toBeGreaterThan(l1Before);
    expectClean(file);
    const info = JSON.parse(qemuImg(['info', '--output=json', file]));
    expect(info['virtual-size']).toBe(4 * 2 ** 30);
    const out = qemuIo(file, ['read -P 1 0 4096', `read -P 2 ${far} 8192`, `read -P 3 ${2 * 2 ** 30} 100`, `read -P 0 ${(2 * 2 ** 30) + 100} 3996`], 'qcow2');
    expect(out).not.toMatch(/Pattern verification failed/);
  }, 60_000);

  it('shrinks: clusters past the new end are freed, the rest reads back', async () => {
    const file = path.join(dir, 'shrink.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '64M']);
    const bs = await openImage(st, file);
    const blk = new BlockBackend(bs);
    await blk.write(0, 1 << 20, new Uint8Array(1 << 20).fill(5));
    await blk.write(40 << 20, 1 << 20, new Uint8Array(1 << 20).fill(6));
    await blk.truncate(2 << 20);
    await closeNode(bs);
    expectClean(file);
    const info = JSON.parse(qemuImg(['info', '--output=json', file]));
    expect(info['virtual-size']).toBe(2 << 20);
    const out = qemuIo(file, ['read -P 5 0 1048576', 'read -P 0 1048576 1048576'], 'qcow2');
    expect(out).not.toMatch(/Pattern verification failed/);
  }, 60_000);
});
