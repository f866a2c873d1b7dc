/**
 * convert's sparse detection (-S): runs of zeros in the source's DATA become
 * holes in the target, as qemu-img does; -S 0 writes every byte.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, seededBytes, tmpDir } from '../helpers/qemu.js';

const MiB = 1024 * 1024;

/** A raw file whose every byte is allocated: random data, then 4 MiB of written zeros, then data again. */
function makeAllocatedZeros(dir: string): string {
  const file = path.join(dir, 'src.raw');
  const data = new Uint8Array(8 * MiB);
  data.set(seededBytes(2 * MiB, 7), 0);
  data.set(seededBytes(2 * MiB, 9), 6 * MiB);
  fs.writeFileSync(file, data);
  return file;
}

function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

describe('convert -S (sparse detection)', () => {
  it('default -S 4k leaves the written-zero run unallocated in a raw target, as qemu-img', () => {
    const dir = tmpDir();
    const src = makeAllocatedZeros(dir);
    const ours = path.join(dir, 'ours.raw');
    const theirs = path.join(dir, 'theirs.raw');
    expect(blocktab(['convert', '-f', 'raw', '-O', 'raw', src, ours]).status).toBe(0);
    qemuImg(['convert', '-f', 'raw', '-O', 'raw', src, theirs]);
    expect(Buffer.compare(fs.readFileSync(ours), fs.readFileSync(theirs))).toBe(0);
    // Only the two 2 MiB data runs are allocated (a little slack for file system granularity).
    expect(allocatedBytes(ours)).toBeLessThanOrEqual(4 * MiB + 64 * 1024);
    expect(qemuImg(['map', '--output=json', '-f', 'raw', ours])).toBe(qemuImg(['map', '--output=json', '-f', 'raw', theirs]));
  });

  it('qcow2 -> raw: zero blocks at step edges (2 and 8 MiB) and one across a step boundary map as qemu-img maps them', () => {
    const dir = tmpDir();
    const data = seededBytes(21 * MiB + 512 * 1024, 11);
    for (const at of [2 * MiB - 4096, 8 * MiB - 4096, 13 * MiB + 8192, 16 * MiB]) data.fill(0, at, at + (at === 8 * MiB - 4096 ? 8192 : 4096));
    fs.writeFileSync(path.join(dir, 'src.raw'), data);
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'src.raw'), path.join(dir, 'src.qcow2')]);
    const ours = path.join(dir, 'ours.raw');
    const theirs = path.join(dir, 'theirs.raw');
    expect(blocktab(['convert', '-O', 'raw', path.join(dir, 'src.qcow2'), ours]).status).toBe(0);
    qemuImg(['convert', '-O', 'raw', path.join(dir, 'src.qcow2'), theirs]);
    expect(Buffer.compare(fs.readFileSync(ours), data)).toBe(0);
    expect(qemuImg(['map', '--output=json', '-f', 'raw', ours])).toBe(qemuImg(['map', '--output=json', '-f', 'raw', theirs]));
  });

  it('-S 0 writes every byte, zeros included', () => {
    const dir = tmpDir();
    const src = makeAllocatedZeros(dir);
    const out = path.join(dir, 'full.raw');
    expect(blocktab(['convert', '-S', '0', '-f', 'raw', '-O', 'raw', src, out]).status).toBe(0);
    expect(Buffer.compare(fs.readFileSync(out), fs.readFileSync(src))).toBe(0);
    expect(allocatedBytes(out)).toBeGreaterThanOrEqual(8 * MiB);
  });

  it('-S 64k keeps a zero run shorter than 64 KiB allocated but drops an aligned 64 KiB one', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'src.raw');
    const data = seededBytes(1 * MiB, 3);
    data.fill(0, 100 * 1024, 130 * 1024); // 30 KiB of zeros: stays data with -S 64k
    data.fill(0, 256 * 1024, 320 * 1024); // one aligned 64 KiB block of zeros: becomes a hole
    fs.writeFileSync(file, data);
    const out = path.join(dir, 'out.raw');
    expect(blocktab(['convert', '-S', '64k', '-f', 'raw', '-O', 'raw', file, out]).status).toBe(0);
    expect(Buffer.compare(fs.readFileSync(out), data)).toBe(0);
    const map = JSON.parse(qemuImg(['map', '--output=json', '-f', 'raw', out])) as { start: number; length: number; data: boolean }[];
    const holes = map.filter((e) => !e.data).map((e) => [e.start, e.length]);
    expect(holes).toEqual([[256 * 1024, 64 * 1024]]);
  });
});
