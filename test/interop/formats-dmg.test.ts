/**
 * dmg images built from the UDIF specification (qemu-img cannot create
 * them), read by blocktab and by qemu-img: every chunk type, both places the
 * blkx tables live (XML property list, resource fork), several sizes and
 * sparse disks. bzip2 chunks are checked against the known contents only:
 * Debian's qemu-img 7.2 lacks its dmg-bz2 module.
 */
import { buildDmg } from '../helpers/readonly-images.js';
import { mixedData, readonlyBadCli, readonlyDifferential } from './readonly-formats-diff.js';

const S = 512;

readonlyDifferential('dmg', [
  {
    name: 'XML property list, raw/zlib/zero/ignore/comment chunks, two partitions',
    file: 'mixed.dmg',
    build: () =>
      buildDmg({
        partitions: [
          [
            { kind: 'raw', sectors: 8, data: mixedData(8 * S, 1) },
            { kind: 'zlib', sectors: 64, data: mixedData(64 * S, 2) },
            { kind: 'zero', sectors: 100 },
            { kind: 'comment', sectors: 0 },
            { kind: 'ignore', sectors: 16 },
            { kind: 'zlib', sectors: 2048, data: mixedData(2048 * S, 3) },
          ],
          [
            { kind: 'raw', sectors: 1, data: mixedData(S, 4) },
            { kind: 'zlib', sectors: 7, data: mixedData(7 * S, 5) },
          ],
        ],
      }),
  },
  {
    name: 'resource fork variant',
    file: 'rsrc.dmg',
    build: () =>
      buildDmg({
        variant: 'rsrc',
        partitions: [
          [{ kind: 'zlib', sectors: 256, data: mixedData(256 * S, 6) }, { kind: 'zero', sectors: 3 }],
          [{ kind: 'raw', sectors: 33, data: mixedData(33 * S, 7) }],
          [{ kind: 'zlib', sectors: 1, data: mixedData(S, 8) }],
        ],
      }),
  },
  {
    name: 'trailer not sector-aligned (odd file length)',
    file: 'odd.dmg',
    build: () => buildDmg({ oddTail: true, partitions: [[{ kind: 'zlib', sectors: 40, data: mixedData(40 * S, 9) }, { kind: 'raw', sectors: 2, data: mixedData(2 * S, 10) }]] }),
  },
  {
    name: '64 MiB sparse disk: large zero chunks between data, full-size zlib chunk',
    file: 'sparse.dmg',
    build: () =>
      buildDmg({
        partitions: [
          [
            { kind: 'zero', sectors: 40000 },
            { kind: 'zlib', sectors: 2048, data: mixedData(2048 * S, 11) },
            { kind: 'ignore', sectors: 60000 },
            { kind: 'raw', sectors: 4, data: mixedData(4 * S, 12) },
            { kind: 'zero', sectors: 131072 - 40000 - 2048 - 60000 - 4 },
          ],
        ],
      }),
  },
  {
    name: 'one sector',
    file: 'tiny.dmg',
    build: () => buildDmg({ partitions: [[{ kind: 'raw', sectors: 1, data: mixedData(S, 13) }]] }),
  },
  {
    name: 'not named .dmg: found with -f only',
    file: 'udif.img',
    probes: false,
    build: () => buildDmg({ partitions: [[{ kind: 'zlib', sectors: 16, data: mixedData(16 * S, 14) }]] }),
  },
  {
    name: 'bzip2 chunks (against the known contents; qemu-img 7.2 lacks dmg-bz2)',
    file: 'bzip2.dmg',
    oursOnly: true,
    build: () =>
      buildDmg({
        partitions: [
          [
            { kind: 'bzip2', sectors: 300, data: mixedData(300 * S, 15) },
            { kind: 'zero', sectors: 12 },
            { kind: 'bzip2', sectors: 2048, data: mixedData(2048 * S, 16) },
            { kind: 'zlib', sectors: 5, data: mixedData(5 * S, 17) },
          ],
        ],
      }),
  },
]);

readonlyBadCli('dmg', [
  { name: 'no trailer', file: 'none.dmg', qemuFails: true, image: () => mixedData(8192, 40) },
  { name: 'chunk of more sectors than QEMU allows', file: 'big.dmg', qemuFails: true, image: () => buildDmg({ partitions: [[{ kind: 'zlib', sectors: 8, data: mixedData(8 * S, 41) }]], tamper: { blkx: (r) => void (r.chunks[0]!.SectorCount = 200000) } }).image },
  { name: 'bad master checksum', file: 'crc.dmg', image: () => buildDmg({ partitions: [[{ kind: 'raw', sectors: 2, data: mixedData(2 * S, 42) }]], tamper: { koly: (k) => void (k.MasterChecksum[0] ^= 1) } }).image },
  { name: 'unknown chunk type', file: 'type.dmg', image: () => buildDmg({ partitions: [[{ kind: 0x7777, sectors: 2, data: mixedData(2 * S, 43) }]] }).image },
  { name: 'overlapping chunks', file: 'overlap.dmg', image: () => buildDmg({ partitions: [[{ kind: 'raw', sectors: 4, data: mixedData(4 * S, 44) }], [{ kind: 'raw', sectors: 4, data: mixedData(4 * S, 45) }]], tamper: { blkx: (r, p) => void (p === 1 && (r.table.SectorNumber = 2)) } }).image },
  { name: 'lzfse chunk (ENOTSUP on read; qemu-img 7.2: EIO)', file: 'lzfse.dmg', onRead: true, image: () => buildDmg({ partitions: [[{ kind: 'lzfse', sectors: 4, data: mixedData(4 * S, 46) }]] }).image },
]);
