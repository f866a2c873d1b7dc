/**
 * UDIF checksums (the `UDIFChecksum` record inside the koly trailer and each
 * mish table): a type, a size in bits and up to 128 bytes of value. Type 2 is
 * CRC-32 (the zlib/IEEE polynomial), stored big-endian in the first 4 bytes.
 *
 * The koly's MasterChecksum is the CRC-32 of the CRC-32 values of every blkx
 * table whose own checksum is CRC-32, concatenated in table order.
 */
export const UDIF_CHECKSUM_NONE = 0;
export const UDIF_CHECKSUM_CRC32 = 2;
export const UDIF_CHECKSUM_DATA_BYTES = 128;

import { crc32 } from '../../codecs/crc32.js';

export { crc32 };

/** The 128-byte checksum field holding one CRC-32 value. */
export function crc32Field(value: number): Uint8Array {
  const out = new Uint8Array(UDIF_CHECKSUM_DATA_BYTES);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

/** The CRC-32 value stored in a checksum field. */
export function crc32OfField(field: Uint8Array): number {
  return new DataView(field.buffer, field.byteOffset, 4).getUint32(0);
}

/** The master checksum over the CRC-32 values of the blkx tables, in order. */
export function masterChecksum(blkxCrcs: readonly number[]): number {
  const buf = new Uint8Array(blkxCrcs.length * 4);
  const dv = new DataView(buf.buffer);
  blkxCrcs.forEach((c, i) => dv.setUint32(i * 4, c >>> 0));
  return crc32(buf);
}
