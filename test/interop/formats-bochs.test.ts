/**
 * Bochs growing redolog images built from the format's layout (qemu-img
 * cannot create them): v1 and v2 headers, several extent sizes, allocated
 * and unallocated catalog entries, sectors absent from an extent's bitmap.
 */
import { buildBochs } from '../helpers/readonly-images.js';
import { mixedData, readonlyBadCli, readonlyDifferential } from './readonly-formats-diff.js';

const S = 512;

readonlyDifferential('bochs', [
  {
    name: 'v2, 4 KiB extents, every third sector written',
    file: 'v2-4k.bochs',
    build: () => buildBochs({ diskSize: 256 * 1024, extentSize: 4096, data: mixedData(256 * 1024, 31), present: (s) => s % 3 === 0 }),
  },
  {
    name: 'v2, 32 KiB extents, half the extents unallocated, extra catalog entries',
    file: 'v2-32k.bochs',
    build: () =>
      buildBochs({ diskSize: 2 * 1024 * 1024, extentSize: 32768, extraCatalog: 5, data: mixedData(2 * 1024 * 1024, 32), present: (s) => Math.floor(s / 64) % 2 === 1 }),
  },
  {
    name: 'v1 header, 512 KiB extents, disk not a multiple of the extent',
    file: 'v1.bochs',
    build: () =>
      buildBochs({ version: 0x00010000, diskSize: 3 * 1024 * 1024 + 7 * S, extentSize: 512 * 1024, data: mixedData(3 * 1024 * 1024 + 7 * S, 33), present: (s) => s < 100 || (s > 3000 && s < 4000) || s % 97 === 0 }),
  },
  {
    name: 'v2, 512-byte extents, fully written',
    file: 'v2-512.bochs',
    build: () => buildBochs({ diskSize: 64 * S, extentSize: 512, data: mixedData(64 * S, 34), present: () => true }),
  },
  {
    name: 'v2, nothing written',
    file: 'v2-empty.bochs',
    build: () => buildBochs({ diskSize: 8 * 1024 * 1024, extentSize: 65536, data: new Uint8Array(8 * 1024 * 1024), present: () => false }),
  },
]);

readonlyBadCli('bochs', [
  { name: 'catalog too large', file: 'cat.bochs', qemuFails: true, image: () => buildBochs({ diskSize: 65536, extentSize: 4096, data: mixedData(65536, 50), present: () => true, tamper: { header: (h) => void (h.catalog = 0x200000) } }).image },
  { name: 'extent size not a power of two', file: 'ext.bochs', qemuFails: true, image: () => buildBochs({ diskSize: 65536, extentSize: 4096, data: mixedData(65536, 51), present: () => true, tamper: { header: (h) => void (h.extent = 5000) } }).image },
  { name: 'catalog entry past the end of the file', file: 'eof.bochs', image: () => buildBochs({ diskSize: 65536, extentSize: 4096, data: mixedData(65536, 52), present: () => true, tamper: { catalog: (c) => void (c[0] = 999999) } }).image },
]);
