/**
 * VMDK on-disk binary structures (VMware "Virtual Disk Format 1.1"), one
 * parser and one serializer each, fields named as the specification does:
 *
 *   SparseExtentHeader (hosted sparse extent, magic "KDMV"), 512 bytes, little-endian:
 *     0 magicNumber u32 · 4 version u32 · 8 flags u32 · 12 capacity u64 (sectors)
 *     20 grainSize u64 (sectors) · 28 descriptorOffset u64 · 36 descriptorSize u64
 *     44 numGTEsPerGT u32 · 48 rgdOffset u64 · 56 gdOffset u64 · 64 overHead u64
 *     72 uncleanShutdown u8 · 73..76 singleEndLineChar, nonEndLineChar,
 *     doubleEndLineChar1, doubleEndLineChar2 · 77 compressAlgorithm u16
 *   COWDisk_Header (ESX vmfsSparse, magic "COWD"): version, flags, numSectors,
 *     grainSize, gdOffset, numGDEntries, freeSector (u32 each) and a geometry.
 *   Stream-optimized markers: { val u64, size u32, type u32 } — size > 0 is a
 *     grain marker (val = LBA, compressed bytes follow), size 0 a metadata marker.
 *
 * 64-bit fields are read as two 32-bit halves and refused when they do not fit
 * a JS number exactly, so a crafted header can never produce a wrong offset.
 */
import { BlockError, hex } from '../../block/errors.js';

export const VMDK4_MAGIC = 0x4b444d56; // "KDMV" read big-endian, as QEMU compares it
export const VMDK3_MAGIC = 0x434f5744; // "COWD"
export const SECTOR_SIZE = 512;

export const VMDK4_FLAG_NL_DETECT = 1 << 0;
export const VMDK4_FLAG_RGD = 1 << 1;
export const VMDK4_FLAG_ZERO_GRAIN = 1 << 2;
export const VMDK4_FLAG_COMPRESS = 1 << 16;
export const VMDK4_FLAG_MARKER = 1 << 17;
export const VMDK4_COMPRESSION_DEFLATE = 1;
/** gdOffset meaning "the grain directory is described by the footer" (stream-optimized). */
export const VMDK4_GD_AT_END = -1;

export const MARKER_END_OF_STREAM = 0;
export const MARKER_GRAIN_TABLE = 1;
export const MARKER_GRAIN_DIRECTORY = 2;
export const MARKER_FOOTER = 3;

/** A grain table entry with this value reads as zeros when the zeroed-grain flag is set. */
export const VMDK_GTE_ZEROED = 1;

export interface SparseExtentHeader {
  magicNumber: number;
  version: number;
  flags: number;
  /** Sectors. */
  capacity: number;
  /** Sectors per grain. */
  grainSize: number;
  /** Sector of the embedded descriptor (0: none). */
  descriptorOffset: number;
  /** Sectors of the embedded descriptor. */
  descriptorSize: number;
  numGTEsPerGT: number;
  /** Sector of the redundant grain directory. */
  rgdOffset: number;
  /** Sector of the grain directory, or VMDK4_GD_AT_END. */
  gdOffset: number;
  /** Sectors of metadata before the first grain. */
  overHead: number;
  uncleanShutdown: number;
  compressAlgorithm: number;
}

export interface CowdHeader {
  magicNumber: number;
  version: number;
  flags: number;
  numSectors: number;
  grainSize: number;
  /** Sector of the grain directory. */
  gdOffset: number;
  numGDEntries: number;
  freeSector: number;
}

export interface GrainMarker {
  /** LBA of a grain marker; for metadata markers, sectors of metadata that follow. */
  val: number;
  /** Compressed bytes that follow (grain marker) or 0 (metadata marker). */
  size: number;
  /** Metadata marker type (only meaningful when size is 0). */
  type: number;
}

/**
 * A u64 field. Past 2^53 it is refused here, except with `approximate`
 * (capacity, grainSize, gdOffset): then the nearest double is returned, so the open
 * can run QEMU's checks in QEMU's order ("Invalid granularity", "L1 size too
 * big") on it; the extent refuses any value that is not exact afterwards
 * (capacity) or that lies past the end of the file (the grain directory).
 */
function u64(dv: DataView, at: number, image: string, field: string, allowAtEnd = false, approximate = false): number {
  const lo = dv.getUint32(at, true);
  const hi = dv.getUint32(at + 4, true);
  if (allowAtEnd && hi === 0xffffffff && lo === 0xffffffff) return VMDK4_GD_AT_END;
  if (hi >= 0x200000 && !approximate) throw new BlockError('EINVAL', `${image}: VMDK header field ${field} at ${hex(at)} is too large (${hex(hi)}${lo.toString(16).padStart(8, '0')})`);
  return hi * 0x100000000 + lo;
}

function putU64(dv: DataView, at: number, v: number): void {
  if (v === VMDK4_GD_AT_END) {
    dv.setUint32(at, 0xffffffff, true);
    dv.setUint32(at + 4, 0xffffffff, true);
    return;
  }
  dv.setUint32(at, v % 0x100000000, true);
  dv.setUint32(at + 4, Math.floor(v / 0x100000000), true);
}

/** Parses a hosted sparse extent header from `buf` (at least 512 bytes, the header at offset 0). */
export function parseSparseExtentHeader(buf: Uint8Array, image: string): SparseExtentHeader {
  if (buf.length < SECTOR_SIZE) throw new BlockError('EINVAL', `${image}: VMDK sparse header at 0x0 is truncated (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, SECTOR_SIZE);
  return {
    magicNumber: dv.getUint32(0, false),
    version: dv.getUint32(4, true),
    flags: dv.getUint32(8, true),
    capacity: u64(dv, 12, image, 'capacity', false, true),
    grainSize: u64(dv, 20, image, 'grainSize', false, true),
    descriptorOffset: u64(dv, 28, image, 'descriptorOffset'),
    descriptorSize: u64(dv, 36, image, 'descriptorSize'),
    numGTEsPerGT: dv.getUint32(44, true),
    rgdOffset: u64(dv, 48, image, 'rgdOffset'),
    gdOffset: u64(dv, 56, image, 'gdOffset', true, true),
    overHead: u64(dv, 64, image, 'overHead'),
    uncleanShutdown: dv.getUint8(72),
    compressAlgorithm: dv.getUint16(77, true),
  };
}

/** Serializes a hosted sparse extent header into a fresh 512-byte sector. */
export function serializeSparseExtentHeader(h: SparseExtentHeader): Uint8Array {
  const buf = new Uint8Array(SECTOR_SIZE);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, h.magicNumber, false);
  dv.setUint32(4, h.version, true);
  dv.setUint32(8, h.flags, true);
  putU64(dv, 12, h.capacity);
  putU64(dv, 20, h.grainSize);
  putU64(dv, 28, h.descriptorOffset);
  putU64(dv, 36, h.descriptorSize);
  dv.setUint32(44, h.numGTEsPerGT, true);
  putU64(dv, 48, h.rgdOffset);
  putU64(dv, 56, h.gdOffset);
  putU64(dv, 64, h.overHead);
  dv.setUint8(72, h.uncleanShutdown);
  buf[73] = 0x0a; // singleEndLineChar '\n'
  buf[74] = 0x20; // nonEndLineChar ' '
  buf[75] = 0x0d; // doubleEndLineChar1 '\r'
  buf[76] = 0x0a; // doubleEndLineChar2 '\n'
  dv.setUint16(77, h.compressAlgorithm, true);
  return buf;
}

/** Parses an ESX COWD (vmfsSparse) header. */
export function parseCowdHeader(buf: Uint8Array, image: string): CowdHeader {
  if (buf.length < 44) throw new BlockError('EINVAL', `${image}: VMDK COWD header at 0x0 is truncated (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, 44);
  return {
    magicNumber: dv.getUint32(0, false),
    version: dv.getUint32(4, true),
    flags: dv.getUint32(8, true),
    numSectors: dv.getUint32(12, true),
    grainSize: dv.getUint32(16, true),
    gdOffset: dv.getUint32(20, true),
    numGDEntries: dv.getUint32(24, true),
    freeSector: dv.getUint32(28, true),
  };
}

/** Serializes a COWD header into a fresh 512-byte sector (geometry left zero). */
export function serializeCowdHeader(h: CowdHeader): Uint8Array {
  const buf = new Uint8Array(SECTOR_SIZE);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, h.magicNumber, false);
  dv.setUint32(4, h.version, true);
  dv.setUint32(8, h.flags, true);
  dv.setUint32(12, h.numSectors, true);
  dv.setUint32(16, h.grainSize, true);
  dv.setUint32(20, h.gdOffset, true);
  dv.setUint32(24, h.numGDEntries, true);
  dv.setUint32(28, h.freeSector, true);
  return buf;
}

/** Parses a stream-optimized marker (16 bytes) at `at` in `buf`; `where` is its file offset, for messages. */
export function parseGrainMarker(buf: Uint8Array, at: number, image: string, where: number): GrainMarker {
  if (buf.length < at + 16) throw new BlockError('EINVAL', `${image}: VMDK grain marker at ${hex(where)} is truncated`);
  const dv = new DataView(buf.buffer, buf.byteOffset + at, 16);
  return { val: u64(dv, 0, image, `marker at ${hex(where)} val`), size: dv.getUint32(8, true), type: dv.getUint32(12, true) };
}

/** Serializes a marker: 12 bytes for a grain marker (size > 0), a whole sector for a metadata marker. */
export function serializeGrainMarker(m: GrainMarker): Uint8Array {
  const buf = new Uint8Array(m.size > 0 ? 12 : SECTOR_SIZE);
  const dv = new DataView(buf.buffer);
  putU64(dv, 0, m.val);
  dv.setUint32(8, m.size, true);
  if (m.size === 0) dv.setUint32(12, m.type, true);
  return buf;
}
