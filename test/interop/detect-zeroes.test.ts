/**
 * detect-zeroes end to end (QEMU's detect-zeroes=off|on|unmap on a
 * BlockBackend): the same zero-filled writes go through our BlockBackend on
 * one qcow2 image and through qemu-io (--image-opts detect-zeroes=MODE,
 * discard=unmap) on an identical twin. The maps, the file sizes and the
 * contents must agree and both must pass qemu-img check:
 *   off   - zeros are written as data (a new data cluster appears),
 *   on    - zeros become zero clusters; allocated ones keep their host cluster,
 *   unmap - zeros become zero clusters and allocated ones are freed.
 * And convert's -S: written zeros in the source stay unallocated in a qcow2 target.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { BlockBackend } from '../../src/block/backend.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, seededBytes, tmpDir } from '../helpers/qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tmpDir('detect-zeroes-');
const storage = new FileStorage();

/** Zero writes: into unallocated space, over a whole allocated cluster run, inside an allocated cluster. */
const WRITES: Array<[number, number]> = [
  [2 * MiB, 256 * KiB],
  [0, 128 * KiB],
  [200 * KiB, 4 * KiB],
];

function makeImage(file: string): void {
  qemuImg(['create', '-f', 'qcow2', file, '4M']);
  qemuIo(file, ['write -P 0x5a 0 1m'], 'qcow2');
}

async function writeThroughBackend(file: string, mode: 'off' | 'on' | 'unmap'): Promise<void> {
  const bs = await openImage(storage, file, { format: 'qcow2', readOnly: false });
  try {
    const blk = new BlockBackend(bs, { detectZeroes: mode });
    for (const [offset, bytes] of WRITES) await blk.write(offset, bytes, new Uint8Array(bytes));
    await blk.flush();
  } finally {
    await closeNode(bs);
  }
}

function writeThroughQemuIo(file: string, mode: string): void {
  const cmds = WRITES.flatMap(([o, n]) => ['-c', `write -P 0 ${o} ${n}`]);
  execFileSync('qemu-io', ['--image-opts', ...cmds, `driver=qcow2,file.filename=${file},detect-zeroes=${mode},discard=unmap`], { stdio: 'ignore' });
}

interface MapEntry {
  start: number;
  length: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

const map = (file: string) => JSON.parse(qemuImg(['map', '--output=json', file])) as MapEntry[];

describe('BlockBackend detect-zeroes on qcow2, against qemu-io', () => {
  for (const mode of ['off', 'on', 'unmap'] as const) {
    it(`detect-zeroes=${mode}`, async () => {
      const ours = path.join(dir, `ours-${mode}.qcow2`);
      const theirs = path.join(dir, `theirs-${mode}.qcow2`);
      makeImage(ours);
      makeImage(theirs);
      const before = fs.statSync(ours).size;
      await writeThroughBackend(ours, mode);
      writeThroughQemuIo(theirs, mode);

      const check = qemuImgRun(['check', ours]);
      expect(check.stdout).toContain('No errors were found on the image.');
      expect(qemuImgRun(['compare', ours, theirs]).stdout).toBe('Images are identical.\n');
      const m = map(ours);
      expect(m).toEqual(map(theirs));
      expect(fs.statSync(ours).size).toBe(fs.statSync(theirs).size);

      // What each mode means, stated directly as well.
      const at = (off: number) => m.find((e) => e.start <= off && off < e.start + e.length)!;
      if (mode === 'off') {
        expect(at(2 * MiB)).toMatchObject({ present: true, data: true, zero: false });
        expect(fs.statSync(ours).size).toBeGreaterThan(before);
      } else {
        // No data allocation for the zero write into unallocated space: the file does not grow.
        expect(at(2 * MiB)).toMatchObject({ present: true, data: false, zero: true });
        expect(at(2 * MiB).offset).toBeUndefined();
        expect(fs.statSync(ours).size).toBe(before);
        // The zeroed allocated cluster: 'on' keeps its host cluster, 'unmap' frees it.
        expect(at(0)).toMatchObject({ present: true, data: false, zero: true });
        if (mode === 'on') expect(at(0).offset).toBeDefined();
        else expect(at(0).offset).toBeUndefined();
      }
      // A zero write inside a cluster that holds data stays data.
      expect(at(200 * KiB)).toMatchObject({ data: true });
    });
  }
});

describe('convert -S into qcow2: written zeros stay unallocated', () => {
  it('zero runs of a fully allocated raw source are not allocated in the target', () => {
    const src = path.join(dir, 'zeros.raw');
    const data = new Uint8Array(4 * MiB);
    data.set(seededBytes(MiB, 3), 0);
    data.set(seededBytes(64 * KiB, 4), 3 * MiB);
    fs.writeFileSync(src, data); // every byte written, zeros included
    const out = path.join(dir, 'zeros.qcow2');
    const r = blocktab(['convert', '-f', 'raw', '-O', 'qcow2', src, out]);
    expect(r.status).toBe(0);
    expect(qemuImgRun(['check', out]).status).toBe(0);
    expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'qcow2', src, out]).stdout).toBe('Images are identical.\n');
    const m = map(out);
    expect(m.filter((e) => e.data).map((e) => [e.start, e.length])).toEqual([
      [0, MiB],
      [3 * MiB, 64 * KiB],
    ]);
    expect(m.filter((e) => !e.data).every((e) => !e.present && e.zero)).toBe(true);
    // Only the 1 MiB + 64 KiB of data (plus metadata) was written.
    expect(fs.statSync(out).size).toBeLessThan(MiB + 64 * KiB + 512 * KiB);
  });
});
