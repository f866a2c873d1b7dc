/**
 * VHD (Virtual PC) on-disk structures: the hard disk footer, the dynamic
 * disk header and the block allocation table — one parser and one serializer
 * each, field names from Microsoft's "Virtual Hard Disk Image Format
 * Specification" (as QEMU's block/vpc.c names them).
 *
 * Hard disk footer (big-endian, 512 bytes; at the end of every image, and a
 * copy at offset 0 of dynamic images):
 *
 *   0   cookie              char[8]  "conectix"
 *   8   features            u32      2 (reserved bit always set)
 *   12  file_format_version u32      0x00010000
 *   16  data_offset         u64      dynamic header offset; all ones for fixed
 *   24  time_stamp          u32      seconds since 2000-01-01 00:00 UTC
 *   28  creator_app         char[4]  "vpc ", "qemu", "qem2", "win ", "d2v ", "tap\0", "CTXS"…
 *   32  creator_version     u32
 *   36  creator_host_os     char[4]  "Wi2k"
 *   40  original_size       u64
 *   48  current_size        u64      bytes
 *   56  disk_geometry       u16 cylinders, u8 heads, u8 sectors per track
 *   60  disk_type           u32      2 fixed, 3 dynamic, 4 differencing
 *   64  checksum            u32      one's complement of the byte sum (checksum field as 0)
 *   68  unique_id           uuid
 *   84  saved_state         u8
 *
 * Dynamic disk header (big-endian, 1024 bytes, at the footer's data_offset):
 *
 *   0    cookie             char[8]  "cxsparse"
 *   8    data_offset        u64      all ones
 *   16   table_offset       u64      block allocation table
 *   24   header_version     u32      0x00010000
 *   28   max_table_entries  u32
 *   32   block_size         u32      2 MiB by default
 *   36   checksum           u32
 *   40   parent_unique_id   uuid
 *   56   parent_time_stamp  u32
 *   64   parent_unicode_name, 576 parent_locator_entries (differencing disks only)
 *
 * Block allocation table: max_table_entries big-endian u32, each the sector
 * of a block's sector bitmap (the block's data follows the bitmap), or
 * 0xffffffff for an unallocated block.
 */
import { setU64be, u64be, view } from '../on-disk.js';

export const VHD_FOOTER_BYTES = 512;
export const VHD_DYN_HEADER_BYTES = 1024;
export const VHD_FIXED = 2;
export const VHD_DYNAMIC = 3;
export const VHD_DIFFERENCING = 4;
export const VHD_BAT_UNALLOCATED = 0xffffffff;
/** Seconds from the Unix epoch to 2000-01-01 00:00 UTC (VHD time stamps count from there). */
export const VHD_TIMESTAMP_BASE = 946684800;

export interface VhdFooter {
  cookie: string;
  features: number;
  fileFormatVersion: number;
  dataOffset: number;
  timeStamp: number;
  /** The four bytes, as a string of char codes (may contain NUL). */
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  checksum: number;
  uniqueId: Uint8Array;
  savedState: number;
}

export interface VhdDynHeader {
  cookie: string;
  dataOffset: number;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Uint8Array;
  parentTimeStamp: number;
  /** Bytes 64..1023 (parent name and locators), kept verbatim. */
  rest: Uint8Array;
}

const chars = (b: Uint8Array, off: number, n: number) => String.fromCharCode(...b.subarray(off, off + n));
const putChars = (b: Uint8Array, off: number, s: string, n: number) => {
  for (let i = 0; i < n; i++) b[off + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0;
};

/** The spec's checksum: one's complement of the sum of every byte, with the checksum field counted as zero. */
export function vhdChecksum(b: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < checksumOffset || i >= checksumOffset + 4) sum = (sum + b[i]!) >>> 0;
  return ~sum >>> 0;
}

export function parseVhdFooter(b: Uint8Array): VhdFooter {
  const dv = view(b);
  return {
    cookie: chars(b, 0, 8),
    features: dv.getUint32(8),
    fileFormatVersion: dv.getUint32(12),
    dataOffset: u64be(dv, 16),
    timeStamp: dv.getUint32(24),
    creatorApp: chars(b, 28, 4),
    creatorVersion: dv.getUint32(32),
    creatorHostOs: chars(b, 36, 4),
    originalSize: u64be(dv, 40),
    currentSize: u64be(dv, 48),
    cylinders: dv.getUint16(56),
    heads: b[58]!,
    sectorsPerTrack: b[59]!,
    diskType: dv.getUint32(60),
    checksum: dv.getUint32(64),
    uniqueId: b.slice(68, 84),
    savedState: b[84]!,
  };
}

/** Serializes the footer; the checksum is computed, not taken from `f`. */
export function serializeVhdFooter(f: VhdFooter): Uint8Array {
  const b = new Uint8Array(VHD_FOOTER_BYTES);
  const dv = view(b);
  putChars(b, 0, f.cookie, 8);
  dv.setUint32(8, f.features);
  dv.setUint32(12, f.fileFormatVersion);
  setU64be(dv, 16, f.dataOffset);
  dv.setUint32(24, f.timeStamp);
  putChars(b, 28, f.creatorApp, 4);
  dv.setUint32(32, f.creatorVersion);
  putChars(b, 36, f.creatorHostOs, 4);
  setU64be(dv, 40, f.originalSize);
  setU64be(dv, 48, f.currentSize);
  dv.setUint16(56, f.cylinders);
  b[58] = f.heads;
  b[59] = f.sectorsPerTrack;
  dv.setUint32(60, f.diskType);
  b.set(f.uniqueId.subarray(0, 16), 68);
  b[84] = f.savedState;
  dv.setUint32(64, vhdChecksum(b, 64));
  return b;
}

export function parseVhdDynHeader(b: Uint8Array): VhdDynHeader {
  const dv = view(b);
  return {
    cookie: chars(b, 0, 8),
    dataOffset: u64be(dv, 8),
    tableOffset: u64be(dv, 16),
    headerVersion: dv.getUint32(24),
    maxTableEntries: dv.getUint32(28),
    blockSize: dv.getUint32(32),
    checksum: dv.getUint32(36),
    parentUniqueId: b.slice(40, 56),
    parentTimeStamp: dv.getUint32(56),
    rest: b.slice(64, VHD_DYN_HEADER_BYTES),
  };
}

/** Serializes the dynamic disk header; the checksum is computed. */
export function serializeVhdDynHeader(h: VhdDynHeader): Uint8Array {
  const b = new Uint8Array(VHD_DYN_HEADER_BYTES);
  const dv = view(b);
  putChars(b, 0, h.cookie, 8);
  setU64be(dv, 8, h.dataOffset);
  setU64be(dv, 16, h.tableOffset);
  dv.setUint32(24, h.headerVersion);
  dv.setUint32(28, h.maxTableEntries);
  dv.setUint32(32, h.blockSize);
  b.set(h.parentUniqueId.subarray(0, 16), 40);
  dv.setUint32(56, h.parentTimeStamp);
  b.set(h.rest.subarray(0, VHD_DYN_HEADER_BYTES - 64), 64);
  dv.setUint32(36, vhdChecksum(b, 36));
  return b;
}

export function parseVhdBat(b: Uint8Array, entries: number): Uint32Array {
  const dv = view(b);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = dv.getUint32(i * 4);
  return out;
}

/** Serializes BAT entries [first, first + count). */
export function serializeVhdBat(bat: Uint32Array, first: number, count: number): Uint8Array {
  const b = new Uint8Array(count * 4);
  const dv = view(b);
  for (let i = 0; i < count; i++) dv.setUint32(i * 4, bat[first + i]!);
  return b;
}
