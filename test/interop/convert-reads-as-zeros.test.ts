/**
 * The reads-as-zeros hint (BlockDriver.readsAsZeros): a vhdx's absent blocks
 * are known zeros to convert, though block status (and so `map`) calls every
 * byte data as QEMU's vhdx driver does. qemu-img reads those blocks as data,
 * finds them zero and writes accordingly; blocktab skips the read, the fill
 * and the scan, and must leave the same target: same bytes (qemu-img compare)
 * and the same allocation (qemu-img map of both targets), for the target
 * kinds that treat zeros differently (zero-initialised raw and qcow2, -S 0,
 * -n over a non-zero qcow2 target, -B over a backing file, -c). (-n over a
 * non-zero raw file is left out: the file protocol writes zeros where QEMU's
 * punches a hole, with or without the hint.) Then, at the
 * library level, that the driver is not asked to read an absent block.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { closeNode, openImage, readsAsZeros, type BlockDriver, type BlockNode } from '../../src/index.js';
import { FileStorage } from '../../src/node.js';
import { convert } from '../../src/img/convert.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const MiB = 1024 * 1024;
const dir = tmpDir('reads-as-zeros-');
const SIZE = 12 * MiB + 3 * 512;

/**
 * 1 MiB blocks: 1 and 2 data, 4 a little data and zeros, 6 written zeros,
 * 8 one sector; 0, 3, 5, 7, 9 and up (the odd tail included) absent.
 */
function makeVhdx(name: string): string {
  const file = path.join(dir, name);
  qemuImg(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', file, String(SIZE)]);
  qemuIo(file, ['write -P 0x11 1M 2M', 'write -P 0x33 4M 4k', 'write -P 0 6M 1M', `write -P 0x55 ${8 * MiB + 512 * 1024} 512`], 'vhdx');
  return file;
}

const map = (file: string, fmt: string) => qemuImgRun(['map', '-f', fmt, '--output=json', file]).stdout;

describe('convert of a vhdx with absent blocks (reads-as-zeros hint)', () => {
  const src = makeVhdx('src.vhdx');

  const cases: { name: string; fmt: string; args: string[]; prepare?: (target: string) => void }[] = [
    { name: '-O raw', fmt: 'raw', args: [] },
    { name: '-O qcow2', fmt: 'qcow2', args: [] },
    { name: '-O raw -S 0', fmt: 'raw', args: ['-S', '0'] },
    { name: '-O qcow2 -c', fmt: 'qcow2', args: ['-c'] },
    {
      name: '-n into a qcow2 target full of 0xee',
      fmt: 'qcow2',
      args: ['-n'],
      prepare: (t) => {
        qemuImg(['create', '-q', '-f', 'qcow2', t, String(SIZE)]);
        qemuIo(t, [`write -P 0xee 0 ${SIZE}`], 'qcow2');
      },
    },
  ];

  for (const c of cases) {
    it(`${c.name}: the same bytes and the same allocation as qemu-img's target`, () => {
      const ours = path.join(dir, `ours.${c.fmt}`);
      const theirs = path.join(dir, `theirs.${c.fmt}`);
      try {
        c.prepare?.(ours);
        c.prepare?.(theirs);
        const b = blocktab(['convert', '-f', 'vhdx', '-O', c.fmt, ...c.args, src, ours]);
        expect(b.stderr).toBe('');
        expect(b.status).toBe(0);
        qemuImg(['convert', '-f', 'vhdx', '-O', c.fmt, ...c.args, src, theirs]);
        expect(qemuImgRun(['compare', '-f', 'vhdx', '-F', c.fmt, src, ours]).stdout).toBe('Images are identical.\n');
        expect(map(ours, c.fmt)).toBe(map(theirs, c.fmt));
      } finally {
        fs.rmSync(ours, { force: true });
        fs.rmSync(theirs, { force: true });
      }
    });
  }

  it('-B over a backing file full of 0x77: absent blocks are written as zeros, not left to the backing file', () => {
    const base = path.join(dir, 'base.qcow2');
    const ours = path.join(dir, 'ours-b.qcow2');
    const theirs = path.join(dir, 'theirs-b.qcow2');
    try {
      qemuImg(['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
      qemuIo(base, [`write -P 0x77 0 ${SIZE}`], 'qcow2');
      const args = ['convert', '-f', 'vhdx', '-O', 'qcow2', '-B', base, '-F', 'qcow2', src];
      const b = blocktab([...args, ours]);
      expect(b.stderr).toBe('');
      qemuImg([...args, theirs]);
      expect(qemuImgRun(['compare', '-f', 'vhdx', '-F', 'qcow2', src, ours]).stdout).toBe('Images are identical.\n');
      expect(map(ours, 'qcow2')).toBe(map(theirs, 'qcow2'));
    } finally {
      for (const f of [base, ours, theirs]) fs.rmSync(f, { force: true });
    }
  });

  it('map still calls every byte data, as qemu-img map does', () => {
    const ours = blocktab(['map', '-f', 'vhdx', '--output=json', src]);
    expect(ours.stdout).toBe(map(src, 'vhdx'));
    expect(JSON.parse(ours.stdout)).toEqual([expect.objectContaining({ start: 0, length: SIZE, data: true, zero: false })]);
  });

  it('the hint answers per run of blocks, and convert never asks the driver to read an absent block', async () => {
    const st = new FileStorage();
    const bs = await openImage(st, src, { format: 'vhdx', readOnly: true });
    const target = path.join(dir, 'lib.raw');
    fs.writeFileSync(target, Buffer.alloc(0));
    fs.truncateSync(target, SIZE);
    const to = await openImage(st, target, { format: 'raw' });
    try {
      // Runs: [0,1M) absent, [1M,3M) data, [3M,4M) absent, [4M,5M) data, [5M,6M) absent, [6M,7M) data, [7M,8M) absent, [8M,9M) data, rest absent.
      const runs: [number, boolean][] = [];
      for (let at = 0; at < SIZE; ) {
        const h = (await readsAsZeros(bs, at, SIZE - at))!;
        runs.push([h.pnum, h.zero]);
        at += h.pnum;
      }
      expect(runs).toEqual([
        [MiB, true],
        [2 * MiB, false],
        [MiB, true],
        [MiB, false],
        [MiB, true],
        [MiB, false],
        [MiB, true],
        [MiB, false],
        [SIZE - 9 * MiB, true],
      ]);
      // From the middle of a block, the answer ends at the run's end.
      expect(await readsAsZeros(bs, 3 * MiB + 4096, 4 * MiB)).toEqual({ zero: true, pnum: MiB - 4096 });

      const reads: [number, number][] = [];
      const drv = bs.driver;
      (bs as { driver: BlockDriver }).driver = { ...drv, preadv: (n: BlockNode, off, len, buf) => (reads.push([off, len]), drv.preadv(n, off, len, buf)) };
      await convert([bs], to, { targetHasZeroInit: true });
      const data = [
        [MiB, 3 * MiB],
        [4 * MiB, 5 * MiB],
        [6 * MiB, 7 * MiB],
        [8 * MiB, 9 * MiB],
      ];
      for (const [off, len] of reads) {
        expect(data.some(([s, e]) => off >= s! && off + len <= e!), `read of ${len} at ${off}`).toBe(true);
      }
      // Every data byte is read (the zero read-ahead, convert-zero-scout.ts, may read some twice:
      // a probe that finds data is read again by the copy).
      const covered = new Set<number>();
      for (const [off, len] of reads) for (let at = off; at < off + len; at += 4096) covered.add(at);
      expect(covered.size * 4096).toBe(5 * MiB);
    } finally {
      await closeNode(to);
      await closeNode(bs);
    }
    expect(qemuImgRun(['compare', '-f', 'vhdx', '-F', 'raw', src, target]).stdout).toBe('Images are identical.\n');
    fs.rmSync(target, { force: true });
  });
});
