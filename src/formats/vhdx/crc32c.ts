/**
 * CRC-32C (Castagnoli), the checksum of every VHDX header, region table and
 * log entry. Table-driven, reflected polynomial 0x82F63B78; `crc32c(buf)` is
 * the standard value (initial ~0, final xor ~0). `crc32cUpdate` chains pieces.
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** Continues a running CRC (pass 0xffffffff first, xor with 0xffffffff at the end). */
export function crc32cUpdate(crc: number, buf: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function crc32c(buf: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, buf) ^ 0xffffffff) >>> 0;
}

/** The checksum of `buf` with its 4-byte checksum field at `at` taken as zero (the VHDX rule). */
export function vhdxChecksum(buf: Uint8Array, at: number): number {
  let c = crc32cUpdate(0xffffffff, buf.subarray(0, at));
  c = crc32cUpdate(c, new Uint8Array(4));
  c = crc32cUpdate(c, buf.subarray(at + 4));
  return (c ^ 0xffffffff) >>> 0;
}
