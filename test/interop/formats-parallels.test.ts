/** parallels: default and small clusters, several sizes, sparse and full. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fill, formatDifferential, img, scribble, type FormatCase } from './simple-format-differential.js';

const MiB = 1024 * 1024;
const cases: FormatCase[] = [];
for (const [cluster, size] of [
  [MiB, 10 * MiB],
  [MiB, 33 * MiB + 512],
  [64 * 1024, 5 * MiB],
] as const) {
  cases.push({
    name: `${cluster}-byte clusters, ${size} bytes, sparse`,
    make: (d) => {
      img(d, ['create', '-q', '-f', 'parallels', '-o', `cluster_size=${cluster}`, 'a.hdd', String(size)]);
      scribble(d, 'a.hdd', 'parallels', size, cluster);
      return 'a.hdd';
    },
  });
}
cases.push({
  name: 'full',
  make: (d) => {
    img(d, ['create', '-q', '-f', 'parallels', 'a.hdd', '3M']);
    fill(d, 'a.hdd', 'parallels', 3 * MiB);
    return 'a.hdd';
  },
});

cases.push({
  // The old magic: BAT entries count sectors rather than clusters, and only nb_sectors' low 32 bits count.
  name: "old magic 'WithoutFreeSpace'",
  make: (d) => {
    img(d, ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=4096', 'a.hdd', '2M']);
    scribble(d, 'a.hdd', 'parallels', 2 * 1024 * 1024, 4096);
    const fd = fs.openSync(path.join(d, 'a.hdd'), 'r+');
    fs.writeSync(fd, Buffer.from('WithoutFreeSpace'), 0, 16, 0);
    // nb_sectors = 2^32 + 4096: the old magic keeps 4096.
    const sectors = Buffer.alloc(8);
    sectors.writeUInt32LE(4096, 0);
    sectors.writeUInt32LE(1, 4);
    fs.writeSync(fd, sectors, 0, 8, 36);
    fs.closeSync(fd);
    return 'a.hdd';
  },
});

formatDifferential('parallels', cases);
