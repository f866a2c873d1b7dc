/**
 * CRC-32C's running register (no initial or final inversion) through the
 * kernel: a view into wasm memory is read in place, any other buffer is
 * staged through the scratch area. Null before the module is loaded (the
 * caller then runs its JS loop). VHDX checks 72 KiB of checksums at every
 * open; in the interpreter that was several milliseconds of a convert's
 * start-up, in the kernel it is microseconds.
 */
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState } from './module.js';

export function wasmCrc32cUpdate(crc: number, buf: Uint8Array): number | null {
  const s = wasmState();
  if (!s) return null;
  if (buf.buffer === s.memory.buffer) return s.exports.crc32cUpdate(crc, buf.byteOffset, buf.length) >>> 0;
  let c = crc >>> 0;
  for (let off = 0; off < buf.length; off += SCRATCH_BYTES) {
    const k = Math.min(SCRATCH_BYTES, buf.length - off);
    s.u8.set(buf.subarray(off, off + k), SCRATCH_BASE);
    c = s.exports.crc32cUpdate(c, SCRATCH_BASE, k) >>> 0;
  }
  return c;
}
