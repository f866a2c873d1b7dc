/**
 * The VHDX metadata region (MS-VHDX 2.6): a 64 KiB table of entries, then the
 * items they point at (offsets relative to the region's start).
 *
 *   Metadata table header: Signature "metadata" · Reserved u16 · EntryCount u16 · Reserved2[5] u32
 *   Entry (32 bytes): ItemId guid · Offset u32 · Length u32 · IsUser, IsVirtualDisk,
 *     IsRequired (bits 0-2 of a u32) · Reserved2 u32
 *   File Parameters: BlockSize u32 · LeaveBlockAllocated (bit 0), HasParent (bit 1)
 *   Virtual Disk Size u64 · Logical Sector Size u32 · Physical Sector Size u32 · Page 83 Data (guid)
 *   Parent Locator: LocatorType guid · Reserved u16 · KeyValueCount u16, then entries of
 *     KeyOffset u32 · ValueOffset u32 · KeyLength u16 · ValueLength u16 (UTF-16LE strings,
 *     offsets relative to the locator item).
 */
import { BlockError } from '../../block/errors.js';
import { parseGuid, serializeGuid } from './guid.js';
import { putU64, u64 } from './header.js';

export const VHDX_METADATA_SIGNATURE = 'metadata';
export const VHDX_METADATA_TABLE_SIZE = 64 * 1024;
export const VHDX_METADATA_MAX_ENTRIES = 2047;
export const VHDX_META_FLAGS_IS_USER = 1;
export const VHDX_META_FLAGS_IS_VIRTUAL_DISK = 2;
export const VHDX_META_FLAGS_IS_REQUIRED = 4;
export const VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED = 1;
export const VHDX_PARAMS_HAS_PARENT = 2;

export interface MetadataTableEntry {
  itemId: string;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

export interface FileParameters {
  blockSize: number;
  leaveBlockAllocated: boolean;
  hasParent: boolean;
}

export interface ParentLocator {
  locatorType: string;
  entries: [string, string][];
}

export function parseMetadataTable(buf: Uint8Array, where: string): MetadataTableEntry[] {
  if (buf.length < VHDX_METADATA_TABLE_SIZE) throw new BlockError('EINVAL', `${where}: metadata table is truncated`);
  for (let i = 0; i < 8; i++) {
    if (buf[i] !== VHDX_METADATA_SIGNATURE.charCodeAt(i)) throw new BlockError('EINVAL', `${where}: metadata table has no 'metadata' signature`);
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, VHDX_METADATA_TABLE_SIZE);
  const count = dv.getUint16(10, true);
  if (count > VHDX_METADATA_MAX_ENTRIES) throw new BlockError('EINVAL', `${where}: metadata table has ${count} entries (at most ${VHDX_METADATA_MAX_ENTRIES})`);
  const out: MetadataTableEntry[] = [];
  for (let i = 0; i < count; i++) {
    const e = 32 + i * 32;
    const flags = dv.getUint32(e + 24, true);
    out.push({
      itemId: parseGuid(buf, e),
      offset: dv.getUint32(e + 16, true),
      length: dv.getUint32(e + 20, true),
      isUser: (flags & VHDX_META_FLAGS_IS_USER) !== 0,
      isVirtualDisk: (flags & VHDX_META_FLAGS_IS_VIRTUAL_DISK) !== 0,
      isRequired: (flags & VHDX_META_FLAGS_IS_REQUIRED) !== 0,
    });
  }
  return out;
}

export function serializeMetadataTable(entries: MetadataTableEntry[]): Uint8Array {
  const buf = new Uint8Array(VHDX_METADATA_TABLE_SIZE);
  for (let i = 0; i < 8; i++) buf[i] = VHDX_METADATA_SIGNATURE.charCodeAt(i);
  const dv = new DataView(buf.buffer);
  dv.setUint16(10, entries.length, true);
  entries.forEach((m, i) => {
    const e = 32 + i * 32;
    serializeGuid(m.itemId, buf, e);
    dv.setUint32(e + 16, m.offset, true);
    dv.setUint32(e + 20, m.length, true);
    dv.setUint32(e + 24, (m.isUser ? 1 : 0) | (m.isVirtualDisk ? 2 : 0) | (m.isRequired ? 4 : 0), true);
  });
  return buf;
}

export function parseFileParameters(buf: Uint8Array): FileParameters {
  const dv = new DataView(buf.buffer, buf.byteOffset, 8);
  const bits = dv.getUint32(4, true);
  return { blockSize: dv.getUint32(0, true), leaveBlockAllocated: (bits & 1) !== 0, hasParent: (bits & 2) !== 0 };
}

export function serializeFileParameters(p: FileParameters): Uint8Array {
  const buf = new Uint8Array(8);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, p.blockSize, true);
  dv.setUint32(4, (p.leaveBlockAllocated ? 1 : 0) | (p.hasParent ? 2 : 0), true);
  return buf;
}

export function parseVirtualDiskSize(buf: Uint8Array, where: string): number {
  return u64(new DataView(buf.buffer, buf.byteOffset, 8), 0, `${where}: VirtualDiskSize`);
}

export function serializeVirtualDiskSize(size: number): Uint8Array {
  const buf = new Uint8Array(8);
  putU64(new DataView(buf.buffer), 0, size);
  return buf;
}

export function parseSectorSize(buf: Uint8Array): number {
  return new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0, true);
}

export function serializeSectorSize(v: number): Uint8Array {
  const buf = new Uint8Array(4);
  new DataView(buf.buffer).setUint32(0, v, true);
  return buf;
}

function utf16(buf: Uint8Array, at: number, bytes: number): string {
  let s = '';
  const dv = new DataView(buf.buffer, buf.byteOffset);
  for (let i = 0; i + 1 < bytes; i += 2) s += String.fromCharCode(dv.getUint16(at + i, true));
  return s;
}

/** Parses a parent locator item (`buf` is the whole item). */
export function parseParentLocator(buf: Uint8Array, where: string): ParentLocator {
  if (buf.length < 20) throw new BlockError('EINVAL', `${where}: parent locator is truncated (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const count = dv.getUint16(18, true);
  if (20 + count * 12 > buf.length) throw new BlockError('EINVAL', `${where}: parent locator has ${count} entries, more than its ${buf.length} bytes hold`);
  const entries: [string, string][] = [];
  for (let i = 0; i < count; i++) {
    const e = 20 + i * 12;
    const ko = dv.getUint32(e, true);
    const vo = dv.getUint32(e + 4, true);
    const kl = dv.getUint16(e + 8, true);
    const vl = dv.getUint16(e + 10, true);
    if (ko + kl > buf.length || vo + vl > buf.length || kl === 0 || vl === 0) {
      throw new BlockError('EINVAL', `${where}: parent locator entry ${i} points outside the locator`);
    }
    entries.push([utf16(buf, ko, kl), utf16(buf, vo, vl)]);
  }
  return { locatorType: parseGuid(buf, 0), entries };
}

/** Serializes a parent locator item: header, entries, then the UTF-16LE strings. */
export function serializeParentLocator(p: ParentLocator): Uint8Array {
  const strings: number[] = [];
  const table: [number, number, number, number][] = [];
  let at = 20 + p.entries.length * 12;
  const put = (s: string): [number, number] => {
    const start = at;
    for (const ch of s) {
      const c = ch.charCodeAt(0);
      strings.push(c & 0xff, c >> 8);
    }
    at += s.length * 2;
    return [start, s.length * 2];
  };
  for (const [k, v] of p.entries) {
    const [ko, kl] = put(k);
    const [vo, vl] = put(v);
    table.push([ko, vo, kl, vl]);
  }
  const buf = new Uint8Array(at);
  const dv = new DataView(buf.buffer);
  serializeGuid(p.locatorType, buf, 0);
  dv.setUint16(18, p.entries.length, true);
  table.forEach(([ko, vo, kl, vl], i) => {
    const e = 20 + i * 12;
    dv.setUint32(e, ko, true);
    dv.setUint32(e + 4, vo, true);
    dv.setUint16(e + 8, kl, true);
    dv.setUint16(e + 10, vl, true);
  });
  buf.set(strings, 20 + p.entries.length * 12);
  return buf;
}
