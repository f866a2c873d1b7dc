/**
 * The persistent dirty bitmap directory and the bitmaps header extension's
 * limits (docs/interop/qcow2.txt, "Bitmaps extension" and "Bitmap directory").
 * The extension itself is parsed and serialized with the other extensions in
 * header.ts; this module checks it and owns the directory entries.
 *
 * Directory entry (big-endian, each padded to 8 bytes):
 *   0 bitmap_table_offset u64   16 type             u8   (1 = dirty tracking)
 *   8 bitmap_table_size   u32   17 granularity_bits u8   (9..31 in QEMU)
 *  12 flags               u32   18 name_size        u16  (1..1023)
 *     (bit 0 in_use,            20 extra_data_size  u32, then extra data, name
 *      bit 1 auto)
 *
 * The checks are QEMU's (bitmap_list_load, check_dir_entry) with its
 * messages, each prefixed with the image and followed by where it was found.
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvPread } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { be, findExtension, QCOW2_AUTOCLEAR_BITMAPS, QCOW2_EXT_MAGIC_BITMAPS, type Qcow2Header } from './header.js';

export const QCOW2_MAX_BITMAPS = 65535;
export const QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS;
export const BME_FLAG_IN_USE = 1;
export const BME_FLAG_AUTO = 2;
const BME_RESERVED_FLAGS = 0xfffffffc;
export const BME_MAX_TABLE_SIZE = 0x8000000;
/** Most bytes of bitmap data QEMU keeps for one bitmap. */
export const BME_MAX_PHYS_SIZE = 0x20000000;
export const BME_MIN_GRANULARITY_BITS = 9;
export const BME_MAX_GRANULARITY_BITS = 31;
export const BME_MAX_NAME_SIZE = 1023;
const BT_DIRTY_TRACKING_BITMAP = 1;
const ENTRY_HEADER = 24;

export interface Qcow2BitmapEntry {
  bitmapTableOffset: number;
  /** Entries (u64) in the bitmap table. */
  bitmapTableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraData: Uint8Array;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Bytes a directory entry takes (QEMU's calc_dir_entry_size). */
export function dirEntrySize(nameBytes: number, extraDataSize = 0): number {
  return (ENTRY_HEADER + nameBytes + extraDataSize + 7) & ~7;
}

/** Bytes of the bitmap data of a bitmap over `virtualSize` bytes at `granularity` (rounded up to 8-byte words, as hbitmap serializes). */
export function bitmapDataBytes(virtualSize: number, granularity: number): number {
  const bits = Math.ceil(virtualSize / granularity);
  return Math.ceil(bits / 64) * 8;
}

/** Entries of the bitmap table a bitmap over `virtualSize` bytes needs. */
export function bitmapTableSizeFor(virtualSize: number, granularity: number, clusterSize: number): number {
  return Math.ceil(bitmapDataBytes(virtualSize, granularity) / clusterSize);
}

/** Why entry `e` breaks QEMU's constraints (check_dir_entry), or null. */
export function dirEntryProblem(e: Qcow2BitmapEntry, clusterSize: number, virtualSize: number): string | null {
  if (e.bitmapTableSize === 0) return 'bitmap_table_size is 0';
  if (e.bitmapTableOffset === 0) return 'bitmap_table_offset is 0';
  if (e.bitmapTableOffset % clusterSize) return `bitmap_table_offset ${hex(e.bitmapTableOffset)} is not cluster aligned`;
  if (e.bitmapTableSize > BME_MAX_TABLE_SIZE) return `bitmap_table_size ${e.bitmapTableSize} exceeds ${BME_MAX_TABLE_SIZE}`;
  if (e.granularityBits > BME_MAX_GRANULARITY_BITS || e.granularityBits < BME_MIN_GRANULARITY_BITS) {
    return `granularity_bits ${e.granularityBits} is outside ${BME_MIN_GRANULARITY_BITS}..${BME_MAX_GRANULARITY_BITS}`;
  }
  if ((e.flags & BME_RESERVED_FLAGS) >>> 0) return `reserved flags set (flags ${hex(e.flags >>> 0)})`;
  if (enc.encode(e.name).length > BME_MAX_NAME_SIZE) return `name_size exceeds ${BME_MAX_NAME_SIZE}`;
  if (e.type !== BT_DIRTY_TRACKING_BITMAP) return `type ${e.type} is not a dirty tracking bitmap`;
  const phys = e.bitmapTableSize * clusterSize;
  if (phys > BME_MAX_PHYS_SIZE) return `bitmap data of ${phys} bytes exceeds ${BME_MAX_PHYS_SIZE}`;
  // A bitmap not in use must cover the whole disk (an in-use one may be stale from before a resize).
  if (!(e.flags & BME_FLAG_IN_USE) && virtualSize > phys * 8 * 2 ** e.granularityBits) {
    return `bitmap table of ${e.bitmapTableSize} entries is too small for the virtual disk`;
  }
  return null;
}

/** Serializes a directory (QEMU's bitmap_list_store layout: no extra data). */
export function serializeBitmapDirectory(entries: readonly Qcow2BitmapEntry[]): Uint8Array {
  const names = entries.map((e) => enc.encode(e.name));
  let size = 0;
  entries.forEach((e, i) => (size += dirEntrySize(names[i]!.length, e.extraData.length)));
  const out = new Uint8Array(size);
  let p = 0;
  entries.forEach((e, i) => {
    const name = names[i]!;
    be.put64(out, p, e.bitmapTableOffset);
    be.put32(out, p + 8, e.bitmapTableSize);
    be.put32(out, p + 12, e.flags >>> 0);
    out[p + 16] = e.type;
    out[p + 17] = e.granularityBits;
    be.put16(out, p + 18, name.length);
    be.put32(out, p + 20, e.extraData.length);
    out.set(e.extraData, p + ENTRY_HEADER);
    out.set(name, p + ENTRY_HEADER + e.extraData.length);
    p += dirEntrySize(name.length, e.extraData.length);
  });
  return out;
}

/** Whether the image has a bitmaps extension that its autoclear bit says is stale. */
export function hasStaleBitmapsExtension(h: Qcow2Header): boolean {
  return !!findExtension(h, QCOW2_EXT_MAGIC_BITMAPS) && !(h.autoclearFeatures & QCOW2_AUTOCLEAR_BITMAPS);
}

/**
 * Reads and checks the bitmap directory. An extension whose autoclear bit
 * was cleared (a program unaware of bitmaps wrote the image) is ignored, as
 * QEMU does: its bitmaps are lost and their clusters leak.
 */
export async function readBitmapDirectory(file: BlockNode, h: Qcow2Header, image: string): Promise<Qcow2BitmapEntry[]> {
  const ext = findExtension(h, QCOW2_EXT_MAGIC_BITMAPS);
  if (!ext || !(h.autoclearFeatures & QCOW2_AUTOCLEAR_BITMAPS)) return [];
  const clusterSize = 2 ** h.clusterBits;
  const fail = (msg: string): never => {
    throw new BlockError('EINVAL', `${image}: ${msg}`);
  };
  if (ext.reserved !== 0) fail('bitmaps_ext: Reserved field is not zero');
  if (ext.nbBitmaps > QCOW2_MAX_BITMAPS) fail(`bitmaps_ext: Image has ${ext.nbBitmaps} bitmaps, exceeding the QEMU supported maximum of ${QCOW2_MAX_BITMAPS}`);
  if (ext.nbBitmaps === 0) fail('found bitmaps extension with zero bitmaps');
  if (ext.bitmapDirectoryOffset % clusterSize !== 0) fail(`bitmaps_ext: invalid bitmap directory offset ${hex(ext.bitmapDirectoryOffset)}`);
  if (ext.bitmapDirectorySize > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    fail(`bitmaps_ext: bitmap directory size (${ext.bitmapDirectorySize}) exceeds the maximum supported size (${QCOW2_MAX_BITMAP_DIRECTORY_SIZE})`);
  }
  if (ext.bitmapDirectorySize === 0) fail('Requested bitmap directory size is zero');
  if (ext.bitmapDirectoryOffset + ext.bitmapDirectorySize > file.totalBytes) {
    fail(`bitmap directory at ${hex(ext.bitmapDirectoryOffset)} (${ext.bitmapDirectorySize} bytes) extends beyond the end of the file`);
  }
  const dir = new Uint8Array(ext.bitmapDirectorySize);
  await bdrvPread(file, ext.bitmapDirectoryOffset, dir.length, dir);
  const out: Qcow2BitmapEntry[] = [];
  const at = (p: number) => `bitmap directory entry ${out.length} at ${hex(ext.bitmapDirectoryOffset + p)}`;
  const broken = (p: number): never => fail(`Broken bitmap directory (${at(p)} runs past the directory's end)`);
  let p = 0;
  while (p < dir.length) {
    if (p + ENTRY_HEADER > dir.length) broken(p);
    if (out.length + 1 > ext.nbBitmaps) fail(`More bitmaps found than specified in header extension (${ext.nbBitmaps}; ${at(p)})`);
    const nameSize = be.u16(dir, p + 18);
    const extra = be.u32(dir, p + 20);
    const size = dirEntrySize(nameSize, extra);
    if (p + size > dir.length) broken(p);
    const e: Qcow2BitmapEntry = {
      bitmapTableOffset: be.u64(dir, p),
      bitmapTableSize: be.u32(dir, p + 8),
      flags: be.u32(dir, p + 12),
      type: dir[p + 16]!,
      granularityBits: dir[p + 17]!,
      extraData: dir.slice(p + ENTRY_HEADER, p + ENTRY_HEADER + extra),
      name: dec.decode(dir.subarray(p + ENTRY_HEADER + extra, p + ENTRY_HEADER + extra + nameSize)),
    };
    if (extra !== 0) fail(`Bitmap '${e.name}': Bitmap extra data is not supported (${at(p)})`);
    const problem = dirEntryProblem(e, clusterSize, h.size);
    if (problem) fail(`Bitmap '${e.name}' doesn't satisfy the constraints: ${problem} (${at(p)})`);
    out.push(e);
    p += size;
  }
  if (out.length !== ext.nbBitmaps) fail(`Less bitmaps found than specified in header extension (${out.length} of ${ext.nbBitmaps} in the directory at ${hex(ext.bitmapDirectoryOffset)})`);
  return out;
}
