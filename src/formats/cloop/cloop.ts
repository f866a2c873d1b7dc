/**
 * The `cloop` format driver (read-only), as QEMU's block/cloop.c reads it.
 *
 * Probe: the V2.0 preamble scores 2 (just above raw), as in QEMU. Open checks
 * QEMU's limits before allocating anything (block_size a non-zero multiple of
 * 512 and at most 64 MiB, the offset table at most 512 MiB and inside the
 * file, offsets never going backwards, no compressed block over 128 MiB), in
 * QEMU's order. A block whose offsets point past the end of the file fails
 * when it is read (QEMU reads zeros there and fails to inflate), with an
 * error naming the offset-table entry. Reads inflate one block at a time into a one-block
 * cache (chunk-cache.ts), so memory stays at one block plus one compressed
 * block. QEMU has no block-status callback for cloop, so every range is
 * reported as data, which is what `qemu-img map` prints.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread } from '../../block/io.js';
import { BDRV_BLOCK_DATA } from '../../block/status.js';
import { ChunkCache } from '../chunk-cache.js';
import { requireReadOnly } from '../read-only.js';
import { inflateExact } from '../../codecs/zlib-exact.js';
import {
  CLOOP_HEAD,
  CLOOP_MAX_BLOCK_SIZE,
  CLOOP_MAX_NUM_BLOCKS,
  CLOOP_MAX_OFFSETS_BYTES,
  CLOOP_OFFSETS_START,
  parseOffsets,
  preambleVersion,
} from './header.js';
import { cloopProbe } from './probe.js';

interface CloopState {
  blockSize: number;
  numBlocks: number;
  offsets: Float64Array;
  cache: ChunkCache;
}

const SECTOR = 512;

function corrupt(image: string, what: string, qemuMessage?: string): BlockError {
  return new BlockError('ECORRUPT', `${image}: cloop ${what}`, qemuMessage === undefined ? undefined : { qemuMessage });
}

async function readBlock(bs: BlockNode, s: CloopState, block: number): Promise<Uint8Array> {
  const start = s.offsets[block]!;
  const bytes = s.offsets[block + 1]! - start;
  const end = bs.file!.node.totalBytes;
  if (start + bytes > end) {
    const entry = start > end ? block : block + 1;
    throw new BlockError('EIO', `${bs.filename}: cloop offset table entry ${entry} at ${hex(CLOOP_OFFSETS_START + entry * 8)}: block ${block} at ${hex(start)} (${bytes} bytes) runs past the end of the file (${end} bytes)`);
  }
  const compressed = new Uint8Array(bytes);
  await bdrvPread(bs.file!.node, start, bytes, compressed);
  const out = new Uint8Array(s.blockSize);
  const why = inflateExact(compressed, out);
  if (why) throw new BlockError('EIO', `${bs.filename}: cloop block ${block} at ${hex(start)} (${bytes} bytes): ${why}`);
  return out;
}

export const cloopDriver: BlockDriver = {
  name: 'cloop',
  kind: 'format',

  probe: cloopProbe,

  async open(bs) {
    requireReadOnly(bs, 'cloop');
    const image = bs.filename;
    const file = bs.file!.node;
    const fileSize = file.totalBytes;
    if (fileSize < CLOOP_HEAD.size) throw corrupt(image, `header: the file is ${fileSize} bytes, shorter than the ${CLOOP_HEAD.size}-byte header`);
    const hbuf = new Uint8Array(CLOOP_HEAD.size);
    await bdrvPread(file, 0, hbuf.length, hbuf);
    const h = CLOOP_HEAD.parse(hbuf);

    const version = preambleVersion(h.preamble);
    if (version !== null && version !== 'V2.0') {
      throw new BlockError('ENOTSUP', `${image}: cloop ${version} images are not supported (only V2.0, as QEMU)`);
    }
    const at = (f: 'block_size' | 'num_blocks') => hex(CLOOP_HEAD.offsetOf(f));
    if (h.block_size === 0) throw new BlockError('EINVAL', `${image}: cloop header: block_size at ${at('block_size')} cannot be zero`, {
        qemuMessage: 'block_size cannot be zero',
      });
    if (h.block_size % SECTOR) {
      throw new BlockError('EINVAL', `${image}: cloop header: block_size ${h.block_size} at ${at('block_size')} must be a multiple of 512`, {
        qemuMessage: `block_size ${h.block_size} must be a multiple of 512`,
      });
    }
    if (h.block_size > CLOOP_MAX_BLOCK_SIZE) {
      throw new BlockError('EINVAL', `${image}: cloop header: block_size ${h.block_size} at ${at('block_size')} must be ${CLOOP_MAX_BLOCK_SIZE >> 20} MB or less`, {
        qemuMessage: `block_size ${h.block_size} must be ${CLOOP_MAX_BLOCK_SIZE >> 20} MB or less`,
      });
    }
    if (h.num_blocks > CLOOP_MAX_NUM_BLOCKS) {
      throw new BlockError('EINVAL', `${image}: cloop header: num_blocks ${h.num_blocks} at ${at('num_blocks')} must be ${CLOOP_MAX_NUM_BLOCKS} or less`, {
        qemuMessage: `n_blocks ${h.num_blocks} must be ${CLOOP_MAX_NUM_BLOCKS} or less`,
      });
    }
    const tableBytes = (h.num_blocks + 1) * 8;
    if (tableBytes > CLOOP_MAX_OFFSETS_BYTES) {
      throw new BlockError('EINVAL', `${image}: cloop header: num_blocks ${h.num_blocks} at ${at('num_blocks')} needs too many offsets, try increasing block size`, {
        qemuMessage: 'image requires too many offsets, try increasing block size',
      });
    }
    if (CLOOP_OFFSETS_START + tableBytes > fileSize) {
      throw corrupt(image, `offset table at ${hex(CLOOP_OFFSETS_START)} (${h.num_blocks + 1} entries) runs past the end of the file (${fileSize} bytes)`);
    }
    const tbuf = new Uint8Array(tableBytes);
    await bdrvPread(file, CLOOP_OFFSETS_START, tableBytes, tbuf);
    const offsets = parseOffsets(tbuf, h.num_blocks + 1);
    // QEMU's order: each entry against the one before it (never going back, no
    // compressed block over 128 MiB); an offset past the end of the file is only
    // found when that block is read, as QEMU reads zeros there and fails to inflate.
    for (let i = 1; i <= h.num_blocks; i++) {
      const where = hex(CLOOP_OFFSETS_START + i * 8);
      if (offsets[i]! < offsets[i - 1]!) {
        throw corrupt(
          image,
          `offset table entry ${i} at ${where}: offsets not monotonically increasing (${hex(offsets[i]!)} < ${hex(offsets[i - 1]!)})`,
          `offsets not monotonically increasing at index ${i}, image file is corrupt`,
        );
      }
      if (offsets[i]! - offsets[i - 1]! > 2 * CLOOP_MAX_BLOCK_SIZE) {
        throw corrupt(
          image,
          `offset table entry ${i} at ${where}: invalid compressed block size ${offsets[i]! - offsets[i - 1]!}`,
          `invalid compressed block size at index ${i}, image file is corrupt`,
        );
      }
    }
    bs.opaque = { blockSize: h.block_size, numBlocks: h.num_blocks, offsets, cache: new ChunkCache() } satisfies CloopState;
    bs.totalBytes = h.num_blocks * h.block_size;
    bs.limits = { ...bs.limits, requestAlignment: SECTOR };
  },

  async close(bs) {
    bs.state<CloopState>().cache.clear();
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<CloopState>();
    let done = 0;
    while (done < bytes) {
      const pos = offset + done;
      const block = Math.floor(pos / s.blockSize);
      const inBlock = pos - block * s.blockSize;
      const n = Math.min(bytes - done, s.blockSize - inBlock);
      await s.cache.with(
        block,
        () => readBlock(bs, s, block),
        (data) => buf.set(data.subarray(inBlock, inBlock + n), done),
      );
      done += n;
    }
  },

  async blockStatus(_bs, _wantZero, _offset, bytes) {
    // QEMU has no block-status callback for cloop: the generic answer is "data".
    return { status: BDRV_BLOCK_DATA, pnum: bytes };
  },

  async getAllocatedFileSize(bs) {
    const file = bs.file!.node;
    return file.driver.getAllocatedFileSize?.(file);
  },
};


