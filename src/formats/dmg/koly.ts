/**
 * The UDIF trailer ("koly" block, Apple's UDIFResourceFile): the last 512
 * bytes of a .dmg, big-endian. It locates the data fork (the chunks), the
 * XML property list or the resource fork holding the blkx ("mish") tables,
 * and gives the disk's size in sectors.
 */
import { Struct } from '../struct.js';

export const KOLY_SIGNATURE = 0x6b6f6c79; // 'koly'
export const KOLY_SIZE = 512;

export interface KolyBlock {
  Signature: number;
  Version: number;
  HeaderSize: number;
  Flags: number;
  RunningDataForkOffset: number;
  DataForkOffset: number;
  DataForkLength: number;
  RsrcForkOffset: number;
  RsrcForkLength: number;
  SegmentNumber: number;
  SegmentCount: number;
  SegmentID: Uint8Array;
  DataChecksumType: number;
  DataChecksumSize: number;
  DataChecksum: Uint8Array;
  XMLOffset: number;
  XMLLength: number;
  MasterChecksumType: number;
  MasterChecksumSize: number;
  MasterChecksum: Uint8Array;
  ImageVariant: number;
  SectorCount: number;
}

export const KOLY = new Struct<KolyBlock>('koly trailer', KOLY_SIZE, [
  { name: 'Signature', type: 'u32be', offset: 0x000 },
  { name: 'Version', type: 'u32be', offset: 0x004 },
  { name: 'HeaderSize', type: 'u32be', offset: 0x008 },
  { name: 'Flags', type: 'u32be', offset: 0x00c },
  { name: 'RunningDataForkOffset', type: 'u64be', offset: 0x010 },
  { name: 'DataForkOffset', type: 'u64be', offset: 0x018 },
  { name: 'DataForkLength', type: 'u64be', offset: 0x020 },
  { name: 'RsrcForkOffset', type: 'u64be', offset: 0x028 },
  { name: 'RsrcForkLength', type: 'u64be', offset: 0x030 },
  { name: 'SegmentNumber', type: 'u32be', offset: 0x038 },
  { name: 'SegmentCount', type: 'u32be', offset: 0x03c },
  { name: 'SegmentID', type: 'bytes', offset: 0x040, length: 16 },
  { name: 'DataChecksumType', type: 'u32be', offset: 0x050 },
  { name: 'DataChecksumSize', type: 'u32be', offset: 0x054 },
  { name: 'DataChecksum', type: 'bytes', offset: 0x058, length: 128 },
  { name: 'XMLOffset', type: 'u64be', offset: 0x0d8 },
  { name: 'XMLLength', type: 'u64be', offset: 0x0e0 },
  // 0x0e8: 120 reserved bytes
  { name: 'MasterChecksumType', type: 'u32be', offset: 0x160 },
  { name: 'MasterChecksumSize', type: 'u32be', offset: 0x164 },
  { name: 'MasterChecksum', type: 'bytes', offset: 0x168, length: 128 },
  { name: 'ImageVariant', type: 'u32be', offset: 0x1e8 },
  { name: 'SectorCount', type: 'u64be', offset: 0x1ec },
  // 0x1f4: three reserved u32
]);

/**
 * Where the trailer starts: QEMU looks for "koly" in the last 515 bytes (the
 * last 511 of the second-to-last sector and the first 4 of the last one), so
 * a file whose length is not a multiple of 512 is still found. Returns -1 when
 * the signature is absent. `tail` holds the file's bytes from `tailOffset`.
 */
export function findKoly(tail: Uint8Array, tailOffset: number): number {
  for (let i = 0; i + 4 <= tail.length; i++) {
    if (tail[i] === 0x6b && tail[i + 1] === 0x6f && tail[i + 2] === 0x6c && tail[i + 3] === 0x79) return tailOffset + i;
  }
  return -1;
}
