/**
 * The persistent dirty bitmap directory (read for `info` now; the bitmap
 * code will own it later).
 *
 * Directory entry (big-endian, padded to 8 bytes):
 *   0 bitmap_table_offset u64   16 type             u8
 *   8 bitmap_table_size   u32   17 granularity_bits u8
 *  12 flags               u32   18 name_size        u16
 *                               20 extra_data_size  u32, then extra data, name
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvPread } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { be, findExtension, QCOW2_AUTOCLEAR_BITMAPS, QCOW2_EXT_MAGIC_BITMAPS, type Qcow2Header } from './header.js';

export const QCOW2_MAX_BITMAPS = 65535;
export const QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS;
export const BME_FLAG_IN_USE = 1;
export const BME_FLAG_AUTO = 2;

export interface Qcow2BitmapEntry {
  bitmapTableOffset: number;
  bitmapTableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraData: Uint8Array;
}

const dec = new TextDecoder();

/**
 * Reads the bitmap directory. An extension whose autoclear bit was cleared
 * (a program unaware of bitmaps wrote the image) is ignored, as QEMU does.
 */
export async function readBitmapDirectory(file: BlockNode, h: Qcow2Header, image: string): Promise<Qcow2BitmapEntry[]> {
  const ext = findExtension(h, QCOW2_EXT_MAGIC_BITMAPS);
  if (!ext || !(h.autoclearFeatures & QCOW2_AUTOCLEAR_BITMAPS)) return [];
  const fail = (msg: string): never => {
    throw new BlockError('EINVAL', `${image}: bitmaps_ext: ${msg}`);
  };
  if (ext.nbBitmaps === 0) fail('found bitmaps extension with zero bitmaps');
  if (ext.nbBitmaps > QCOW2_MAX_BITMAPS) fail(`Image has ${ext.nbBitmaps} bitmaps, exceeding the QEMU supported maximum of ${QCOW2_MAX_BITMAPS}`);
  if (ext.bitmapDirectorySize > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) fail(`bitmap directory size ${ext.bitmapDirectorySize} exceeds the maximum`);
  if (ext.bitmapDirectoryOffset % 2 ** h.clusterBits !== 0) fail(`invalid bitmap directory offset ${hex(ext.bitmapDirectoryOffset)}`);
  if (ext.bitmapDirectoryOffset + ext.bitmapDirectorySize > file.totalBytes) {
    fail(`bitmap directory at ${hex(ext.bitmapDirectoryOffset)} extends beyond the end of the file`);
  }
  const dir = new Uint8Array(ext.bitmapDirectorySize);
  await bdrvPread(file, ext.bitmapDirectoryOffset, dir.length, dir);
  const out: Qcow2BitmapEntry[] = [];
  let p = 0;
  for (let i = 0; i < ext.nbBitmaps; i++) {
    if (p + 24 > dir.length) fail(`bitmap directory entry ${i} at ${hex(ext.bitmapDirectoryOffset + p)} is past the directory's end`);
    const nameSize = be.u16(dir, p + 18);
    const extra = be.u32(dir, p + 20);
    const end = p + 24 + extra + nameSize;
    if (end > dir.length) fail(`bitmap directory entry ${i} at ${hex(ext.bitmapDirectoryOffset + p)} is past the directory's end`);
    out.push({
      bitmapTableOffset: be.u64(dir, p),
      bitmapTableSize: be.u32(dir, p + 8),
      flags: be.u32(dir, p + 12),
      type: dir[p + 16]!,
      granularityBits: dir[p + 17]!,
      extraData: dir.slice(p + 24, p + 24 + extra),
      name: dec.decode(dir.subarray(p + 24 + extra, end)),
    });
    p = end + ((8 - (end % 8)) % 8);
  }
  return out;
}
