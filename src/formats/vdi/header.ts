/**
 * The VDI (VirtualBox) image header: one parser, one serializer.
 *
 * Layout (little-endian, 512 bytes, field names as QEMU's VdiHeader, which
 * follows VirtualBox's VDIHEADER1PLUS):
 *
 *   0    text               char[64]  "<<< … Disk Image >>>\n"
 *   64   signature          u32       0xbeda107f
 *   68   version            u32       0x00010001 (1.1)
 *   72   header_size        u32       0x180
 *   76   image_type         u32       1 dynamic, 2 static
 *   80   image_flags        u32
 *   84   description        char[256]
 *   340  offset_bmap        u32       bytes, sector aligned
 *   344  offset_data        u32       bytes, sector aligned
 *   348  cylinders, heads, sectors   u32 ×3 (legacy geometry, unused)
 *   360  sector_size        u32       512
 *   364  unused1            u32
 *   368  disk_size          u64       bytes
 *   376  block_size         u32       1 MiB
 *   380  block_extra        u32
 *   384  blocks_in_image    u32
 *   388  blocks_allocated   u32
 *   392  uuid_image, uuid_last_snap, uuid_link, uuid_parent  16 bytes each
 *   456  unused2            u64 ×7
 *
 * UUIDs are kept as the 16 stored bytes (VirtualBox's little-endian RTUUID
 * layout); only "is it null" matters to a reader.
 */
import { setU64le, u64le, view } from '../on-disk.js';

export const VDI_SIGNATURE = 0xbeda107f;
export const VDI_VERSION_1_1 = 0x00010001;
export const VDI_TYPE_DYNAMIC = 1;
export const VDI_TYPE_STATIC = 2;
export const VDI_HEADER_BYTES = 512;
export const VDI_SECTOR_SIZE = 512;
export const VDI_DEFAULT_BLOCK_SIZE = 1024 * 1024;
/** A block never allocated (reads as zeros in QEMU, which has no backing for vdi). */
export const VDI_UNALLOCATED = 0xffffffff;
/** A discarded block: reads as zeros. */
export const VDI_DISCARDED = 0xfffffffe;
/** QEMU's VDI_BLOCKS_IN_IMAGE_MAX (7.2): the block map (4 bytes a block, rounded up to a sector) stays at most INT_MAX bytes. */
export const VDI_BLOCKS_IN_IMAGE_MAX = (2 ** 31 - 512) / 4;
export const VDI_DISK_SIZE_MAX = VDI_BLOCKS_IN_IMAGE_MAX * VDI_DEFAULT_BLOCK_SIZE;
/** Text QEMU writes into images it creates (we write the same, so VirtualBox sees a familiar banner). */
export const VDI_TEXT = '<<< QEMU VM Virtual Disk Image >>>\n';

export function vdiIsAllocated(entry: number): boolean {
  return entry < VDI_DISCARDED;
}

export interface VdiHeader {
  text: Uint8Array;
  signature: number;
  version: number;
  headerSize: number;
  imageType: number;
  imageFlags: number;
  description: Uint8Array;
  offsetBmap: number;
  offsetData: number;
  cylinders: number;
  heads: number;
  sectors: number;
  sectorSize: number;
  diskSize: number;
  blockSize: number;
  blockExtra: number;
  blocksInImage: number;
  blocksAllocated: number;
  uuidImage: Uint8Array;
  uuidLastSnap: Uint8Array;
  uuidLink: Uint8Array;
  uuidParent: Uint8Array;
}

/** Parses the 512-byte header (no validation: see vdi.ts for QEMU's checks). */
export function parseVdiHeader(b: Uint8Array): VdiHeader {
  const dv = view(b);
  const u32 = (o: number) => dv.getUint32(o, true);
  return {
    text: b.slice(0, 64),
    signature: u32(64),
    version: u32(68),
    headerSize: u32(72),
    imageType: u32(76),
    imageFlags: u32(80),
    description: b.slice(84, 340),
    offsetBmap: u32(340),
    offsetData: u32(344),
    cylinders: u32(348),
    heads: u32(352),
    sectors: u32(356),
    sectorSize: u32(360),
    diskSize: u64le(dv, 368),
    blockSize: u32(376),
    blockExtra: u32(380),
    blocksInImage: u32(384),
    blocksAllocated: u32(388),
    uuidImage: b.slice(392, 408),
    uuidLastSnap: b.slice(408, 424),
    uuidLink: b.slice(424, 440),
    uuidParent: b.slice(440, 456),
  };
}

/** Serializes the header into 512 bytes (unused fields zero). */
export function serializeVdiHeader(h: VdiHeader): Uint8Array {
  const b = new Uint8Array(VDI_HEADER_BYTES);
  const dv = view(b);
  const u32 = (o: number, v: number) => dv.setUint32(o, v, true);
  b.set(h.text.subarray(0, 64), 0);
  u32(64, h.signature);
  u32(68, h.version);
  u32(72, h.headerSize);
  u32(76, h.imageType);
  u32(80, h.imageFlags);
  b.set(h.description.subarray(0, 256), 84);
  u32(340, h.offsetBmap);
  u32(344, h.offsetData);
  u32(348, h.cylinders);
  u32(352, h.heads);
  u32(356, h.sectors);
  u32(360, h.sectorSize);
  setU64le(dv, 368, h.diskSize);
  u32(376, h.blockSize);
  u32(380, h.blockExtra);
  u32(384, h.blocksInImage);
  u32(388, h.blocksAllocated);
  b.set(h.uuidImage, 392);
  b.set(h.uuidLastSnap, 408);
  b.set(h.uuidLink, 424);
  b.set(h.uuidParent, 440);
  return b;
}

/** The block map: one u32 per block, the index of its data block or VDI_UNALLOCATED / VDI_DISCARDED. */
export function parseVdiBlockMap(b: Uint8Array, entries: number): Uint32Array {
  const dv = view(b);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

/** Serializes entries [first, first + count) of the block map. */
export function serializeVdiBlockMap(bmap: Uint32Array, first: number, count: number): Uint8Array {
  const b = new Uint8Array(count * 4);
  const dv = view(b);
  for (let i = 0; i < count; i++) dv.setUint32(i * 4, bmap[first + i]!, true);
  return b;
}
