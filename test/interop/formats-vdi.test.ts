/** vdi: static and dynamic images of several sizes, sparse and full, read by blocktab as qemu-img reads them. */
import { fill, formatDifferential, img, scribble, type FormatCase } from './simple-format-differential.js';

const MiB = 1024 * 1024;
const cases: FormatCase[] = [];
for (const type of ['dynamic', 'static']) {
  const opts = type === 'static' ? ['-o', 'static=on'] : [];
  for (const size of [MiB, 10 * MiB + 512 * 3, 67 * MiB]) {
    cases.push({
      name: `${type} ${size} bytes, sparse`,
      make: (d) => {
        img(d, ['create', '-q', '-f', 'vdi', ...opts, 'a.vdi', String(size)]);
        scribble(d, 'a.vdi', 'vdi', size, MiB);
        return 'a.vdi';
      },
    });
  }
  cases.push({
    name: `${type} empty`,
    make: (d) => {
      img(d, ['create', '-q', '-f', 'vdi', ...opts, 'a.vdi', '5M']);
      return 'a.vdi';
    },
  });
  cases.push({
    name: `${type} full`,
    make: (d) => {
      img(d, ['create', '-q', '-f', 'vdi', ...opts, 'a.vdi', '3M']);
      fill(d, 'a.vdi', 'vdi', 3 * MiB);
      return 'a.vdi';
    },
  });
}

formatDifferential('vdi', cases);
