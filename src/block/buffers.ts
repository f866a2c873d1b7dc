/**
 * Where I/O buffers come from, and the zero test used on them.
 *
 * The core asks this module for bounce buffers and for "is this all zeros?".
 * By default buffers are plain Uint8Arrays and the test is a JS loop; when the
 * WebAssembly kernels are loaded (src/wasm/), `installBufferProvider` swaps in
 * buffers carved from wasm memory and the SIMD zero scan, so guest data is
 * scanned where it lies instead of being copied into wasm memory first.
 */

export interface BufferProvider {
  /** A buffer of exactly `bytes` bytes; contents undefined. */
  alloc(bytes: number): Uint8Array;
  /** Returns a buffer obtained from `alloc`; it must not be used afterwards. */
  free(buf: Uint8Array): void;
  /** True when every byte of `buf` is zero (QEMU's buffer_is_zero). */
  isZero(buf: Uint8Array): boolean;
}

function isZeroJs(buf: Uint8Array): boolean {
  const n = buf.length;
  let i = 0;
  // Word-at-a-time where the view is 4-byte aligned; bytes for head and tail.
  if ((buf.byteOffset & 3) === 0 && n >= 64) {
    const words = new Uint32Array(buf.buffer, buf.byteOffset, n >>> 2);
    let acc = 0;
    for (let w = 0; w < words.length; w += 16) {
      const end = Math.min(w + 16, words.length);
      for (let k = w; k < end; k++) acc |= words[k]!;
      if (acc !== 0) return false;
    }
    i = words.length << 2;
  }
  for (; i < n; i++) if (buf[i] !== 0) return false;
  return true;
}

const plainProvider: BufferProvider = {
  alloc: (bytes) => new Uint8Array(bytes),
  free: () => {},
  isZero: isZeroJs,
};

let provider: BufferProvider = plainProvider;

export function installBufferProvider(p: BufferProvider | null): void {
  provider = p ?? plainProvider;
}

export function allocBuffer(bytes: number): Uint8Array {
  return provider.alloc(bytes);
}

export function freeBuffer(buf: Uint8Array): void {
  provider.free(buf);
}

export function bufferIsZero(buf: Uint8Array): boolean {
  return provider.isZero(buf);
}

/** The plain JS zero test, exported as the reference the wasm kernel is tested against. */
export const bufferIsZeroReference = isZeroJs;
