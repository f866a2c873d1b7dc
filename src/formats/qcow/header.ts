/**
 * The qcow (version 1) header and tables: one parser and one serializer
 * each. Field names as QEMU's block/qcow.c QCowHeader.
 *
 * Header (big-endian, 48 bytes):
 *
 *   0   magic                u32  'QFI\xfb'
 *   4   version              u32  1
 *   8   backing_file_offset  u64  0 when there is no backing file
 *   16  backing_file_size    u32
 *   20  mtime                u32
 *   24  size                 u64  virtual size in bytes
 *   32  cluster_bits         u8   9 .. 16
 *   33  l2_bits              u8   6 .. 13 (entries per L2 table, log2)
 *   34  padding              u16
 *   36  crypt_method         u32  0 none, 1 AES
 *   40  l1_table_offset      u64
 *
 * The L1 table follows (big-endian u64 L2 table offsets, 0 = none). An L2
 * entry is 0 (unallocated), a cluster offset, or, with bit 63 set, a
 * compressed cluster: bits 0 .. 62-cluster_bits hold its offset and the
 * cluster_bits bits above them its compressed size in bytes (raw deflate).
 */
import { setU64be, u64be, view } from '../on-disk.js';

export const QCOW1_MAGIC = 0x514649fb;
export const QCOW1_VERSION = 1;
export const QCOW1_HEADER_BYTES = 48;
export const QCOW1_CRYPT_NONE = 0;
export const QCOW1_CRYPT_AES = 1;
/** Bit 63 of an L2 entry: the cluster is compressed. */
const QCOW1_OFLAG_COMPRESSED = 2 ** 63;

export interface QcowHeader {
  magic: number;
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  mtime: number;
  size: number;
  clusterBits: number;
  l2Bits: number;
  cryptMethod: number;
  l1TableOffset: number;
}

export function parseQcowHeader(b: Uint8Array): QcowHeader {
  const dv = view(b);
  return {
    magic: dv.getUint32(0),
    version: dv.getUint32(4),
    backingFileOffset: u64be(dv, 8),
    backingFileSize: dv.getUint32(16),
    mtime: dv.getUint32(20),
    size: u64be(dv, 24),
    clusterBits: b[32]!,
    l2Bits: b[33]!,
    cryptMethod: dv.getUint32(36),
    l1TableOffset: u64be(dv, 40),
  };
}

export function serializeQcowHeader(h: QcowHeader): Uint8Array {
  const b = new Uint8Array(QCOW1_HEADER_BYTES);
  const dv = view(b);
  dv.setUint32(0, h.magic);
  dv.setUint32(4, h.version);
  setU64be(dv, 8, h.backingFileOffset);
  dv.setUint32(16, h.backingFileSize);
  dv.setUint32(20, h.mtime);
  setU64be(dv, 24, h.size);
  b[32] = h.clusterBits;
  b[33] = h.l2Bits;
  dv.setUint32(36, h.cryptMethod);
  setU64be(dv, 40, h.l1TableOffset);
  return b;
}

/** An L1 table (or part of one) as stored: big-endian u64 L2 table offsets. */
export function serializeQcowL1(l1: ArrayLike<number>): Uint8Array {
  const b = new Uint8Array(l1.length * 8);
  const dv = view(b);
  for (let i = 0; i < l1.length; i++) setU64be(dv, i * 8, l1[i]!);
  return b;
}

/** One L2 entry, decoded. */
export type QcowL2Entry =
  | { kind: 'unallocated' }
  | { kind: 'normal'; offset: number }
  | { kind: 'compressed'; offset: number; size: number };

/**
 * Decodes the L2 entry whose big-endian halves are `hi` and `lo`.
 * Compressed: size = (entry >> (63 - cluster_bits)) & (cluster_size - 1),
 * offset = entry & ((1 << (63 - cluster_bits)) - 1).
 */
export function parseQcowL2Entry(hi: number, lo: number, clusterBits: number): QcowL2Entry {
  if (hi === 0 && lo === 0) return { kind: 'unallocated' };
  if (hi & 0x80000000) {
    const offsetBitsHi = 63 - clusterBits - 32; // offset bits held in `hi`
    const offset = (hi & ((1 << offsetBitsHi) - 1)) * 0x100000000 + (lo >>> 0);
    const size = (hi >>> offsetBitsHi) & ((1 << clusterBits) - 1);
    return { kind: 'compressed', offset, size };
  }
  return { kind: 'normal', offset: hi * 0x100000000 + (lo >>> 0) };
}

/** One L2 entry as stored (8 bytes, big-endian). Compressed: size in the cluster_bits bits above the offset's 63 - cluster_bits bits. */
export function serializeQcowL2Entry(e: QcowL2Entry, clusterBits: number): Uint8Array {
  const b = new Uint8Array(8);
  if (e.kind === 'unallocated') return b;
  const dv = view(b);
  if (e.kind === 'normal') {
    setU64be(dv, 0, e.offset);
    return b;
  }
  const offsetBitsHi = 63 - clusterBits - 32;
  const hi = Math.floor(e.offset / 0x100000000);
  dv.setUint32(0, (QCOW1_OFLAG_COMPRESSED / 0x100000000 + e.size * 2 ** offsetBitsHi + hi) >>> 0);
  dv.setUint32(4, e.offset % 0x100000000);
  return b;
}
