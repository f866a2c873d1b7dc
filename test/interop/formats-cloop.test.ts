/**
 * cloop V2.0 images built from the format's layout (qemu-img cannot create
 * them) with several block sizes, read by blocktab and by qemu-img.
 */
import { buildCloop } from '../helpers/readonly-images.js';
import { mixedData, readonlyBadCli, readonlyDifferential } from './readonly-formats-diff.js';

readonlyDifferential('cloop', [
  { name: '512-byte blocks', file: 'b512.cloop', build: () => buildCloop({ blockSize: 512, data: mixedData(37 * 512, 21) }) },
  { name: '4 KiB blocks, last block partial', file: 'b4k.cloop', build: () => buildCloop({ blockSize: 4096, data: mixedData(100 * 4096 + 1000, 22) }) },
  { name: '64 KiB blocks, zero blocks between data', file: 'b64k.cloop', build: () => {
    const d = mixedData(40 * 65536, 23);
    d.fill(0, 5 * 65536, 30 * 65536);
    return buildCloop({ blockSize: 65536, data: d });
  } },
  { name: '256 KiB blocks (cloop default)', file: 'b256k.cloop', build: () => buildCloop({ blockSize: 256 * 1024, data: mixedData(3 * 256 * 1024, 24) }) },
  { name: 'no blocks', file: 'empty.cloop', build: () => buildCloop({ blockSize: 4096, data: new Uint8Array(0) }) },
]);

readonlyBadCli('cloop', [
  { name: 'offsets going backwards', file: 'back.cloop', qemuFails: true, image: () => buildCloop({ blockSize: 4096, data: mixedData(4 * 4096, 25), tamper: { offsets: (o) => void (o[2] = o[1]! - 8) } }).image },
  { name: 'block_size not a multiple of 512', file: 'bs.cloop', qemuFails: true, image: () => buildCloop({ blockSize: 4096, data: mixedData(4096, 26), tamper: { head: (h) => void (h.block_size = 4000) } }).image },
  { name: 'offset table past the end of the file', file: 'table.cloop', qemuFails: true, image: () => buildCloop({ blockSize: 4096, data: mixedData(4096, 27), tamper: { head: (h) => void (h.num_blocks = 5000) } }).image },
  { name: 'corrupt block (fails on read)', file: 'block.cloop', qemuFails: true, onRead: true, image: () => buildCloop({ blockSize: 4096, data: mixedData(3 * 4096, 28), tamper: { offsets: (o) => void (o[1] = o[1]! + 3) } }).image },
]);
