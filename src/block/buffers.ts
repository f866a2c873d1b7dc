/**
 * Where I/O buffers come from, and the zero test used on them.
 *
 * The core asks this module for bounce buffers and for "is this all zeros?".
 * By default buffers are plain Uint8Arrays and the test is a JS loop; when the
 * WebAssembly kernels are loaded (src/wasm/), src/runtime.ts calls
 * `installBufferProvider` with buffers carved from wasm memory and the SIMD
 * zero scan, so guest data is scanned where it lies instead of being copied
 * into wasm memory first.
 */

import { blockRunEndJs, bufferIsZeroJs } from '../wasm/zero-js.js';

export interface BufferProvider {
  /** A buffer of exactly `bytes` bytes; contents undefined. */
  alloc(bytes: number): Uint8Array;
  /** Returns a buffer obtained from `alloc`; it must not be used afterwards. */
  free(buf: Uint8Array): void;
  /** True when every byte of `buf` is zero (QEMU's buffer_is_zero). */
  isZero(buf: Uint8Array): boolean;
  /**
   * End of the run of `block`-byte blocks of `buf` starting at `from` whose
   * all-zero test is `zero`: where the first block of the other kind starts,
   * or buf.length (the last block may be shorter).
   */
  runEnd(buf: Uint8Array, from: number, block: number, zero: boolean): number;
}

const plainProvider: BufferProvider = {
  alloc: (bytes) => new Uint8Array(bytes),
  free: () => {},
  isZero: bufferIsZeroJs,
  runEnd: blockRunEndJs,
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

/** See BufferProvider.runEnd: with -S, how far a convert step's zero (or data) blocks go. */
export function zeroRunEnd(buf: Uint8Array, from: number, block: number, zero: boolean): number {
  return provider.runEnd(buf, from, block, zero);
}

/** The plain JS zero test, exported as the reference the wasm kernel is tested against. */
export const bufferIsZeroReference = bufferIsZeroJs;
