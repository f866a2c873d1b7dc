/**
 * The blkx table ("mish" block, Apple's BLKXTable) and its chunk entries
 * (BLKXChunkEntry), big-endian. One table describes one partition: where its
 * sectors start on the disk, and a list of chunks, each mapping a run of
 * sectors to bytes of the data fork stored raw, compressed, or not at all
 * (zero and ignore chunks).
 *
 *   0x00 Signature 'mish'      0x08 SectorNumber (first disk sector of the table)
 *   0x10 SectorCount           0x18 DataOffset (added to every chunk's CompressedOffset)
 *   0x40 UDIF checksum         0xc8 NumberOfBlockChunks, then the chunks (40 bytes each) at 0xcc
 */
import { Struct } from '../struct.js';

export const MISH_SIGNATURE = 0x6d697368; // 'mish'
export const BLKX_HEADER_SIZE = 0xcc;
export const BLKX_CHUNK_SIZE = 40;

/** Chunk (EntryType) kinds. */
export const BLKX_ZERO = 0x00000000; // UDZE: reads as zeros
export const BLKX_RAW = 0x00000001; // UDRW: stored as is
export const BLKX_IGNORE = 0x00000002; // UDIG: free space, reads as zeros
export const BLKX_ADC = 0x80000004; // UDCO: Apple Data Compression
export const BLKX_ZLIB = 0x80000005; // UDZO
export const BLKX_BZIP2 = 0x80000006; // UDBZ
export const BLKX_LZFSE = 0x80000007; // ULFO
export const BLKX_COMMENT = 0x7ffffffe; // UDCM
export const BLKX_TERMINATOR = 0xffffffff; // UDLE

export interface BlkxTable {
  Signature: number;
  Version: number;
  SectorNumber: number;
  SectorCount: number;
  DataOffset: number;
  BuffersNeeded: number;
  BlockDescriptors: number;
  ChecksumType: number;
  ChecksumSize: number;
  Checksum: Uint8Array;
  NumberOfBlockChunks: number;
}

export const BLKX_TABLE = new Struct<BlkxTable>('blkx table', BLKX_HEADER_SIZE, [
  { name: 'Signature', type: 'u32be', offset: 0x00 },
  { name: 'Version', type: 'u32be', offset: 0x04 },
  { name: 'SectorNumber', type: 'u64be', offset: 0x08 },
  { name: 'SectorCount', type: 'u64be', offset: 0x10 },
  { name: 'DataOffset', type: 'u64be', offset: 0x18 },
  { name: 'BuffersNeeded', type: 'u32be', offset: 0x20 },
  { name: 'BlockDescriptors', type: 'u32be', offset: 0x24 },
  // 0x28: 24 reserved bytes
  { name: 'ChecksumType', type: 'u32be', offset: 0x40 },
  { name: 'ChecksumSize', type: 'u32be', offset: 0x44 },
  { name: 'Checksum', type: 'bytes', offset: 0x48, length: 128 },
  { name: 'NumberOfBlockChunks', type: 'u32be', offset: 0xc8 },
]);

export interface BlkxChunk {
  EntryType: number;
  Comment: number;
  /** First sector of the chunk, relative to the table's SectorNumber. */
  SectorNumber: number;
  SectorCount: number;
  /** Offset in the data fork, relative to the table's DataOffset. */
  CompressedOffset: number;
  CompressedLength: number;
}

export const BLKX_CHUNK = new Struct<BlkxChunk>('blkx chunk', BLKX_CHUNK_SIZE, [
  { name: 'EntryType', type: 'u32be', offset: 0x00 },
  { name: 'Comment', type: 'u32be', offset: 0x04 },
  { name: 'SectorNumber', type: 'u64be', offset: 0x08 },
  { name: 'SectorCount', type: 'u64be', offset: 0x10 },
  { name: 'CompressedOffset', type: 'u64be', offset: 0x18 },
  { name: 'CompressedLength', type: 'u64be', offset: 0x20 },
]);

/** A table with its chunks, as stored in one blkx resource. */
export interface BlkxResource {
  table: BlkxTable;
  chunks: BlkxChunk[];
}

export function isMish(blob: Uint8Array): boolean {
  return blob.length >= 4 && blob[0] === 0x6d && blob[1] === 0x69 && blob[2] === 0x73 && blob[3] === 0x68;
}

/**
 * Parses a blkx resource. Throws a message (the caller names the image and
 * where the blob came from) when the table declares more chunks than it holds.
 */
export function parseBlkx(blob: Uint8Array): BlkxResource {
  if (blob.length < BLKX_HEADER_SIZE) throw new RangeError(`the table is ${blob.length} bytes, shorter than its ${BLKX_HEADER_SIZE}-byte header`);
  const table = BLKX_TABLE.parse(blob);
  const room = Math.floor((blob.length - BLKX_HEADER_SIZE) / BLKX_CHUNK_SIZE);
  if (table.NumberOfBlockChunks > room) {
    throw new RangeError(`NumberOfBlockChunks is ${table.NumberOfBlockChunks} but the table holds only ${room} chunks`);
  }
  const chunks: BlkxChunk[] = [];
  for (let i = 0; i < table.NumberOfBlockChunks; i++) chunks.push(BLKX_CHUNK.parse(blob, BLKX_HEADER_SIZE + i * BLKX_CHUNK_SIZE));
  return { table, chunks };
}

/** Writes the table as given (NumberOfBlockChunks included) followed by its chunks. */
export function serializeBlkx(r: BlkxResource): Uint8Array {
  const out = new Uint8Array(BLKX_HEADER_SIZE + r.chunks.length * BLKX_CHUNK_SIZE);
  BLKX_TABLE.serialize(r.table, out);
  r.chunks.forEach((c, i) => BLKX_CHUNK.serialize(c, out, BLKX_HEADER_SIZE + i * BLKX_CHUNK_SIZE));
  return out;
}
