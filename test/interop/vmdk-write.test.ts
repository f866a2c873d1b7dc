/**
 * VMDK images blocktab creates and writes must satisfy qemu-img: `check`
 * finds no errors and `compare` against a raw file holding the same writes
 * says identical. Writes cover partial grains, grain boundaries, the end of
 * the disk, zeroed grains, and copy-on-write from a parent qemu-img made.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage, openImage, closeNode, bdrvPwrite, bdrvPwriteZeroes } from '../../src/node.js';
import { createVmdk, type VmdkCreateOptions } from '../../src/formats/vmdk/create.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { seededBytes } from '../helpers/random.js';

const st = new FileStorage();
const MiB = 1024 * 1024;

type Op = { at: number; len: number; seed?: number; zero?: boolean };

const ops: (size: number) => Op[] = (size) => [
  { at: 0, len: 4096, seed: 1 },
  { at: 65536 - 512, len: 1024, seed: 2 }, // across a grain boundary
  { at: 3 * MiB + 100, len: 200_000, seed: 3 }, // unaligned, several grains
  { at: 3 * MiB + 4096, len: 512, seed: 4 }, // rewrite inside an allocated grain
  { at: size - 1536, len: 1536, seed: 5 }, // the last sectors
];

/** Applies `ops` to the image through blocktab and to `ref` (a raw file) directly. */
async function apply(image: string, ref: string, list: Op[]): Promise<void> {
  const bs = await openImage(st, image, { readOnly: false, format: 'vmdk' });
  const fd = fs.openSync(ref, 'r+');
  try {
    for (const op of list) {
      if (op.zero) {
        await bdrvPwriteZeroes(bs, op.at, op.len);
        fs.writeSync(fd, Buffer.alloc(op.len), 0, op.len, op.at);
      } else {
        const data = seededBytes(op.len, op.seed ?? 7);
        await bdrvPwrite(bs, op.at, op.len, data);
        fs.writeSync(fd, data, 0, op.len, op.at);
      }
    }
  } finally {
    fs.closeSync(fd);
    await closeNode(bs);
  }
}

function expectQemuHappy(dir: string, image: string, ref: string): void {
  const check = qemuImgRun(['check', image], { cwd: dir });
  expect(check.stderr).toBe('');
  expect(check.stdout).toContain('No errors were found on the image.');
  expect(check.status).toBe(0);
  const cmp = qemuImgRun(['compare', '-f', 'vmdk', '-F', 'raw', image, ref], { cwd: dir });
  expect(cmp.stdout).toBe('Images are identical.\n');
  expect(cmp.status).toBe(0);
}

describe('vmdk images blocktab writes, judged by qemu-img', () => {
  const variants: [string, number, VmdkCreateOptions][] = [
    ['monolithicSparse', 8 * MiB, {}],
    ['monolithicSparse, odd size, hwversion=6, adapter_type=lsilogic', 5 * MiB + 3 * 512, { hwversion: '6', adapterType: 'lsilogic' }],
    ['monolithicSparse, zeroed_grain', 8 * MiB, { zeroedGrain: true }],
    ['monolithicSparse, 300 MiB (two grain tables)', 300 * MiB, {}],
    ['monolithicFlat', 8 * MiB, { subformat: 'monolithicFlat' }],
  ];
  for (const [name, size, opts] of variants) {
    it(`${name}: created, written, checked and compared`, async () => {
      const dir = tmpDir();
      const image = path.join(dir, 'disk.vmdk');
      await createVmdk(st, image, size, opts);
      const info = JSON.parse(qemuImg(['info', '--output=json', image])) as { 'virtual-size': number; format: string; 'format-specific': { data: { 'create-type': string } } };
      expect(info.format).toBe('vmdk');
      expect(info['virtual-size']).toBe(Math.ceil(size / 512) * 512);
      expect(info['format-specific'].data['create-type']).toBe(opts.subformat ?? 'monolithicSparse');
      const ref = path.join(dir, 'ref.raw');
      fs.writeFileSync(ref, Buffer.alloc(0));
      fs.truncateSync(ref, info['virtual-size']);
      expectQemuHappy(dir, image, ref);
      await apply(image, ref, ops(info['virtual-size']));
      expectQemuHappy(dir, image, ref);
      // qemu-io reads back what we wrote, and qemu-img's own writes on top still check clean.
      qemuIo(image, ['write -P 0x66 2M 70k'], 'vmdk');
      qemuIo(ref, ['write -P 0x66 2M 70k'], 'raw');
      expectQemuHappy(dir, image, ref);
    });
  }

  it('zeroed_grain: whole-grain zero writes become zeroed grains (qemu-img map says zero)', async () => {
    const dir = tmpDir();
    const image = path.join(dir, 'z.vmdk');
    await createVmdk(st, image, 4 * MiB, { zeroedGrain: true });
    const ref = path.join(dir, 'ref.raw');
    fs.writeFileSync(ref, Buffer.alloc(4 * MiB));
    await apply(image, ref, [
      { at: 0, len: 256 * 1024, seed: 9 },
      { at: 65536, len: 131072, zero: true },
      { at: 1000, len: 3000, zero: true }, // not a whole grain: written as zeros
    ]);
    expectQemuHappy(dir, image, ref);
    const map = JSON.parse(qemuImg(['map', '--output=json', image])) as { start: number; length: number; zero: boolean; data: boolean }[];
    expect(map.find((e) => e.start === 65536)).toMatchObject({ length: 131072, zero: true, data: false });
  });

  it('an overlay on a qemu-img parent copies the rest of each grain from the parent', async () => {
    const dir = tmpDir();
    qemuImg(['create', '-f', 'vmdk', 'base.vmdk', '4M'], { cwd: dir });
    qemuIo('base.vmdk', ['write -P 0x5b 0 4M'], 'vmdk', { cwd: dir });
    const image = path.join(dir, 'top.vmdk');
    await createVmdk(st, image, 0, { backingFile: 'base.vmdk' });
    const ref = path.join(dir, 'ref.raw');
    qemuImg(['convert', '-O', 'raw', 'base.vmdk', 'ref.raw'], { cwd: dir });
    await apply(image, ref, [
      { at: 1000, len: 100, seed: 11 },
      { at: 2 * MiB + 65000, len: 1000, seed: 12 },
    ]);
    expectQemuHappy(dir, 'top.vmdk', ref);
    const info = JSON.parse(qemuImg(['info', '--output=json', 'top.vmdk'], { cwd: dir })) as Record<string, unknown>;
    expect(info['backing-filename']).toBe('base.vmdk');
    // The parent's CID is ours to match: qemu-img reads the untouched grains through it.
    const map = qemuImg(['map', '--output=json', 'top.vmdk'], { cwd: dir });
    expect(map).toContain('"depth": 1');
  });

  it('check agrees with qemu-img check: clean, -r (unsupported), and a grain beyond the end of the file', () => {
    const dir = tmpDir();
    qemuImg(['create', '-f', 'vmdk', 'c.vmdk', '4M'], { cwd: dir });
    qemuIo('c.vmdk', ['write -P 0x21 0 256k'], 'vmdk', { cwd: dir });
    const same = (args: string[]) => {
      const b = blocktab(['check', ...args, 'c.vmdk'], { cwd: dir });
      const q = qemuImgRun(['check', ...args, 'c.vmdk'], { cwd: dir });
      expect(b.stdout).toBe(q.stdout);
      expect(b.stderr.replace(/^blocktab: /gm, '')).toBe(q.stderr.replace(/^qemu-img: /gm, ''));
      expect(b.status).toBe(q.status);
      return q;
    };
    same([]);
    same(['--output=json']);
    same(['-r', 'all']);
    // The second grain's table entry points far past the end of the file.
    const f = path.join(dir, 'c.vmdk');
    const fd = fs.openSync(f, 'r+');
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 56);
    const gt = readGt(fd, b.readUInt32LE(0) * 512);
    b.writeUInt32LE(0x7fffff00, 0);
    fs.writeSync(fd, b, 0, 4, gt + 4);
    fs.closeSync(fd);
    const broken = same([]);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toContain('ERROR: cluster offset for sector 128 points after EOF');
  });
});

function readGt(fd: number, gd: number): number {
  const b = Buffer.alloc(4);
  fs.readSync(fd, b, 0, 4, gd);
  return b.readUInt32LE(0) * 512;
}
