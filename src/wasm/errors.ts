/**
 * The wasm layer's own error type. src/wasm/ is a leaf (it imports nothing
 * outside this folder), so it cannot throw the block layer's BlockError; it
 * throws this instead, with the same POSIX-like codes, and the block layer
 * translates where such an error can reach a user (block/dirty-bitmap.ts).
 */
export type WasmErrorCode = 'EINVAL' | 'EFBIG' | 'ENOENT';

export class WasmError extends Error {
  override readonly name = 'WasmError';
  readonly code: WasmErrorCode;

  constructor(code: WasmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Formats an address the way the block layer formats offsets (hex with 0x). */
export function hexAddr(n: number): string {
  return '0x' + n.toString(16);
}
