/**
 * Zero detection (QEMU's buffer_is_zero) on any Uint8Array.
 *
 * A view into wasm memory is scanned in place by the SIMD kernel. Any other
 * buffer is either tested by the JS word loop (zero-js.ts) or
 * staged through the 960 KiB scratch area and scanned there. Staging costs a
 * memcpy, but into a cache-resident area, so on large buffers it still runs
 * at 2-3x the JS loop (bench/wasm-kernels.bench.mjs: ~20-38 GB/s vs ~9-12
 * GB/s at 64 MiB); below 16 KiB the JS loop wins because there is little to
 * amortise. The first 256 bytes are always tested in JS first, so non-zero
 * data (the common case) returns before anything is copied.
 */
import { blockRunEndJs, bufferIsZeroJs } from './zero-js.js';
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState } from './module.js';

/** Below this a foreign buffer is tested in JS: staging would not pay for itself. */
const STAGE_MIN = 16 * 1024;

export function wasmBufferIsZero(buf: Uint8Array): boolean {
  const s = wasmState();
  if (!s) return bufferIsZeroJs(buf);
  if (buf.buffer === s.memory.buffer) return s.exports.bufferIsZero(buf.byteOffset, buf.length) !== 0;
  const n = buf.length;
  if (n < STAGE_MIN) return bufferIsZeroJs(buf);
  if (!bufferIsZeroJs(buf.subarray(0, 256))) return false;
  for (let off = 256; off < n; off += SCRATCH_BYTES) {
    const k = Math.min(SCRATCH_BYTES, n - off);
    s.u8.set(buf.subarray(off, off + k), SCRATCH_BASE);
    if (s.exports.bufferIsZero(SCRATCH_BASE, k) === 0) return false;
  }
  return true;
}

/**
 * blockRunEndJs's answer (see zero-js.ts), from the kernel in one call for a
 * view into wasm memory (a convert step's buffer), else from the JS loop.
 */
export function wasmBlockRunEnd(buf: Uint8Array, from: number, block: number, zero: boolean): number {
  const s = wasmState();
  if (!s || buf.buffer !== s.memory.buffer || block < 1) return blockRunEndJs(buf, from, block, zero);
  return s.exports.blockRunEnd(buf.byteOffset, buf.length, from, block, zero ? 1 : 0);
}
