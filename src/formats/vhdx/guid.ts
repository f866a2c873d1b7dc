/**
 * MS-VHDX GUIDs: 16 bytes stored as Data1 (u32 LE), Data2 (u16 LE), Data3
 * (u16 LE), Data4 (8 bytes). We keep them as their canonical upper-case text
 * ("2DC27766-F623-4200-9D64-115E9BFD4A08") so known ones compare as strings.
 */
export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** Region table GUIDs. */
export const BAT_GUID = '2DC27766-F623-4200-9D64-115E9BFD4A08';
export const METADATA_GUID = '8B7CA206-4790-4B9A-B8FE-575F050F886E';

/** Metadata item GUIDs. */
export const FILE_PARAMETERS_GUID = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
export const VIRTUAL_DISK_SIZE_GUID = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
export const PAGE83_DATA_GUID = 'BECA12AB-B2E6-4523-93EF-C309E000C746';
export const LOGICAL_SECTOR_SIZE_GUID = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F';
export const PHYSICAL_SECTOR_SIZE_GUID = 'CDA348C7-445D-4471-9CC9-E9885251C556';
export const PARENT_LOCATOR_GUID = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';
/** Parent locator type of a VHDX parent. */
export const VHDX_PARENT_LOCATOR_TYPE = 'B04AEFB7-D19E-4A81-B789-25B8E9445913';

const hex = (v: number, n: number) => v.toString(16).toUpperCase().padStart(n, '0');

export function parseGuid(buf: Uint8Array, at: number): string {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, 16);
  const d4 = [...buf.subarray(at + 8, at + 16)].map((b) => hex(b, 2)).join('');
  return `${hex(dv.getUint32(0, true), 8)}-${hex(dv.getUint16(4, true), 4)}-${hex(dv.getUint16(6, true), 4)}-${d4.slice(0, 4)}-${d4.slice(4)}`;
}

export function serializeGuid(guid: string, buf: Uint8Array, at: number): void {
  const h = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new Error(`not a GUID: ${guid}`);
  const dv = new DataView(buf.buffer, buf.byteOffset + at, 16);
  dv.setUint32(0, Number.parseInt(h.slice(0, 8), 16), true);
  dv.setUint16(4, Number.parseInt(h.slice(8, 12), 16), true);
  dv.setUint16(6, Number.parseInt(h.slice(12, 16), 16), true);
  for (let i = 0; i < 8; i++) buf[at + 8 + i] = Number.parseInt(h.slice(16 + 2 * i, 18 + 2 * i), 16);
}

/** A random (version 4) GUID. */
export function randomGuid(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[7] = (b[7]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return parseGuid(b, 0);
}
