/**
 * VHDX read support against qemu-img: dynamic and fixed images, block_size
 * and log_size options, several sizes, sparse and full — info, map, convert
 * and compare must agree. Then dirty logs: crafted from the specification
 * (test/helpers/vhdx-log.ts), refused on a read-only open with QEMU's message,
 * and replayed by `check -r all` to exactly the content QEMU's replay gives.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { firstDifference } from '../helpers/files.js';
import { batEntry, vhdxLayout, writeDirtyLog } from '../helpers/vhdx-log.js';
import { formatDifferential, type FormatCase } from './format-differential.js';

const MiB = 1024 * 1024;
const img = (dir: string, args: string[]) => qemuImg(args, { cwd: dir });
const io = (dir: string, file: string, cmds: string[], fmt = 'vhdx') => qemuIo(file, cmds, fmt, { cwd: dir });

function created(size: number, opts: string[], writes: (size: number) => string[]): (dir: string) => string {
  return (dir) => {
    img(dir, ['create', '-f', 'vhdx', ...(opts.length ? ['-o', opts.join(',')] : []), 'disk.vhdx', String(size)]);
    const w = writes(size);
    if (w.length) io(dir, 'disk.vhdx', w);
    return 'disk.vhdx';
  };
}

const scribble = (size: number) => ['write -P 0x11 0 64k', `write -P 0x22 ${3 * MiB - 512} 1536`, 'write -z 5M 1M', `write -P 0x33 ${size - 4096} 4096`];

const cases: FormatCase[] = [
  { name: 'vhdx dynamic, empty', format: 'vhdx', make: created(16 * MiB, [], () => []) },
  { name: 'vhdx dynamic, scribbled', format: 'vhdx', make: created(40 * MiB, [], scribble) },
  { name: 'vhdx dynamic, block_size=1M, log_size=2M', format: 'vhdx', make: created(24 * MiB, ['block_size=1M', 'log_size=2M'], scribble) },
  { name: 'vhdx dynamic, block_size=32M, odd size', format: 'vhdx', make: created(70 * MiB + 3 * 512, ['block_size=32M'], scribble) },
  { name: 'vhdx dynamic, block_state_zero=off', format: 'vhdx', make: created(16 * MiB, ['block_state_zero=off'], scribble) },
  { name: 'vhdx dynamic, full', format: 'vhdx', make: created(8 * MiB, ['block_size=1M'], (s) => [`write -P 0x44 0 ${s}`]) },
  { name: 'vhdx fixed, empty', format: 'vhdx', make: created(8 * MiB, ['subformat=fixed'], () => []) },
  { name: 'vhdx fixed, scribbled, block_size=2M', format: 'vhdx', make: created(20 * MiB, ['subformat=fixed', 'block_size=2M'], scribble) },
  { name: 'vhdx dynamic, 2 GiB sparse (16 MiB default blocks)', format: 'vhdx', huge: true, make: created(2048 * MiB, [], scribble) },
  {
    name: 'vhdx converted from raw by qemu-img',
    format: 'vhdx',
    make: (dir) => {
      img(dir, ['create', '-f', 'raw', 'src.raw', '12M']);
      io(dir, 'src.raw', ['write -P 0x55 1M 2M', 'write -P 0x66 9M 4k'], 'raw');
      img(dir, ['convert', '-f', 'raw', '-O', 'vhdx', 'src.raw', 'disk.vhdx']);
      return 'disk.vhdx';
    },
  },
];

formatDifferential(cases);

/** A 1 MiB-block dynamic image with blocks 0 and 2 written. */
function dirtyBase(dir: string, name: string): string {
  img(dir, ['create', '-f', 'vhdx', '-o', 'block_size=1M', name, '8M']);
  io(dir, name, ['write -P 0x11 0 1M', 'write -P 0x22 2M 1M']);
  return path.join(dir, name);
}

function sector(fill: number): Uint8Array {
  const s = new Uint8Array(4096).fill(fill);
  s[0] = 0xa0; // distinct leading and trailing bytes: they travel in the descriptor
  s[4095] = 0xa1;
  return s;
}

/** Replays with qemu-img on one copy and blocktab on another; both must give the same guest bytes. */
function replayBoth(dir: string, file: string): { ours: string; theirs: string } {
  const ourCopy = path.join(dir, 'ours.vhdx');
  const theirCopy = path.join(dir, 'theirs.vhdx');
  fs.copyFileSync(file, ourCopy);
  fs.copyFileSync(file, theirCopy);
  const q = qemuImgRun(['check', '-r', 'all', theirCopy]);
  const b = blocktab(['check', '-r', 'all', ourCopy]);
  expect(b.stdout).toBe(q.stdout.replaceAll(theirCopy, ourCopy));
  expect(b.status).toBe(q.status);
  qemuImg(['convert', '-O', 'raw', theirCopy, path.join(dir, 'theirs.raw')]);
  expect(blocktab(['convert', '-O', 'raw', ourCopy, path.join(dir, 'ours.raw')]).status).toBe(0);
  return { ours: path.join(dir, 'ours.raw'), theirs: path.join(dir, 'theirs.raw') };
}

describe('vhdx dirty log', () => {
  it('a read-only open of a dirty image is refused with qemu-img\'s message and exit code', () => {
    const dir = tmpDir();
    const f = dirtyBase(dir, 'ro.vhdx');
    const [, block0] = batEntry(f, 0);
    writeDirtyLog(f, [[{ fileOffset: block0, data: sector(0x77) }]]);
    const q = qemuImgRun(['info', 'ro.vhdx'], { cwd: dir });
    const b = blocktab(['info', 'ro.vhdx'], { cwd: dir });
    expect(q.status).toBe(1);
    expect(b.status).toBe(q.status);
    expect(q.stderr).toContain('contains a log that needs to be replayed');
    // qemu-img's message word for word, its hint line included.
    expect(b.stderr.replace(/^blocktab: /, '')).toBe(q.stderr.replace(/^qemu-img: /, ''));
    const qc = qemuImgRun(['convert', '-O', 'raw', 'ro.vhdx', 'x.raw'], { cwd: dir });
    const bc = blocktab(['convert', '-O', 'raw', 'ro.vhdx', 'y.raw'], { cwd: dir });
    expect(bc.status).toBe(qc.status);
  });

  it('data, zero and BAT descriptors in one entry replay to qemu-img\'s content', () => {
    const dir = tmpDir();
    const f = dirtyBase(dir, 'one.vhdx');
    const [, block0] = batEntry(f, 0);
    const { batOffset } = vhdxLayout(f);
    // The BAT's first sector with block 2 turned into a ZERO block.
    const batSector = new Uint8Array(fs.readFileSync(f).subarray(batOffset, batOffset + 4096));
    new DataView(batSector.buffer).setUint32(16, 2, true);
    new DataView(batSector.buffer).setUint32(20, 0, true);
    writeDirtyLog(f, [[
      { fileOffset: block0 + 8192, data: sector(0x77) },
      { fileOffset: block0 + 65536, zeroLength: 16384 },
      { fileOffset: batOffset, data: batSector },
    ]]);
    const { ours, theirs } = replayBoth(dir, f);
    expect(firstDifference(ours, theirs)).toBe(-1);
    const raw = fs.readFileSync(theirs);
    expect(raw[8192 + 1]).toBe(0x77);
    expect(raw[65536 + 10]).toBe(0);
    expect(raw[2 * MiB + 10]).toBe(0);
    expect(raw[MiB - 1]).toBe(0x11);
    // After the replay the log is empty: a read-only open works in both tools.
    expect(qemuImgRun(['info', path.join(dir, 'ours.vhdx')]).status).toBe(0);
    expect(blocktab(['info', path.join(dir, 'theirs.vhdx')]).status).toBe(0);
  });

  it('a sequence of entries replays in order (the later entry wins)', () => {
    const dir = tmpDir();
    const f = dirtyBase(dir, 'seq.vhdx');
    const [, block0] = batEntry(f, 0);
    writeDirtyLog(f, [[{ fileOffset: block0, data: sector(0x31) }], [{ fileOffset: block0, data: sector(0x32) }, { fileOffset: block0 + 4096, data: sector(0x33) }]]);
    const { ours, theirs } = replayBoth(dir, f);
    expect(firstDifference(ours, theirs)).toBe(-1);
    expect(fs.readFileSync(theirs)[100]).toBe(0x32);
  });

  it('an entry with a bad checksum is not replayed (nothing to do, the image opens)', () => {
    const dir = tmpDir();
    const f = dirtyBase(dir, 'crc.vhdx');
    const [, block0] = batEntry(f, 0);
    writeDirtyLog(f, [[{ fileOffset: block0, data: sector(0x41) }]], { afterChecksum: true, mutate: (e) => (e[4096 + 100] ^= 1) });
    const q = qemuImgRun(['info', '--output=json', 'crc.vhdx'], { cwd: dir });
    const b = blocktab(['info', '--output=json', 'crc.vhdx'], { cwd: dir });
    expect(q.status).toBe(0);
    expect(b.status).toBe(0);
    const { ours, theirs } = replayBoth(dir, f);
    expect(firstDifference(ours, theirs)).toBe(-1);
    expect(fs.readFileSync(theirs)[100]).toBe(0x11);
  });

  it('a log that does not replay (truncated file) fails with one clear line', () => {
    const dir = tmpDir();
    const f = dirtyBase(dir, 'trunc.vhdx');
    const [, block0] = batEntry(f, 0);
    writeDirtyLog(f, [[{ fileOffset: block0, data: sector(0x51) }]], { flushedFileOffset: fs.statSync(f).size + 64 * MiB });
    const q = qemuImgRun(['check', '-r', 'all', 'trunc.vhdx'], { cwd: dir });
    const b = blocktab(['check', '-r', 'all', 'trunc.vhdx'], { cwd: dir });
    expect(q.status).not.toBe(0);
    expect(b.status).toBe(q.status);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
    expect(b.stderr).toMatch(/trunc\.vhdx'?: log entry \(sequence 1\): FlushedFileOffset 0x[0-9a-f]+ is past the end of the file/);
  });
});
