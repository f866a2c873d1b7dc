/**
 * CRC-32C (Castagnoli), the checksum of every VHDX header, region table and
 * log entry. Reflected polynomial 0x82F63B78; `crc32c(buf)` is the standard
 * value (initial ~0, final xor ~0). `crc32cUpdate` chains pieces.
 *
 * Slicing-by-8 (eight 256-entry tables, eight bytes a step): opening an
 * image checks 72 KiB (two 4 KiB headers and the 64 KiB region table), once
 * per process, so this code runs in V8's interpreter, where the cost is the
 * bytecodes per byte: a byte a step took about 20 M instructions per open,
 * eight bytes a step (read as two 32-bit words where the buffer allows) about
 * a fifth of that. `crc32cBytewise` is the one-table reference the tests
 * compare it with.
 */
const POLY = 0x82f63b78;

/** TABLES[k * 256 + b]: the CRC of byte b followed by k zero bytes. */
const TABLES = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + i] = c;
    }
  }
  return t;
})();

/** Whether 32-bit words read from bytes are little-endian here (they are on every platform Node and browsers run on). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Continues a running CRC (pass 0xffffffff first, xor with 0xffffffff at the end). */
export function crc32cUpdate(crc: number, buf: Uint8Array): number {
  const t = TABLES;
  let c = crc >>> 0;
  let i = 0;
  const len = buf.length;
  // Bytes up to a 4-byte boundary one at a time; then 8 a step, as two words when aligned.
  const head = Math.min(len, (4 - (buf.byteOffset & 3)) & 3);
  for (; i < head; i++) c = t[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  const steps = (len - i) >> 3;
  if (steps > 0) {
    if (LITTLE_ENDIAN) {
      const words = new Uint32Array(buf.buffer, buf.byteOffset + i, steps * 2);
      for (let w = 0; w < words.length; w += 2) {
        const lo = c ^ words[w]!;
        const hi = words[w + 1]!;
        c =
          t[0x700 + (lo & 0xff)]! ^
          t[0x600 + ((lo >>> 8) & 0xff)]! ^
          t[0x500 + ((lo >>> 16) & 0xff)]! ^
          t[0x400 + (lo >>> 24)]! ^
          t[0x300 + (hi & 0xff)]! ^
          t[0x200 + ((hi >>> 8) & 0xff)]! ^
          t[0x100 + ((hi >>> 16) & 0xff)]! ^
          t[hi >>> 24]!;
      }
      i += steps * 8;
    } else {
      for (const end = i + steps * 8; i < end; i += 8) {
        const lo = c ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24));
        c =
          t[0x700 + (lo & 0xff)]! ^
          t[0x600 + ((lo >>> 8) & 0xff)]! ^
          t[0x500 + ((lo >>> 16) & 0xff)]! ^
          t[0x400 + (lo >>> 24)]! ^
          t[0x300 + buf[i + 4]!]! ^
          t[0x200 + buf[i + 5]!]! ^
          t[0x100 + buf[i + 6]!]! ^
          t[buf[i + 7]!]!;
      }
    }
  }
  for (; i < len; i++) c = t[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** The same CRC a byte a step with one table: the reference for tests. */
export function crc32cBytewise(crc: number, buf: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = TABLES[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function crc32c(buf: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, buf) ^ 0xffffffff) >>> 0;
}

/** The checksum of `buf` with its 4-byte checksum field at `at` taken as zero (the VHDX rule). */
export function vhdxChecksum(buf: Uint8Array, at: number): number {
  let c = crc32cUpdate(0xffffffff, buf.subarray(0, at));
  c = crc32cUpdate(c, ZERO4);
  c = crc32cUpdate(c, buf.subarray(at + 4));
  return (c ^ 0xffffffff) >>> 0;
}

const ZERO4 = new Uint8Array(4);
