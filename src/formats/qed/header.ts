/**
 * QED on-disk structures (docs/interop/qed_spec.txt in QEMU): the header and
 * the L1/L2 tables — one parser and one serializer each.
 *
 * Header (little-endian, at offset 0):
 *
 *   0   magic                    u32  'QED\0'
 *   4   cluster_size             u32  power of two, 4 KiB .. 64 MiB
 *   8   table_size               u32  clusters per table, power of two, 1 .. 16
 *   12  header_size              u32  clusters of the header area
 *   16  features                 u64  QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE
 *   24  compat_features          u64
 *   32  autoclear_features       u64
 *   40  l1_table_offset          u64  bytes, cluster aligned
 *   48  image_size               u64  bytes, multiple of 512
 *   56  backing_filename_offset  u32  bytes, inside the header area
 *   60  backing_filename_size    u32
 *
 * Tables are table_size clusters of little-endian u64 offsets. An L1 entry is
 * 0 (no L2 table) or the offset of an L2 table; an L2 entry is 0
 * (unallocated: read the backing file), 1 (QED_ZERO_CLUSTER: zeros) or the
 * offset of a data cluster.
 */
import { setU64le, u64le, view } from '../on-disk.js';

export const QED_MAGIC = 0x00444551;
export const QED_HEADER_BYTES = 64;
export const QED_F_BACKING_FILE = 0x01;
export const QED_F_NEED_CHECK = 0x02;
export const QED_F_BACKING_FORMAT_NO_PROBE = 0x04;
export const QED_FEATURE_MASK = QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE;
export const QED_MIN_CLUSTER_SIZE = 4 * 1024;
export const QED_MAX_CLUSTER_SIZE = 64 * 1024 * 1024;
export const QED_DEFAULT_CLUSTER_SIZE = 64 * 1024;
export const QED_MIN_TABLE_SIZE = 1;
export const QED_MAX_TABLE_SIZE = 16;
export const QED_DEFAULT_TABLE_SIZE = 4;
export const QED_ZERO_CLUSTER = 1;

export interface QedHeader {
  magic: number;
  clusterSize: number;
  tableSize: number;
  headerSize: number;
  features: number;
  compatFeatures: number;
  autoclearFeatures: number;
  l1TableOffset: number;
  imageSize: number;
  backingFilenameOffset: number;
  backingFilenameSize: number;
}

export function parseQedHeader(b: Uint8Array): QedHeader {
  const dv = view(b);
  return {
    magic: dv.getUint32(0, true),
    clusterSize: dv.getUint32(4, true),
    tableSize: dv.getUint32(8, true),
    headerSize: dv.getUint32(12, true),
    features: u64le(dv, 16),
    compatFeatures: u64le(dv, 24),
    autoclearFeatures: u64le(dv, 32),
    l1TableOffset: u64le(dv, 40),
    imageSize: u64le(dv, 48),
    backingFilenameOffset: dv.getUint32(56, true),
    backingFilenameSize: dv.getUint32(60, true),
  };
}

export function serializeQedHeader(h: QedHeader): Uint8Array {
  const b = new Uint8Array(QED_HEADER_BYTES);
  const dv = view(b);
  dv.setUint32(0, h.magic, true);
  dv.setUint32(4, h.clusterSize, true);
  dv.setUint32(8, h.tableSize, true);
  dv.setUint32(12, h.headerSize, true);
  setU64le(dv, 16, h.features);
  setU64le(dv, 24, h.compatFeatures);
  setU64le(dv, 32, h.autoclearFeatures);
  setU64le(dv, 40, h.l1TableOffset);
  setU64le(dv, 48, h.imageSize);
  dv.setUint32(56, h.backingFilenameOffset, true);
  dv.setUint32(60, h.backingFilenameSize, true);
  return b;
}

/** A table (L1 or L2) as offsets; `b` holds table_size clusters. */
export function parseQedTable(b: Uint8Array): Float64Array {
  const dv = view(b);
  const n = b.length / 8;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = u64le(dv, i * 8);
  return out;
}

/** Serializes entries [first, first + count) of a table. */
export function serializeQedTable(t: Float64Array, first: number, count: number): Uint8Array {
  const b = new Uint8Array(count * 8);
  const dv = view(b);
  for (let i = 0; i < count; i++) setU64le(dv, i * 8, t[first + i]!);
  return b;
}

/** QEMU's qed_max_image_size: what one L1 table of L2 tables can map. */
export function qedMaxImageSize(clusterSize: number, tableSize: number): number {
  const entries = (tableSize * clusterSize) / 8;
  return entries * entries * clusterSize;
}
