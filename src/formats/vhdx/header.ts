/**
 * The VHDX header section (MS-VHDX 2.2), the first 1 MiB of the file:
 *
 *   0      File Type Identifier: signature "vhdxfile", creator (UTF-16, 512 bytes)
 *   64 KiB Header 1   \  4 KiB each for the checksum; the one with the higher
 *   128 KiB Header 2  /  SequenceNumber (and a valid checksum) is current
 *   192 KiB Region Table 1 (64 KiB)    256 KiB Region Table 2 (a copy)
 *
 * Header (little-endian): Signature "head" · Checksum u32 · SequenceNumber u64 ·
 * FileWriteGuid · DataWriteGuid · LogGuid · LogVersion u16 · Version u16 ·
 * LogLength u32 · LogOffset u64.
 * Region table: Signature "regi" · Checksum u32 · EntryCount u32 · Reserved u32,
 * then entries of Guid · FileOffset u64 · Length u32 · Required (bit 0 of a u32).
 * Checksums are CRC-32C over the whole 4 KiB / 64 KiB with the field zeroed.
 */
import { BlockError } from '../../block/errors.js';
import { vhdxChecksum } from './crc32c.js';
import { parseGuid, serializeGuid } from './guid.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const VHDX_HEADER_BLOCK_SIZE = 64 * KiB;
export const VHDX_HEADER1_OFFSET = 64 * KiB;
export const VHDX_HEADER2_OFFSET = 128 * KiB;
export const VHDX_REGION_TABLE_OFFSET = 192 * KiB;
export const VHDX_REGION_TABLE2_OFFSET = 256 * KiB;
export const VHDX_HEADER_SECTION_END = MiB;
/** Bytes of a header the checksum covers. */
export const VHDX_HEADER_SIZE = 4 * KiB;
export const VHDX_HEADER_SIGNATURE = 0x64616568; // "head"
export const VHDX_REGION_SIGNATURE = 0x69676572; // "regi"
export const VHDX_REGION_MAX_ENTRIES = 2047;
export const VHDX_FILE_SIGNATURE = 'vhdxfile';

export interface VhdxHeader {
  signature: number;
  checksum: number;
  /** As a JS number; sequence numbers stay far below 2^53 in practice and are compared only. */
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export interface RegionTableEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

export interface RegionTable {
  signature: number;
  checksum: number;
  entryCount: number;
  entries: RegionTableEntry[];
}

/** Reads a u64 that must fit a JS number exactly. */
export function u64(dv: DataView, at: number, what: string): number {
  const lo = dv.getUint32(at, true);
  const hi = dv.getUint32(at + 4, true);
  if (hi >= 0x200000) throw new BlockError('EINVAL', `${what} is too large (0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')})`);
  return hi * 0x100000000 + lo;
}

export function putU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, v % 0x100000000, true);
  dv.setUint32(at + 4, Math.floor(v / 0x100000000), true);
}

export function isVhdxSignature(buf: Uint8Array): boolean {
  if (buf.length < 8) return false;
  for (let i = 0; i < 8; i++) if (buf[i] !== VHDX_FILE_SIGNATURE.charCodeAt(i)) return false;
  return true;
}

/** Serializes the file type identifier (signature and creator) into 64 KiB. */
export function serializeFileIdentifier(creator: string): Uint8Array {
  const buf = new Uint8Array(VHDX_HEADER_BLOCK_SIZE);
  for (let i = 0; i < 8; i++) buf[i] = VHDX_FILE_SIGNATURE.charCodeAt(i);
  const dv = new DataView(buf.buffer);
  for (let i = 0; i < Math.min(creator.length, 256); i++) dv.setUint16(8 + 2 * i, creator.charCodeAt(i), true);
  return buf;
}

/**
 * Parses one header from its 4 KiB; answers null when the checksum,
 * signature or version say it is not a valid header (the other one may be).
 * Field values that cannot be represented make it invalid too.
 */
export function parseHeader(buf: Uint8Array): VhdxHeader | null {
  if (buf.length < VHDX_HEADER_SIZE) return null;
  const dv = new DataView(buf.buffer, buf.byteOffset, VHDX_HEADER_SIZE);
  const checksum = dv.getUint32(4, true);
  if (vhdxChecksum(buf.subarray(0, VHDX_HEADER_SIZE), 4) !== checksum) return null;
  const signature = dv.getUint32(0, true);
  const version = dv.getUint16(66, true);
  if (signature !== VHDX_HEADER_SIGNATURE || version !== 1) return null;
  let logOffset: number;
  try {
    logOffset = u64(dv, 72, 'LogOffset');
  } catch {
    return null;
  }
  return {
    signature,
    checksum,
    sequenceNumber: dv.getBigUint64(8, true),
    fileWriteGuid: parseGuid(buf, 16),
    dataWriteGuid: parseGuid(buf, 32),
    logGuid: parseGuid(buf, 48),
    logVersion: dv.getUint16(64, true),
    version,
    logLength: dv.getUint32(68, true),
    logOffset,
  };
}

/** Serializes a header into 4 KiB with its checksum (the rest of the 64 KiB block is reserved). */
export function serializeHeader(h: VhdxHeader): Uint8Array {
  const buf = new Uint8Array(VHDX_HEADER_SIZE);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, VHDX_HEADER_SIGNATURE, true);
  dv.setBigUint64(8, h.sequenceNumber, true);
  serializeGuid(h.fileWriteGuid, buf, 16);
  serializeGuid(h.dataWriteGuid, buf, 32);
  serializeGuid(h.logGuid, buf, 48);
  dv.setUint16(64, h.logVersion, true);
  dv.setUint16(66, h.version, true);
  dv.setUint32(68, h.logLength, true);
  putU64(dv, 72, h.logOffset);
  dv.setUint32(4, vhdxChecksum(buf, 4), true);
  return buf;
}

/** Parses the 64 KiB region table; `image` names the file in messages. */
export function parseRegionTable(buf: Uint8Array, image: string, at: number): RegionTable {
  const where = `${image}: region table at 0x${at.toString(16)}`;
  if (buf.length < VHDX_HEADER_BLOCK_SIZE) throw new BlockError('EINVAL', `${where} is truncated`);
  const dv = new DataView(buf.buffer, buf.byteOffset, VHDX_HEADER_BLOCK_SIZE);
  const checksum = dv.getUint32(4, true);
  if (vhdxChecksum(buf.subarray(0, VHDX_HEADER_BLOCK_SIZE), 4) !== checksum) throw new BlockError('EINVAL', `${where} has a bad checksum`);
  const signature = dv.getUint32(0, true);
  if (signature !== VHDX_REGION_SIGNATURE) throw new BlockError('EINVAL', `${where} has no 'regi' signature`);
  const entryCount = dv.getUint32(8, true);
  if (entryCount > VHDX_REGION_MAX_ENTRIES) throw new BlockError('EINVAL', `${where} has ${entryCount} entries (at most ${VHDX_REGION_MAX_ENTRIES})`);
  const entries: RegionTableEntry[] = [];
  for (let i = 0; i < entryCount; i++) {
    const e = 16 + i * 32;
    entries.push({
      guid: parseGuid(buf, e),
      fileOffset: u64(dv, e + 16, `${where}: entry ${i} FileOffset`),
      length: dv.getUint32(e + 24, true),
      required: (dv.getUint32(e + 28, true) & 1) !== 0,
    });
  }
  return { signature, checksum, entryCount, entries };
}

/** Serializes a region table into 64 KiB with its checksum. */
export function serializeRegionTable(entries: RegionTableEntry[]): Uint8Array {
  const buf = new Uint8Array(VHDX_HEADER_BLOCK_SIZE);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, VHDX_REGION_SIGNATURE, true);
  dv.setUint32(8, entries.length, true);
  entries.forEach((r, i) => {
    const e = 16 + i * 32;
    serializeGuid(r.guid, buf, e);
    putU64(dv, e + 16, r.fileOffset);
    dv.setUint32(e + 24, r.length, true);
    dv.setUint32(e + 28, r.required ? 1 : 0, true);
  });
  dv.setUint32(4, vhdxChecksum(buf, 4), true);
  return buf;
}
