/**
 * The bitmap table of a persistent dirty bitmap (docs/interop/qcow2.txt,
 * "Bitmap table"): one big-endian u64 per cluster of bitmap data.
 *
 *   bit  0      all-ones flag: with offset 0, every bit of this data cluster is 1
 *                (with offset 0 and the flag clear, every bit is 0)
 *   bits 1..8   reserved, zero
 *   bits 9..55  host offset of the data cluster (cluster aligned), 0 = none
 *   bits 56..63 reserved, zero
 *
 * A data cluster holds cluster_size * 8 bits; bit n of the bitmap is bit
 * (n % 8) of byte n / 8 (least significant first), and covers guest bytes
 * [n * granularity, (n + 1) * granularity).
 */
import { be } from './header.js';

/** Bits 1..8 of the low half, 24..31 of the high half. */
const RESERVED_LO = 0x000001fe;
const RESERVED_HI = 0xff000000;
const FLAG_ALL_ONES = 1;

/** One decoded bitmap table entry. */
export interface BitmapTableEntry {
  /** Host offset of the data cluster, 0 when the cluster is not stored. */
  offset: number;
  /** With offset 0: the cluster reads as all ones. */
  allOnes: boolean;
}

/** Why entry `i` of `table` is invalid (QEMU's check_table_entry), or null. */
export function bitmapTableEntryProblem(table: Uint8Array, i: number, clusterSize: number): string | null {
  const hi = be.u32(table, i * 8);
  const lo = be.u32(table, i * 8 + 4);
  if (hi & RESERVED_HI || lo & RESERVED_LO) return 'reserved bits set';
  const offset = (hi >>> 0) * 2 ** 32 + ((lo >>> 0) - (lo & 0x1ff));
  if (offset !== 0) {
    if (lo & FLAG_ALL_ONES) return 'all-ones flag set on an entry with an offset';
    if (offset % clusterSize !== 0) return `data cluster offset 0x${offset.toString(16)} is not cluster aligned`;
  }
  return null;
}

/** Decodes entry `i`; the caller checked it with bitmapTableEntryProblem. */
export function parseBitmapTableEntry(table: Uint8Array, i: number): BitmapTableEntry {
  const hi = be.u32(table, i * 8) >>> 0;
  const lo = be.u32(table, i * 8 + 4) >>> 0;
  const offset = hi * 2 ** 32 + (lo - (lo & 0x1ff));
  return { offset, allOnes: offset === 0 && (lo & FLAG_ALL_ONES) !== 0 };
}

/** Serializes a table of data cluster offsets (0 = an all-zeros cluster not stored). */
export function serializeBitmapTable(offsets: readonly number[]): Uint8Array {
  const out = new Uint8Array(offsets.length * 8);
  offsets.forEach((off, i) => be.put64(out, i * 8, off));
  return out;
}
