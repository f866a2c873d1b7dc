/**
 * Reading refcounts (the read-only half; the write path adds allocation).
 *
 * The refcount table (refcount_table_clusters clusters of 64-bit entries)
 * points at refcount blocks, each one cluster of refcount_bits-wide entries,
 * one per host cluster. The table was bounds-checked at open (validate.ts);
 * it is loaded on first use.
 */
import { BlockError, hex } from '../../block/errors.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPread } from '../../block/io.js';
import type { Qcow2State } from './state.js';

/** Offsets of the refcount blocks (0 = unallocated), bits 9-63 of each entry. */
export async function loadRefcountTable(s: Qcow2State): Promise<Float64Array> {
  if (s.refcountTable) return s.refcountTable;
  const h = s.header;
  const bytes = h.refcountTableClusters * s.clusterSize;
  const raw = new Uint8Array(bytes);
  await bdrvPread(s.file, h.refcountTableOffset, bytes, raw);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const table = new Float64Array(bytes / 8);
  for (let i = 0; i < table.length; i++) {
    table[i] = dv.getUint32(i * 8) * 0x100000000 + ((dv.getUint32(i * 8 + 4) & 0xfffffe00) >>> 0);
  }
  s.refcountTable = table;
  return table;
}

/** Refcount entries per refcount block. */
export function refblockEntries(s: Qcow2State): number {
  return (s.clusterSize * 8) / s.refcountBits;
}

/** Counts the nonzero entries of a refcount block among its first `limit`. */
function countNonzero(block: Uint8Array, bits: number, limit: number): number {
  let n = 0;
  if (bits >= 8) {
    const w = bits / 8;
    for (let i = 0; i < limit; i++) {
      const p = i * w;
      for (let k = 0; k < w; k++) {
        if (block[p + k] !== 0) {
          n++;
          break;
        }
      }
    }
    return n;
  }
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  for (let i = 0; i < limit; i++) {
    const byte = block[Math.floor(i / perByte)]!;
    // Sub-byte refcounts are stored least significant first within a byte.
    if ((byte >>> ((i % perByte) * bits)) & mask) n++;
  }
  return n;
}

/**
 * Host clusters [0, endCluster) with a nonzero refcount, counting stops once
 * `threshold` is reached (QEMU's qcow2_detect_metadata_preallocation loop).
 */
export async function countReferencedClusters(s: Qcow2State, endCluster: number, threshold: number): Promise<number> {
  const table = await loadRefcountTable(s);
  const per = refblockEntries(s);
  const block = allocBuffer(s.clusterSize);
  let count = 0;
  try {
    for (let i = 0; i < table.length && i * per < endCluster && count < threshold; i++) {
      const off = table[i]!;
      if (off === 0) continue;
      if (off % s.clusterSize !== 0) {
        throw new BlockError('ECORRUPT', `${s.image}: Refblock offset ${hex(off)} unaligned (reftable index ${hex(i)})`);
      }
      if (off + s.clusterSize > s.file.totalBytes) {
        throw new BlockError('ECORRUPT', `${s.image}: refcount block at ${hex(off)} (reftable index ${hex(i)}) extends beyond the end of the file`);
      }
      await bdrvPread(s.file, off, s.clusterSize, block);
      count += countNonzero(block, s.refcountBits, Math.min(per, endCluster - i * per));
    }
  } finally {
    freeBuffer(block);
  }
  return count;
}

/** QEMU's qcow2_detect_metadata_preallocation: far more refcounted clusters than the file really stores. */
export async function detectMetadataPreallocation(s: Qcow2State): Promise<boolean> {
  const fileNode = s.file;
  const realAllocation = await fileNode.driver.getAllocatedFileSize?.(fileNode);
  if (realAllocation === undefined || realAllocation < 0) return false;
  const realClusters = Math.floor(realAllocation / s.clusterSize);
  const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
  const endCluster = Math.ceil(fileNode.totalBytes / s.clusterSize);
  return (await countReferencedClusters(s, endCluster, threshold)) >= threshold;
}
