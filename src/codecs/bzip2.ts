/**
 * The bzip2 decompressor seam (DMG's UDBZ chunks). The default is the
 * TypeScript decoder (bzip2-decode.ts), loaded on the first bzip2 chunk, so
 * every host has one (the browser's Web Worker uses it). src/node.ts
 * installs libbzip2 compiled to wasm (@foxglove/wasm-bz2) instead, which
 * is faster but whose emscripten loader reads its .wasm with node:fs.
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */

/** Decompresses a bzip2 stream into at most `outLength` bytes; throws past that or on a bad stream. */
export type Bzip2Decompress = (input: Uint8Array, outLength: number) => Promise<Uint8Array>;

/** The TypeScript decoder, loaded when first used. */
const builtin: Bzip2Decompress = async (input, outLength) => (await import('./bzip2-decode.js')).bzip2Decompress(input, outLength);

let impl: Bzip2Decompress | null = builtin;

/** Installs the host's decompressor; null removes any (bzip2 chunks are then ENOTSUP). */
export function installBzip2(fn: Bzip2Decompress | null): void {
  impl = fn;
}

/** The installed decompressor, or null when the host has none. */
export function bzip2Decompressor(): Bzip2Decompress | null {
  return impl;
}
