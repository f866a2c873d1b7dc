/**
 * cloop V2.0 on-disk structures (the Linux compressed loop device, as QEMU reads it).
 *
 *   0     preamble[128]   a shell script that mounts the image ("#!/bin/sh\n#V2.0 Format\n...")
 *   128   block_size      u32 big-endian, uncompressed bytes per block
 *   132   num_blocks      u32 big-endian
 *   136   offsets[num_blocks + 1]  u64 big-endian, file offset of each compressed block;
 *                         block i is the zlib stream in [offsets[i], offsets[i + 1])
 *
 * Every block inflates to exactly block_size bytes. cloop 3.x/4.x moved the
 * offset table to the end of the file with another entry encoding; QEMU reads
 * only V2.0, and so do we.
 */
import { Struct } from '../struct.js';

export const CLOOP_PREAMBLE_V2 = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';
export const CLOOP_PREAMBLE_SIZE = 128;
/** QEMU's MAX_BLOCK_SIZE: the largest block_size (and half the largest compressed block). */
export const CLOOP_MAX_BLOCK_SIZE = 64 * 1024 * 1024;
/** The most blocks whose (num_blocks + 1) * 8 table size fits in 32 bits, QEMU's cap on num_blocks. */
export const CLOOP_MAX_NUM_BLOCKS = Math.floor((0xffffffff - 1) / 8);
/** QEMU's cap on the offset table (512 MiB, enough for 16 TiB at 256 KiB blocks). */
export const CLOOP_MAX_OFFSETS_BYTES = 512 * 1024 * 1024;

export interface CloopHead {
  preamble: Uint8Array;
  block_size: number;
  num_blocks: number;
}

export const CLOOP_HEAD = new Struct<CloopHead>('cloop header', 136, [
  { name: 'preamble', type: 'bytes', offset: 0, length: CLOOP_PREAMBLE_SIZE },
  { name: 'block_size', type: 'u32be', offset: 128 },
  { name: 'num_blocks', type: 'u32be', offset: 132 },
]);

/** One entry of the offset table. */
export const CLOOP_OFFSET = new Struct<{ offset: number }>('cloop offset', 8, [{ name: 'offset', type: 'u64be', offset: 0 }]);

/** File offset of the offset table. */
export const CLOOP_OFFSETS_START = CLOOP_HEAD.size;

export function parseOffsets(buf: Uint8Array, count: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = CLOOP_OFFSET.parse(buf, i * CLOOP_OFFSET.size).offset;
  return out;
}

export function serializeOffsets(offsets: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(offsets.length * CLOOP_OFFSET.size);
  for (let i = 0; i < offsets.length; i++) CLOOP_OFFSET.serialize({ offset: offsets[i]! }, out, i * CLOOP_OFFSET.size);
  return out;
}

/** The preamble's version line, e.g. "V2.0", or null when it has none. */
export function preambleVersion(preamble: Uint8Array): string | null {
  const text = new TextDecoder('latin1').decode(preamble);
  const m = /\n#(V\d+\.\d+) Format\n/.exec(text);
  return m ? m[1]! : null;
}
