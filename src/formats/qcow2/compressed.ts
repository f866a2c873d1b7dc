/**
 * Compressed clusters: the two compression codecs (zlib, zstd). The L2
 * descriptor that says where a compressed cluster lies (host byte offset and
 * 512-byte sector count) is decoded and encoded by l2-entry.ts. The sector
 * count rounds up, so the bytes read usually run into the next compressed
 * cluster: both codecs must stop at the end of their own stream and ignore
 * what follows (QEMU accepts "output full" as success for the same reason).
 *
 * zlib here is RAW deflate (no zlib header); zstd is one or more frames.
 */
import { inflateRaw } from 'pako';
import { decompress as zstdDecompress } from 'fzstd';
import { deflateRaw4k } from '../../codecs/deflate.js';
import { QCOW2_COMPRESSION_TYPE_ZSTD } from './header.js';
import { deflatePool } from '../../codecs/deflate-pool.js';

/** The descriptor codec lives with the other entry codecs; re-exported for existing callers. */
export { parseCompressedDescriptor, QCOW2_COMPRESSED_SECTOR_SIZE, type CompressedDescriptor } from './l2-entry.js';

/** Length of the zstd frame at the start of `b` (magic, header, blocks, checksum), or -1 if it is not one. */
function zstdFrameLength(b: Uint8Array): number {
  if (b.length < 4) return -1;
  const magic = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  if (magic >>> 4 === 0x184d2a5) {
    // Skippable frame: 4-byte little-endian length follows.
    if (b.length < 8) return -1;
    return 8 + ((b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0);
  }
  if (magic !== 0xfd2fb528 || b.length < 5) return -1;
  const fhd = b[4]!;
  const single = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const dictFlag = fhd & 3;
  const checksum = (fhd >> 2) & 1;
  let p = 5 + (single ? 0 : 1) + [0, 1, 2, 4][dictFlag]! + [single, 2, 4, 8][fcsFlag]!;
  for (;;) {
    if (p + 3 > b.length) return -1;
    const bh = b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) return -1;
    p += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  p += checksum ? 4 : 0;
  return p <= b.length ? p : -1;
}

/**
 * Decompresses one cluster from `input` into `out` (exactly one cluster).
 * Returns false when the data is not a valid stream or yields fewer bytes.
 */
export function decompressCluster(compressionType: number, input: Uint8Array, out: Uint8Array): boolean {
  try {
    if (compressionType === QCOW2_COMPRESSION_TYPE_ZSTD) {
      let filled = 0;
      let rest = input;
      while (filled < out.length) {
        const n = zstdFrameLength(rest);
        if (n < 0) return false;
        const frame = rest.subarray(0, n);
        rest = rest.subarray(n);
        if ((frame[0]! & 0xf0) === 0x50 && frame[3] === 0x18) continue; // skippable
        const got = zstdDecompress(frame);
        const k = Math.min(got.length, out.length - filled);
        out.set(got.subarray(0, k), filled);
        filled += k;
      }
      return true;
    }
    const got = inflateRaw(input);
    if (!(got instanceof Uint8Array) || got.length < out.length) return false;
    out.set(got.subarray(0, out.length));
    return true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------- compressing

// Deflate comes from src/codecs/deflate.ts, where environments plug in a faster one.

type ZstdModule = { init(): Promise<void>; compress(buf: Uint8Array, level?: number): Uint8Array };
let zstdReady: Promise<ZstdModule> | undefined;

/** Loads the zstd encoder (wasm) on the first compressed write of a zstd image. */
function loadZstd(): Promise<ZstdModule> {
  zstdReady ??= (async () => {
    // A literal specifier so vite bundles the web build (and its zstd.wasm) into the worker.
    const mod = (await import('@bokuweb/zstd-wasm')) as unknown as Partial<ZstdModule> & { default?: ZstdModule };
    const z = (mod.compress ? mod : mod.default) as ZstdModule;
    await z.init();
    return z;
  })();
  return zstdReady;
}

/**
 * Compresses one cluster as QEMU's qcow2_co_compress does: zlib as raw
 * deflate with a 4 KiB window (QEMU inflates with windowBits -12, so a larger
 * window would make clusters it cannot read), zstd as one frame. Returns null
 * when the result would not be smaller than `limit` bytes (QEMU then writes
 * the cluster uncompressed).
 */
export async function compressCluster(compressionType: number, input: Uint8Array, limit: number): Promise<Uint8Array | null> {
  let out: Uint8Array;
  if (compressionType === QCOW2_COMPRESSION_TYPE_ZSTD) {
    const z = await loadZstd();
    out = z.compress(input, 3);
  } else {
    // A worker pool, when one is installed, lets parallel callers use every core.
    // A pool whose workers cannot start or died falls back to this thread (same codec, same bytes).
    const pool = deflatePool();
    if (pool) return pool.deflateRaw4k(input, limit).catch(() => fitting(deflateRaw4k(input), limit));
    out = deflateRaw4k(input);
  }
  return fitting(out, limit);
}

const fitting = (out: Uint8Array, limit: number): Uint8Array | null => (out.length <= limit ? out : null);

/** How many clusters compressCluster compresses at once: the deflate pool's threads for zlib, one for zstd. */
export function compressThreads(compressionType: number): number {
  return compressionType === QCOW2_COMPRESSION_TYPE_ZSTD ? 1 : (deflatePool()?.threads ?? 1);
}
