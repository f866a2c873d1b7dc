/**
 * zlib-wrapped inflate (RFC 1950), as stream-optimized VMDK grains, DMG zlib
 * chunks and cloop blocks store their data. pako by default, so browsers need
 * nothing else; `installInflateZlib` plugs in a faster implementation (src/node.ts
 * installs Node's C zlib). `maxOutputLength` bounds what one call may produce:
 * a hostile stream that inflates past it is an error, never an unbounded
 * allocation (Node's zlib stops at the bound; pako's result is checked after).
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */
import { inflate } from 'pako';

export type ZlibInflate = (input: Uint8Array, maxOutputLength?: number) => Uint8Array;

const pakoInflate: ZlibInflate = (input, maxOutputLength) => {
  const out = inflate(input);
  if (maxOutputLength !== undefined && out.length > maxOutputLength) throw new RangeError(`inflated data exceeds ${maxOutputLength} bytes`);
  return out;
};
let impl: ZlibInflate = pakoInflate;

/** Swaps in another zlib inflate (null restores pako). */
export function installInflateZlib(fn: ZlibInflate | null): void {
  impl = fn ?? pakoInflate;
}

/** Inflates one zlib stream; throws (any Error) on a corrupt stream or one longer than `maxOutputLength`. */
export function inflateZlib(input: Uint8Array, maxOutputLength?: number): Uint8Array {
  return impl(input, maxOutputLength);
}
