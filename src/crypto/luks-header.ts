/**
 * LUKS1 on-disk header (big-endian, 592 bytes at offset 0) and its eight key
 * slots, with the field names of the LUKS1 specification.
 *
 *   0    magic[6] "LUKS\xba\xbe"   6   version (1)
 *   8    cipher_name[32] "aes"     40  cipher_mode[32] "xts-plain64"
 *   72   hash_spec[32] "sha256"    104 payload_offset (sectors)
 *   108  key_bytes                 112 mk_digest[20]
 *   132  mk_digest_salt[32]        164 mk_digest_iter
 *   168  uuid[40]                  208 key slots, 48 bytes each:
 *        active (0x00AC71F3 / 0x0000DEAD), iterations, salt[32],
 *        key_material_offset (sectors), stripes
 */
import { Struct } from '../formats/struct.js';

export const LUKS_MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
export const LUKS_HEADER_SIZE = 592;
export const LUKS_NUM_KEY_SLOTS = 8;
export const LUKS_KEY_SLOT_OFFSET = 208;
export const LUKS_KEY_ENABLED = 0x00ac71f3;
export const LUKS_KEY_DISABLED = 0x0000dead;
export const LUKS_SECTOR_SIZE = 512;
export const LUKS_DIGEST_SIZE = 20;
/** QEMU's QCRYPTO_BLOCK_LUKS_STRIPES: anti-forensic stripes per key slot. */
export const LUKS_STRIPES = 4000;

export interface LuksHeader {
  magic: Uint8Array;
  version: number;
  cipher_name: string;
  cipher_mode: string;
  hash_spec: string;
  payload_offset: number;
  key_bytes: number;
  mk_digest: Uint8Array;
  mk_digest_salt: Uint8Array;
  mk_digest_iter: number;
  uuid: string;
}

export const LUKS_HEADER = new Struct<LuksHeader>('luks header', LUKS_KEY_SLOT_OFFSET, [
  { name: 'magic', type: 'bytes', offset: 0, length: 6 },
  { name: 'version', type: 'u16be', offset: 6 },
  { name: 'cipher_name', type: 'cstring', offset: 8, length: 32 },
  { name: 'cipher_mode', type: 'cstring', offset: 40, length: 32 },
  { name: 'hash_spec', type: 'cstring', offset: 72, length: 32 },
  { name: 'payload_offset', type: 'u32be', offset: 104 },
  { name: 'key_bytes', type: 'u32be', offset: 108 },
  { name: 'mk_digest', type: 'bytes', offset: 112, length: 20 },
  { name: 'mk_digest_salt', type: 'bytes', offset: 132, length: 32 },
  { name: 'mk_digest_iter', type: 'u32be', offset: 164 },
  { name: 'uuid', type: 'cstring', offset: 168, length: 40 },
]);

export interface LuksKeySlot {
  active: number;
  iterations: number;
  salt: Uint8Array;
  key_material_offset: number;
  stripes: number;
}

export const LUKS_KEY_SLOT = new Struct<LuksKeySlot>('luks key slot', 48, [
  { name: 'active', type: 'u32be', offset: 0 },
  { name: 'iterations', type: 'u32be', offset: 4 },
  { name: 'salt', type: 'bytes', offset: 8, length: 32 },
  { name: 'key_material_offset', type: 'u32be', offset: 40 },
  { name: 'stripes', type: 'u32be', offset: 44 },
]);

export function hasLuksMagic(buf: Uint8Array): boolean {
  return buf.length >= 6 && LUKS_MAGIC.every((b, i) => buf[i] === b);
}

export function parseLuks(buf: Uint8Array): { header: LuksHeader; slots: LuksKeySlot[] } {
  const header = LUKS_HEADER.parse(buf);
  const slots: LuksKeySlot[] = [];
  for (let i = 0; i < LUKS_NUM_KEY_SLOTS; i++) slots.push(LUKS_KEY_SLOT.parse(buf, LUKS_KEY_SLOT_OFFSET + i * LUKS_KEY_SLOT.size));
  return { header, slots };
}

/** The 592-byte header with its eight key slots, as parseLuks reads it back. */
export function serializeLuks(header: LuksHeader, slots: readonly LuksKeySlot[]): Uint8Array {
  const out = LUKS_HEADER.serialize(header, new Uint8Array(LUKS_HEADER_SIZE));
  slots.forEach((s, i) => LUKS_KEY_SLOT.serialize(s, out, LUKS_KEY_SLOT_OFFSET + i * LUKS_KEY_SLOT.size));
  return out;
}
