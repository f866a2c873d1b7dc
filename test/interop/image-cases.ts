/**
 * The images the differential suite runs on, made at test time with qemu-img
 * and qemu-io. One row per case: add a row to cover a new kind of image.
 * Every `make` works inside `dir` with relative names, so file names printed by
 * both tools are the same.
 */
import { qemuImg, qemuIo } from '../helpers/qemu.js';

export interface ImageCase {
  name: string;
  /** Creates the image(s) in `dir` (the cwd of every command) and returns the name of the top image. */
  make(dir: string): string;
  /** Format to pass with -f (probed when absent). */
  format?: string;
  /** The guest view is huge and sparse: compare converted outputs with qemu-img compare, not byte by byte. */
  huge?: boolean;
}

const img = (dir: string, args: string[]) => qemuImg(args, { cwd: dir });
const io = (dir: string, file: string, cmds: string[], fmt?: string) => qemuIo(file, cmds, fmt, { cwd: dir });

/** A mix of data, zero writes and discards spread over the image, scaled to the cluster size. */
function scribble(dir: string, file: string, cluster: number, fmt = 'qcow2'): void {
  io(dir, file, [
    `write -P 0x11 0 ${cluster}`,
    `write -P 0x22 ${3 * cluster} ${2 * cluster}`,
    `write -z ${6 * cluster} ${cluster}`,
    `write -P 0x33 ${9 * cluster + 512} 1024`,
    `write -P 0 ${12 * cluster} ${cluster}`,
    `discard ${4 * cluster} ${cluster}`,
  ], fmt);
}

function qcow2(dir: string, name: string, size: string, opts: string[] = []): void {
  img(dir, ['create', '-f', 'qcow2', ...(opts.length ? ['-o', opts.join(',')] : []), name, size]);
}

export const imageCases: ImageCase[] = [
  {
    name: 'raw with holes',
    format: 'raw',
    make: (d) => {
      img(d, ['create', '-f', 'raw', 'disk.raw', '8M']);
      io(d, 'disk.raw', ['write -P 0x41 1M 64k', 'write -P 0x42 5M 1M', 'write -P 0 7M 4k'], 'raw');
      return 'disk.raw';
    },
  },
  ...[512, 4096, 65536, 2 * 1024 * 1024].map((cs) => ({
    name: `qcow2 cluster_size=${cs}`,
    make: (d: string) => {
      qcow2(d, 'c.qcow2', String(Math.max(16 * cs, 1 << 20)), [`cluster_size=${cs}`]);
      scribble(d, 'c.qcow2', cs);
      return 'c.qcow2';
    },
  })),
  {
    name: 'qcow2 compat=0.10',
    make: (d) => {
      qcow2(d, 'v2.qcow2', '4M', ['compat=0.10']);
      scribble(d, 'v2.qcow2', 65536);
      return 'v2.qcow2';
    },
  },
  ...['zlib', 'zstd'].map((type) => ({
    name: `qcow2 ${type} compressed clusters`,
    make: (d: string) => {
      img(d, ['create', '-f', 'raw', 'src.raw', '2M']);
      io(d, 'src.raw', ['write -P 0x5a 0 256k', 'write -P 0x00 256k 64k', 'write -P 0x66 1M 100k'], 'raw');
      img(d, ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, '-f', 'raw', 'src.raw', 'z.qcow2']);
      io(d, 'z.qcow2', ['write -P 0x77 1536k 64k']);
      return 'z.qcow2';
    },
  })),
  {
    name: 'qcow2 zero clusters',
    make: (d) => {
      qcow2(d, 'zero.qcow2', '2M');
      io(d, 'zero.qcow2', ['write -P 1 0 1M', 'write -z 64k 128k', 'write -z -u 512k 64k', 'write -z 1536k 64k']);
      return 'zero.qcow2';
    },
  },
  {
    name: 'qcow2 extended_l2',
    make: (d) => {
      qcow2(d, 'ext.qcow2', '4M', ['extended_l2=on', 'cluster_size=64k']);
      io(d, 'ext.qcow2', ['write -P 1 0 2k', 'write -P 2 6k 4k', 'write -z 64k 8k', 'write -P 3 130k 64k', 'write -P 4 1M 64k', 'write -z 1M 2k']);
      return 'ext.qcow2';
    },
  },
  ...[1, 2, 8, 32, 64].map((bits) => ({
    name: `qcow2 refcount_bits=${bits}`,
    make: (d: string) => {
      qcow2(d, 'rc.qcow2', '2M', [`refcount_bits=${bits}`]);
      scribble(d, 'rc.qcow2', 65536);
      return 'rc.qcow2';
    },
  })),
  {
    name: 'backing chain three deep, different cluster sizes and sizes',
    make: (d) => {
      qcow2(d, 'base.qcow2', '3M', ['cluster_size=4096']);
      io(d, 'base.qcow2', ['write -P 1 0 3M']);
      img(d, ['create', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2', '2M']);
      io(d, 'mid.qcow2', ['write -P 2 64k 64k', 'write -z 256k 64k']);
      img(d, ['create', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '5M']);
      io(d, 'top.qcow2', ['write -P 3 100k 1k', 'write -P 4 4M 4k']);
      return 'top.qcow2';
    },
  },
  {
    name: 'overlay smaller than its backing file',
    make: (d) => {
      qcow2(d, 'big.qcow2', '4M');
      io(d, 'big.qcow2', ['write -P 7 0 4M']);
      img(d, ['create', '-f', 'qcow2', '-b', 'big.qcow2', '-F', 'qcow2', 'small.qcow2', '1M']);
      io(d, 'small.qcow2', ['write -P 8 512k 64k']);
      return 'small.qcow2';
    },
  },
  {
    name: 'raw backing file',
    make: (d) => {
      img(d, ['create', '-f', 'raw', 'back.raw', '2M']);
      io(d, 'back.raw', ['write -P 9 0 64k', 'write -P 10 1M 512k'], 'raw');
      img(d, ['create', '-f', 'qcow2', '-b', 'back.raw', '-F', 'raw', 'over.qcow2', '2M']);
      io(d, 'over.qcow2', ['write -P 11 32k 64k']);
      return 'over.qcow2';
    },
  },
  {
    name: 'internal snapshots',
    make: (d) => {
      qcow2(d, 'snap.qcow2', '2M');
      io(d, 'snap.qcow2', ['write -P 1 0 128k']);
      img(d, ['snapshot', '-c', 'first', 'snap.qcow2']);
      io(d, 'snap.qcow2', ['write -P 2 64k 128k']);
      img(d, ['snapshot', '-c', 'second', 'snap.qcow2']);
      io(d, 'snap.qcow2', ['write -z 0 64k']);
      return 'snap.qcow2';
    },
  },
  {
    name: 'external data file',
    make: (d) => {
      qcow2(d, 'ext-data.qcow2', '2M', ['data_file=ext-data.bin']);
      io(d, 'ext-data.qcow2', ['write -P 3 64k 64k', 'write -P 4 1M 4k']);
      return 'ext-data.qcow2';
    },
  },
  {
    name: 'lazy refcounts left dirty',
    make: (d) => {
      qcow2(d, 'dirty.qcow2', '2M', ['lazy_refcounts=on']);
      try {
        io(d, 'dirty.qcow2', ['write -P 5 0 64k', 'write -P 6 1M 64k', 'sigraise 9']);
      } catch {
        // qemu-io is killed on purpose, leaving the dirty bit set.
      }
      return 'dirty.qcow2';
    },
  },
  {
    name: 'virtual size not a multiple of the cluster size',
    make: (d) => {
      qcow2(d, 'odd.qcow2', String(1000448 + 7 * 512));
      io(d, 'odd.qcow2', ['write -P 1 0 64k', 'write -P 2 983040 20992']);
      return 'odd.qcow2';
    },
  },
  {
    name: 'multi-TiB sparse image',
    huge: true,
    make: (d) => {
      qcow2(d, 'huge.qcow2', '4T');
      io(d, 'huge.qcow2', ['write -P 1 0 64k', 'write -P 2 2T 64k', 'write -P 3 4398046380032 64k']);
      return 'huge.qcow2';
    },
  },
  {
    name: 'metadata-preallocated image',
    make: (d) => {
      qcow2(d, 'pre.qcow2', '8M', ['preallocation=metadata']);
      io(d, 'pre.qcow2', ['write -P 1 1M 64k']);
      return 'pre.qcow2';
    },
  },
];
