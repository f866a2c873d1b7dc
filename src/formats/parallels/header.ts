/**
 * The Parallels disk image header and block allocation table (BAT): one
 * parser and one serializer each (the `inuse` field alone also has one: an
 * image opened read/write marks it). Field names as QEMU's block/parallels.c and
 * docs/interop/parallels.txt.
 *
 * Header (little-endian, 64 bytes):
 *
 *   0   magic        char[16]  "WithoutFreeSpace" (old) or "WithouFreSpacExt"
 *   16  version      u32       2
 *   20  heads        u32       legacy geometry
 *   24  cylinders    u32
 *   28  tracks       u32       cluster size in sectors
 *   32  bat_entries  u32
 *   36  nb_sectors   u64       virtual size in sectors (low 32 bits only for the old magic)
 *   44  inuse        u32       0x746F6E59 while open read-write
 *   48  data_off     u32       first data sector (0: right after the BAT)
 *   52  flags        u32
 *   56  ext_off      u64       format extension cluster
 *
 * The BAT follows at offset 64: bat_entries little-endian u32, each 0
 * (unallocated) or the cluster's position — in sectors for the old magic,
 * in clusters (× tracks sectors) for the new one.
 */
import { setU64le, u64le, view } from '../on-disk.js';

/** Byte offset of the header's `inuse` field. */
export const PARALLELS_INUSE_OFFSET = 44;

export const PARALLELS_HEADER_BYTES = 64;
export const HEADER_MAGIC = 'WithoutFreeSpace';
export const HEADER_MAGIC2 = 'WithouFreSpacExt';
export const HEADER_VERSION = 2;
export const HEADER_INUSE_MAGIC = 0x746f6e59;

export interface ParallelsHeader {
  magic: string;
  version: number;
  heads: number;
  cylinders: number;
  tracks: number;
  batEntries: number;
  nbSectors: number;
  inuse: number;
  dataOff: number;
  flags: number;
  extOff: number;
}

export function parseParallelsHeader(b: Uint8Array): ParallelsHeader {
  const dv = view(b);
  return {
    magic: String.fromCharCode(...b.subarray(0, 16)),
    version: dv.getUint32(16, true),
    heads: dv.getUint32(20, true),
    cylinders: dv.getUint32(24, true),
    tracks: dv.getUint32(28, true),
    batEntries: dv.getUint32(32, true),
    nbSectors: u64le(dv, 36),
    inuse: dv.getUint32(44, true),
    dataOff: dv.getUint32(48, true),
    flags: dv.getUint32(52, true),
    extOff: u64le(dv, 56),
  };
}

export function serializeParallelsHeader(h: ParallelsHeader): Uint8Array {
  const b = new Uint8Array(PARALLELS_HEADER_BYTES);
  const dv = view(b);
  for (let i = 0; i < 16; i++) b[i] = h.magic.charCodeAt(i) & 0xff;
  dv.setUint32(16, h.version, true);
  dv.setUint32(20, h.heads, true);
  dv.setUint32(24, h.cylinders, true);
  dv.setUint32(28, h.tracks, true);
  dv.setUint32(32, h.batEntries, true);
  setU64le(dv, 36, h.nbSectors);
  dv.setUint32(44, h.inuse, true);
  dv.setUint32(48, h.dataOff, true);
  dv.setUint32(52, h.flags, true);
  setU64le(dv, 56, h.extOff);
  return b;
}

export function parseParallelsBat(b: Uint8Array, entries: number): Uint32Array {
  const dv = view(b);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

/** The `inuse` field as stored (4 bytes at PARALLELS_INUSE_OFFSET). */
export function serializeParallelsInuse(inuse: number): Uint8Array {
  const b = new Uint8Array(4);
  view(b).setUint32(0, inuse, true);
  return b;
}

/** The BAT (entries `first` .. `first + count - 1`, default all) as stored at offset 64 + first × 4. */
export function serializeParallelsBat(bat: Uint32Array, first = 0, count = bat.length - first): Uint8Array {
  const b = new Uint8Array(count * 4);
  const dv = view(b);
  for (let i = 0; i < count; i++) dv.setUint32(i * 4, bat[first + i]!, true);
  return b;
}
