/**
 * Refcount table entries and refcount block entries: the one codec
 * (docs/interop/qcow2.txt, "Host cluster management").
 *
 * Refcount table entry (8 bytes, big-endian):
 *
 *    63                                                   9 8        0
 *   +------------------------------------------------------+----------+
 *   |  offset of the refcount block (cluster aligned)      | reserved |
 *   +------------------------------------------------------+----------+
 *   0 means "no block": every cluster it would describe has refcount 0.
 *
 * Refcount block: one cluster of refcount_bits-wide entries
 * (refcount_bits = 1 << refcount_order, 1..64), one per host cluster.
 *
 *   refcount_bits >= 8: each entry is a big-endian integer of that width
 *     byte  0        1        2        3
 *          [ entry 0 (16 bits)][ entry 1 (16 bits)]        (refcount_bits 16)
 *
 *   refcount_bits < 8: several entries share a byte, the first one in the
 *   least significant bits
 *     bit   7  6  5  4  3  2  1  0
 *          [e3  ][e2  ][e1  ][e0  ]                         (refcount_bits 2)
 *
 * A 64-bit refcount is read as a number; values above 2^53 are not exact,
 * which is why refcountLimit caps the largest refcount this code writes.
 */
import { bufferIsZero } from '../../block/buffers.js';
import { be } from './header.js';

/** Offset of a refcount block from its table entry's halves (reserved bits 0..8 dropped). */
export function reftableEntryOffset(hi: number, lo: number): number {
  return hi * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
}

/** Reserved bits 0..8 of a refcount table entry's low half (must be zero). */
export function reftableEntryReserved(lo: number): number {
  return lo & 0x1ff;
}

/** Offset of refcount block `i` of a raw (on-disk) refcount table. */
export function reftableEntryAt(table: Uint8Array, i: number): number {
  return reftableEntryOffset(be.u32(table, i * 8), be.u32(table, i * 8 + 4));
}

/** Sets entry `i` of a raw refcount table to `offset`. */
export function putReftableEntry(table: Uint8Array, i: number, offset: number): void {
  be.put64(table, i * 8, offset);
}

/**
 * Decodes a raw refcount table into block offsets (0 = no block). A table is
 * sized for growth, so its tail is mostly empty (a small image's 64 KiB table
 * has one entry in 8192): the zero test finds the tail 4 KiB at a time
 * (in place when `raw` came from allocBuffer), and only the entries before it
 * are decoded. Every qcow2 block-status caller decodes the table once
 * (detectMetadataPreallocation), before the first copy is compiled.
 */
export function decodeReftable(raw: Uint8Array): Float64Array {
  const n = Math.floor(raw.length / 8);
  const table = new Float64Array(n);
  let used = n * 8;
  while (used > 0) {
    const from = Math.max(0, used - 4096);
    if (!bufferIsZero(raw.subarray(from, used))) break;
    used = from;
  }
  for (let i = 0, end = Math.ceil(used / 8); i < end; i++) table[i] = reftableEntryAt(raw, i);
  return table;
}

/** Refcount entries in one refcount block. */
export function refcountsPerBlock(clusterSize: number, refcountBits: number): number {
  return (clusterSize * 8) / refcountBits;
}

/** Largest refcount an entry of `refcountBits` can hold (capped to what a JS number holds exactly). */
export function refcountLimit(refcountBits: number): number {
  return refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits - 1;
}

/** Entry `i` of a refcount block of `bits`-wide entries. */
export function getRefcountEntry(block: Uint8Array, bits: number, i: number): number {
  switch (bits) {
    case 8:
      return block[i]!;
    case 16:
      return (block[i * 2]! << 8) | block[i * 2 + 1]!;
    case 32:
      return be.u32(block, i * 4);
    case 64:
      return be.u32(block, i * 8) * 0x100000000 + be.u32(block, i * 8 + 4);
  }
  const bit = i * bits;
  return (block[bit >>> 3]! >>> (bit & 7)) & ((1 << bits) - 1);
}

/** Entry `i` as decimal text, exact for 64-bit entries past 2^53 too (check prints the stored value). */
export function refcountEntryText(block: Uint8Array, bits: number, i: number): string {
  if (bits !== 64) return String(getRefcountEntry(block, bits, i));
  return ((BigInt(be.u32(block, i * 8)) << 32n) | BigInt(be.u32(block, i * 8 + 4))).toString();
}

/** Sets entry `i` of a refcount block to `v` (0 <= v <= refcountLimit(bits)); neighbours are kept. */
export function setRefcountEntry(block: Uint8Array, bits: number, i: number, v: number): void {
  switch (bits) {
    case 8:
      block[i] = v;
      return;
    case 16:
      block[i * 2] = v >>> 8;
      block[i * 2 + 1] = v;
      return;
    case 32:
      be.put32(block, i * 4, v);
      return;
    case 64:
      be.put64(block, i * 8, v);
      return;
  }
  const bit = i * bits;
  const mask = ((1 << bits) - 1) << (bit & 7);
  const p = bit >>> 3;
  block[p] = (block[p]! & ~mask) | ((v << (bit & 7)) & mask);
}

/**
 * Counts the nonzero entries among the first `limit` of a refcount block.
 * Whole-byte widths test each entry as one typed-array element (whether an
 * entry is zero does not depend on byte order), so the loop stays short in
 * the interpreter, where it runs at a convert's first block-status call.
 */
export function countNonzeroRefcounts(block: Uint8Array, bits: number, limit: number): number {
  let n = 0;
  if (bits >= 8 && (block.byteOffset & 7) === 0) {
    const width = Math.min(bits, 32) / 8;
    const step = bits / 8 / width; // elements per entry: 2 for 64-bit entries, else 1
    const count = Math.floor(block.length / width);
    const v = width === 1 ? block : width === 2 ? new Uint16Array(block.buffer, block.byteOffset, count) : new Uint32Array(block.buffer, block.byteOffset, count);
    if (step === 1) {
      for (let i = 0; i < limit; i++) if (v[i] !== 0) n++;
    } else {
      for (let i = 0; i < limit; i++) if ((v[2 * i]! | v[2 * i + 1]!) !== 0) n++;
    }
    return n;
  }
  for (let i = 0; i < limit; i++) if (getRefcountEntry(block, bits, i) !== 0) n++;
  return n;
}
