/** File comparisons shared by the differential suites. */
import * as fs from 'node:fs';

/** Byte-compares two files in 1 MiB pieces. Returns the first differing offset or -1. */
export function firstDifference(a: string, b: string): number {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const ba = Buffer.alloc(1 << 20);
    const bb = Buffer.alloc(1 << 20);
    for (let off = 0; ; off += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, off);
      const nb = fs.readSync(fb, bb, 0, bb.length, off);
      if (na !== nb) return off + Math.min(na, nb);
      if (na === 0) return -1;
      const c = ba.subarray(0, na).compare(bb.subarray(0, nb));
      if (c !== 0) {
        for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return off + i;
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}
