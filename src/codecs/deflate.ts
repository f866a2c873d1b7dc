/**
 * Raw deflate with a 4 KiB window, level 6, memLevel 9: the settings QEMU
 * compresses qcow2 clusters with (QEMU inflates with windowBits -12, so a
 * larger window would make clusters it cannot read). Formats that store
 * deflate streams (qcow2 now; vmdk, dmg, qcow later) compress through
 * `deflateRaw4k`; environments plug in a faster implementation with
 * `installDeflateRaw4k` (src/node.ts installs Node's C zlib, ~5x pako on
 * 64 KiB clusters). Browsers keep pako: their CompressionStream cannot set
 * the window size.
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */
import { deflateRaw } from 'pako';

export type DeflateRaw4k = (input: Uint8Array) => Uint8Array;

const pakoDeflateRaw4k: DeflateRaw4k = (input) => deflateRaw(input, { windowBits: 12, level: 6, memLevel: 9 });
let impl: DeflateRaw4k = pakoDeflateRaw4k;

/** Swaps in another implementation with the same settings; null restores pako. */
export function installDeflateRaw4k(fn: DeflateRaw4k | null): void {
  impl = fn ?? pakoDeflateRaw4k;
}

/** Compresses `input` as one raw deflate stream with QEMU's settings. */
export function deflateRaw4k(input: Uint8Array): Uint8Array {
  return impl(input);
}
