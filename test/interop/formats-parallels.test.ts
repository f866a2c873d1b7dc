/** parallels: default and small clusters, several sizes, sparse and full. */
import { fill, formatDifferential, img, scribble, type FormatCase } from './format-differential.js';

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

formatDifferential('parallels', cases);
