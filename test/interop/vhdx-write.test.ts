/**
 * VHDX images blocktab creates and writes must satisfy qemu-img: `check`
 * finds no errors, `compare` against a raw file holding the same writes says
 * identical, and qemu-io's own writes on top keep both true.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage, openImage, closeNode, bdrvPwrite } from '../../src/node.js';
import { createVhdx, type VhdxCreateOptions } from '../../src/formats/vhdx/create.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { seededBytes } from '../helpers/random.js';

const st = new FileStorage();
const MiB = 1024 * 1024;

function expectQemuHappy(image: string, ref: string): void {
  const check = qemuImgRun(['check', image]);
  expect(check.stderr).toBe('');
  expect(check.stdout).toContain('No errors were found on the image.');
  expect(check.status).toBe(0);
  const cmp = qemuImgRun(['compare', '-f', 'vhdx', '-F', 'raw', image, ref]);
  expect(cmp.stdout).toBe('Images are identical.\n');
  expect(cmp.status).toBe(0);
}

describe('vhdx images blocktab writes, judged by qemu-img', () => {
  const variants: [string, number, VhdxCreateOptions][] = [
    ['dynamic (8 MiB blocks by size)', 40 * MiB, {}],
    ['dynamic, block_size=1M, log_size=2M', 12 * MiB, { blockSize: MiB, logSize: 2 * MiB }],
    ['dynamic, block_state_zero=off, odd size', 9 * MiB + 1024, { blockStateZero: false, blockSize: 2 * MiB }],
    ['fixed, block_size=1M', 6 * MiB, { subformat: 'fixed', blockSize: MiB }],
    ['dynamic, just over 1 GiB (16 MiB blocks)', 1025 * MiB, {}],
  ];
  for (const [name, size, opts] of variants) {
    it(`${name}: created, written, checked and compared`, async () => {
      const dir = tmpDir();
      const image = path.join(dir, 'disk.vhdx');
      await createVhdx(st, image, size, opts);
      const info = JSON.parse(qemuImg(['info', '--output=json', image])) as { 'virtual-size': number; format: string; 'cluster-size': number };
      expect(info.format).toBe('vhdx');
      expect(info['virtual-size']).toBe(Math.ceil(size / 512) * 512);
      const ref = path.join(dir, 'ref.raw');
      fs.writeFileSync(ref, Buffer.alloc(0));
      fs.truncateSync(ref, info['virtual-size']);
      expectQemuHappy(image, ref);
      const vs = info['virtual-size'];
      const writes = [
        { at: 0, len: 4096 },
        { at: info['cluster-size'] - 512, len: 1024 }, // across a block boundary
        { at: 3 * MiB + 100 * 512, len: 300 * 512 },
        { at: 3 * MiB + 110 * 512, len: 512 }, // rewrite inside an allocated block
        { at: vs - 1536, len: 1536 },
      ];
      const bs = await openImage(st, image, { readOnly: false, format: 'vhdx' });
      const fd = fs.openSync(ref, 'r+');
      try {
        for (const [i, w] of writes.entries()) {
          const data = seededBytes(w.len, i + 1);
          await bdrvPwrite(bs, w.at, w.len, data);
          fs.writeSync(fd, data, 0, w.len, w.at);
        }
      } finally {
        fs.closeSync(fd);
        await closeNode(bs);
      }
      expectQemuHappy(image, ref);
      qemuIo(image, ['write -P 0x66 2M 70k'], 'vhdx');
      qemuIo(ref, ['write -P 0x66 2M 70k'], 'raw');
      expectQemuHappy(image, ref);
    });
  }
});
