/**
 * VHDX Block Allocation Table entries (MS-VHDX 2.5): one u64 per payload
 * block, with a sector bitmap entry after every `chunkRatio` payload entries.
 *
 *   bits 0-2   State (payload: NOT_PRESENT 0, UNDEFINED 1, ZERO 2, UNMAPPED 3,
 *              FULLY_PRESENT 6, PARTIALLY_PRESENT 7; sector bitmap: NOT_PRESENT 0, PRESENT 6)
 *   bits 20-63 FileOffsetMB: where the block lives, in MiB
 *
 * chunkRatio = 2^23 * LogicalSectorSize / BlockSize (one 1 MiB sector bitmap
 * block covers 2^23 sectors).
 */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
/** UNMAPPED as the 0.95 draft numbered it (QEMU still accepts it). */
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 5;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;

export const VHDX_MAX_SECTORS_PER_BLOCK = 1 << 23;
export const VHDX_BLOCK_SIZE_MIN = 1024 * 1024;
export const VHDX_BLOCK_SIZE_MAX = 256 * 1024 * 1024;
/** 64 TiB, the specification's largest virtual disk. */
export const VHDX_MAX_IMAGE_SIZE = 64 * 1024 * 1024 * 1024 * 1024;

export interface BatEntry {
  state: number;
  /** Byte offset of the block (FileOffsetMB * 1 MiB). */
  fileOffset: number;
}

/** Parses entry `i` of a BAT held as raw little-endian bytes. */
export function parseBatEntry(bat: Uint8Array, i: number): BatEntry {
  const dv = new DataView(bat.buffer, bat.byteOffset + i * 8, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  // FileOffsetMB = bits 20..63; in bytes that is hi:lo with the low 20 bits cleared.
  return { state: lo & 7, fileOffset: hi * 0x100000000 + ((lo & 0xfff00000) >>> 0) };
}

export function serializeBatEntry(e: BatEntry, bat: Uint8Array, i: number): void {
  const dv = new DataView(bat.buffer, bat.byteOffset + i * 8, 8);
  dv.setUint32(0, ((e.fileOffset % 0x100000000) | e.state) >>> 0, true);
  dv.setUint32(4, Math.floor(e.fileOffset / 0x100000000), true);
}

/** Chunk geometry shared by open and create. */
export function chunkRatio(logicalSectorSize: number, blockSize: number): number {
  return (VHDX_MAX_SECTORS_PER_BLOCK * logicalSectorSize) / blockSize;
}

/** Number of BAT entries (QEMU's vhdx_calc_bat_entries). */
export function batEntries(virtualDiskSize: number, blockSize: number, ratio: number, hasParent: boolean): number {
  const dataBlocks = Math.ceil(virtualDiskSize / blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / ratio);
  if (hasParent) return bitmapBlocks * (ratio + 1);
  return dataBlocks + Math.floor((dataBlocks - 1) / ratio);
}

/** BAT index of payload block `block`. */
export function payloadIndex(block: number, ratio: number): number {
  return block + Math.floor(block / ratio);
}

/** BAT index of the sector bitmap block covering payload block `block`. */
export function bitmapIndex(block: number, ratio: number): number {
  return (Math.floor(block / ratio) + 1) * (ratio + 1) - 1;
}
