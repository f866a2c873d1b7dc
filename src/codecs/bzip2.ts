/**
 * The bzip2 decompressor seam (DMG's UDBZ chunks). No environment-neutral
 * implementation ships: the host installs one. src/node.ts installs libbzip2
 * compiled to wasm (@foxglove/wasm-bz2), whose emscripten loader reads its
 * .wasm with node:fs, so the browser build has none yet and such chunks are
 * ENOTSUP there.
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */

/** Decompresses a bzip2 stream into at most `outLength` bytes; throws past that or on a bad stream. */
export type Bzip2Decompress = (input: Uint8Array, outLength: number) => Promise<Uint8Array>;

let impl: Bzip2Decompress | null = null;

export function installBzip2(fn: Bzip2Decompress | null): void {
  impl = fn;
}

/** The installed decompressor, or null when the host has none. */
export function bzip2Decompressor(): Bzip2Decompress | null {
  return impl;
}
