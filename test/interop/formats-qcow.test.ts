/** qcow (v1): plain images, a backing chain, and compressed clusters (qemu-img convert -c -O qcow). */
import { expect } from 'vitest';
import { qemuImgRun } from '../helpers/qemu.js';
import { fill, formatDifferential, img, io, scribble, type FormatCase } from './simple-format-differential.js';

/** The case is only meaningful if qemu-img sees compressed clusters (data without a host offset). */
function expectCompressed(d: string, name: string): void {
  const map = JSON.parse(img(d, ['map', '--output=json', name])) as { data: boolean; offset?: number }[];
  expect(map.some((e) => e.data && e.offset === undefined)).toBe(true);
}

const MiB = 1024 * 1024;
const cases: FormatCase[] = [
  {
    name: 'sparse',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qcow', 'a.qcow', '20M']);
      scribble(d, 'a.qcow', 'qcow', 20 * MiB, 64 * 1024);
      return 'a.qcow';
    },
  },
  {
    name: 'odd size (rounded down to a sector), full',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qcow', 'a.qcow', String(2 * MiB + 1000)]);
      fill(d, 'a.qcow', 'qcow', 2 * MiB + 512);
      return 'a.qcow';
    },
  },
  {
    name: 'backing file, shorter than the top',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M']);
      io(d, 'base.qcow2', ['write -P 0x66 0 4M'], 'qcow2');
      img(d, ['create', '-q', '-f', 'qcow', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow', '5M']);
      io(d, 'top.qcow', ['write -P 0x77 64k 4k', 'write -P 0x78 3M 1536k'], 'qcow');
      return 'top.qcow';
    },
  },
  {
    name: 'compressed clusters (qemu-img convert -c)',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'raw', 'src.raw', '3M']);
      io(d, 'src.raw', ['write -P 0x41 0 1M', 'write -P 0x42 1536k 4k', 'write -P 0 2M 64k'], 'raw');
      // qemu-img 7.2 writes the image but exits 1 (its final zero-length compressed write fails on qcow).
      qemuImgRun(['convert', '-c', '-O', 'qcow', 'src.raw', 'c.qcow'], { cwd: d });
      io(d, 'c.qcow', ['write -P 0x43 8k 4k'], 'qcow');
      expectCompressed(d, 'c.qcow');
      return 'c.qcow';
    },
  },
  {
    name: 'compressed clusters (qemu-io write -c) next to plain ones',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qcow', 'c.qcow', '3M']);
      io(d, 'c.qcow', ['write -c -P 0x41 0 4k', 'write -c -P 0x42 4k 4k', 'write -P 0x43 16k 4k', 'write -c -P 0x44 1M 4k'], 'qcow');
      expectCompressed(d, 'c.qcow');
      return 'c.qcow';
    },
  },
];

formatDifferential('qcow', cases);
