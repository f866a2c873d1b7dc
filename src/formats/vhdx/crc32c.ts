/**
 * CRC-32C (Castagnoli), the checksum of every VHDX header, region table and
 * log entry. Reflected polynomial 0x82F63B78; `crc32c(buf)` is the standard
 * value (initial ~0, final xor ~0). `crc32cUpdate` chains pieces.
 *
 * An open checks 72 KiB (two 4 KiB headers and the 64 KiB region table),
 * once per process, so a JS loop runs in V8's interpreter and baseline
 * tiers: about 15 M instructions, several milliseconds of a convert's
 * start-up. Where the wasm kernels are loaded (convert, map, check,
 * compare…) the kernel computes it (asm/crc32c.ts, slicing-by-8); elsewhere
 * (info) the one-table byte loop below, which is also the kernel's reference
 * in the tests.
 */
import { wasmCrc32cUpdate } from '../../wasm/crc32c.js';

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** Below this a call into the kernel costs more than the JS loop. */
const KERNEL_MIN = 64;

/** Continues a running CRC (pass 0xffffffff first, xor with 0xffffffff at the end). */
export function crc32cUpdate(crc: number, buf: Uint8Array): number {
  if (buf.length >= KERNEL_MIN) {
    const c = wasmCrc32cUpdate(crc, buf);
    if (c !== null) return c;
  }
  return crc32cUpdateJs(crc, buf);
}

/** The same register a byte a step in JS (the fallback, and the kernel's reference in tests). */
export function crc32cUpdateJs(crc: number, buf: Uint8Array): number {
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
  c = crc32cUpdate(c, ZERO4);
  c = crc32cUpdate(c, buf.subarray(at + 4));
  return (c ^ 0xffffffff) >>> 0;
}

const ZERO4 = new Uint8Array(4);
