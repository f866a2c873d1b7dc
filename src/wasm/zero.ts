/**
 * Zero detection (QEMU's buffer_is_zero) on any Uint8Array.
 *
 * A view into wasm memory is scanned in place by the SIMD kernel. Any other
 * buffer has two choices, both measured in bench/wasm-kernels.bench.mjs:
 * the JS word loop (bufferIsZeroReference, ~1/3 the kernel's speed on large
 * buffers) or staging through the 960 KiB scratch area (a memcpy, then the
 * kernel: the copy costs about what the scan saves). Staging wins for large
 * zero buffers since TypedArray.set is a memcpy; short buffers and the head
 * of every buffer are tested in JS so non-zero data, the common case, exits
 * before anything is copied.
 */
import { bufferIsZeroReference } from '../block/buffers.js';
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState } from './module.js';

/** Below this a foreign buffer is tested in JS: staging would not pay for itself. */
const STAGE_MIN = 16 * 1024;

export function wasmBufferIsZero(buf: Uint8Array): boolean {
  const s = wasmState();
  if (!s) return bufferIsZeroReference(buf);
  if (buf.buffer === s.memory.buffer) return s.exports.bufferIsZero(buf.byteOffset, buf.length) !== 0;
  const n = buf.length;
  if (n < STAGE_MIN) return bufferIsZeroReference(buf);
  if (!bufferIsZeroReference(buf.subarray(0, 256))) return false;
  for (let off = 256; off < n; off += SCRATCH_BYTES) {
    const k = Math.min(SCRATCH_BYTES, n - off);
    s.u8.set(buf.subarray(off, off + k), SCRATCH_BASE);
    if (s.exports.bufferIsZero(SCRATCH_BASE, k) === 0) return false;
  }
  return true;
}
