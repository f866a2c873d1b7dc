/** qed: with and without a backing file (probed qcow2 and raw with QED_F_BACKING_FORMAT_NO_PROBE), cluster and table sizes, sparse and full. */
import { fill, formatDifferential, img, io, scribble, type FormatCase } from './simple-format-differential.js';

const MiB = 1024 * 1024;
const cases: FormatCase[] = [
  {
    name: 'default clusters, sparse',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qed', 'a.qed', '20M']);
      scribble(d, 'a.qed', 'qed', 20 * MiB, 64 * 1024);
      return 'a.qed';
    },
  },
  {
    name: '4 KiB clusters, table_size 2, across several L2 tables',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qed', '-o', 'cluster_size=4096,table_size=2', 'a.qed', '24M']);
      scribble(d, 'a.qed', 'qed', 24 * MiB, 1536 * 1024);
      io(d, 'a.qed', ['write -z 8M 64k', 'write -P 0x55 12M 8k'], 'qed');
      return 'a.qed';
    },
  },
  {
    name: 'empty, odd size',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qed', 'a.qed', String(3 * MiB + 512)]);
      return 'a.qed';
    },
  },
  {
    name: 'full',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qed', 'a.qed', '3M']);
      fill(d, 'a.qed', 'qed', 3 * MiB);
      return 'a.qed';
    },
  },
  {
    name: 'qcow2 backing (probed), shorter than the top',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M']);
      io(d, 'base.qcow2', ['write -P 0x66 0 4M'], 'qcow2');
      img(d, ['create', '-q', '-f', 'qed', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qed', '6M']);
      io(d, 'top.qed', ['write -P 0x77 100k 8k', 'write -P 0x78 3M 2M', 'write -z 1M 64k'], 'qed');
      return 'top.qed';
    },
  },
  {
    name: 'raw backing (no probe)',
    make: (d) => {
      img(d, ['create', '-q', '-f', 'raw', 'base.raw', '2M']);
      io(d, 'base.raw', ['write -P 0x21 0 1M'], 'raw');
      img(d, ['create', '-q', '-f', 'qed', '-b', 'base.raw', '-F', 'raw', 'top.qed', '2M']);
      io(d, 'top.qed', ['write -P 0x31 512k 4k'], 'qed');
      return 'top.qed';
    },
  },
];

formatDifferential('qed', cases);
