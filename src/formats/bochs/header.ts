/**
 * Bochs "growing" redolog images: on-disk structures (all little-endian).
 *
 *   0    magic[32]     "Bochs Virtual HD Image"
 *   32   type[16]      "Redolog"
 *   48   subtype[16]   "Growing" (QEMU reads no other subtype)
 *   64   version       0x00020000 (v2) or 0x00010000 (v1)
 *   68   header        header size in bytes = file offset of the catalog
 *   72   catalog       number of catalog entries (one per extent)
 *   76   bitmap        bitmap size in bytes, per extent
 *   80   extent        extent size in bytes
 *   v2:  84 reserved, 88 disk (u64, disk size in bytes)
 *   v1:  84 disk (u64)
 *
 * The catalog (u32 per extent, 0xffffffff = not allocated) follows the header;
 * extent k of the catalog lives at data_offset + k * (bitmap_blocks +
 * extent_blocks) * 512, with data_offset = header + catalog * 4: first its
 * bitmap (one bit per 512-byte sector, least significant bit first; a clear
 * bit reads as zeros), then its sectors.
 */
import { Struct } from '../struct.js';

export const BOCHS_MAGIC = 'Bochs Virtual HD Image';
export const BOCHS_REDOLOG_TYPE = 'Redolog';
export const BOCHS_GROWING_TYPE = 'Growing';
export const BOCHS_HEADER_VERSION = 0x00020000;
export const BOCHS_HEADER_V1 = 0x00010000;
export const BOCHS_HEADER_SIZE = 512;
/** Catalog entry of an extent that was never written. */
export const BOCHS_NOT_ALLOCATED = 0xffffffff;
/** QEMU's limit on catalog entries (what bximage needs for ~8 TB). */
export const BOCHS_MAX_CATALOG = 0x100000;
/** QEMU's largest extent size. */
export const BOCHS_MAX_EXTENT = 0x800000;

export interface BochsHeader {
  magic: string;
  type: string;
  subtype: string;
  version: number;
  header: number;
  catalog: number;
  bitmap: number;
  extent: number;
  disk: number;
}

const common = [
  { name: 'magic', type: 'cstring', offset: 0, length: 32 },
  { name: 'type', type: 'cstring', offset: 32, length: 16 },
  { name: 'subtype', type: 'cstring', offset: 48, length: 16 },
  { name: 'version', type: 'u32le', offset: 64 },
  { name: 'header', type: 'u32le', offset: 68 },
  { name: 'catalog', type: 'u32le', offset: 72 },
  { name: 'bitmap', type: 'u32le', offset: 76 },
  { name: 'extent', type: 'u32le', offset: 80 },
] as const;

/** Version 2 header (the `reserved` word before `disk` is not kept: it is written as zero). */
export const BOCHS_HEADER_V2_STRUCT = new Struct<BochsHeader>('bochs header', BOCHS_HEADER_SIZE, [
  ...common,
  { name: 'disk', type: 'u64le', offset: 88 },
]);

/** Version 1 header: `disk` directly after `extent`. */
export const BOCHS_HEADER_V1_STRUCT = new Struct<BochsHeader>('bochs v1 header', BOCHS_HEADER_SIZE, [
  ...common,
  { name: 'disk', type: 'u64le', offset: 84 },
]);

/** The header structure for a version word (v1 or v2 layout). */
export function bochsHeaderStruct(version: number): Struct<BochsHeader> {
  return version === BOCHS_HEADER_V1 ? BOCHS_HEADER_V1_STRUCT : BOCHS_HEADER_V2_STRUCT;
}

/** Parses the header, choosing the layout from its version word. */
export function parseBochsHeader(buf: Uint8Array): BochsHeader {
  const version = new DataView(buf.buffer, buf.byteOffset).getUint32(64, true);
  return bochsHeaderStruct(version).parse(buf);
}

export function serializeBochsHeader(h: BochsHeader): Uint8Array {
  return bochsHeaderStruct(h.version).serialize(h);
}

/** Whether the header names a format QEMU reads: the magic, Redolog/Growing and a known version. */
export function isBochsGrowing(h: BochsHeader): boolean {
  return (
    h.magic === BOCHS_MAGIC &&
    h.type === BOCHS_REDOLOG_TYPE &&
    h.subtype === BOCHS_GROWING_TYPE &&
    (h.version === BOCHS_HEADER_VERSION || h.version === BOCHS_HEADER_V1)
  );
}

/** The catalog: one u32 per extent. */
export const BOCHS_CATALOG_ENTRY = new Struct<{ entry: number }>('bochs catalog entry', 4, [{ name: 'entry', type: 'u32le', offset: 0 }]);

export function parseCatalog(buf: Uint8Array, count: number): Uint32Array {
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = BOCHS_CATALOG_ENTRY.parse(buf, i * 4).entry;
  return out;
}

export function serializeCatalog(entries: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(entries.length * 4);
  for (let i = 0; i < entries.length; i++) BOCHS_CATALOG_ENTRY.serialize({ entry: entries[i]! }, out, i * 4);
  return out;
}

/** Whether sector `i` of an extent is present in its bitmap. */
export function bitmapHas(bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >> 3]! >> (i & 7)) & 1) === 1;
}

/** Sets sector `i` present in an extent bitmap. */
export function bitmapSet(bitmap: Uint8Array, i: number): void {
  bitmap[i >> 3]! |= 1 << (i & 7);
}
