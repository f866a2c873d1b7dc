/**
 * vpc (VHD): dynamic and fixed images, with and without force_size (CHS
 * geometry vs current_size), several sizes, sparse and full. A fixed VHD has
 * no header at offset 0, so probing finds raw — in qemu-img and in blocktab.
 */
import { fill, formatDifferential, img, scribble, type FormatCase } from './simple-format-differential.js';

const MiB = 1024 * 1024;
const cases: FormatCase[] = [];
for (const subformat of ['dynamic', 'fixed']) {
  for (const force of [false, true]) {
    const opts = ['-o', `subformat=${subformat}${force ? ',force_size=on' : ''}`];
    // 300 MiB (sparse, dynamic) needs 63 sectors per track; 150 MiB 31; the small ones 17.
    for (const size of [MiB, 10 * MiB + 3 * 512, subformat === 'dynamic' ? 300 * MiB : 150 * MiB]) {
      cases.push({
        name: `${subformat}${force ? ' force_size' : ''} ${size} bytes, sparse`,
        make: (d) => {
          img(d, ['create', '-q', '-f', 'vpc', ...opts, 'a.vhd', String(size)]);
          // Written up to the size qemu-img reports (the CHS geometry may round it).
          scribble(d, 'a.vhd', 'vpc', force ? size : size - (size % 512), 2 * MiB);
          return 'a.vhd';
        },
      });
    }
  }
  cases.push({
    name: `${subformat} full`,
    make: (d) => {
      img(d, ['create', '-q', '-f', 'vpc', '-o', `subformat=${subformat},force_size=on`, 'a.vhd', '5M']);
      fill(d, 'a.vhd', 'vpc', 5 * MiB);
      return 'a.vhd';
    },
  });
}

formatDifferential('vpc', cases);
