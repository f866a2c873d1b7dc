/**
 * Inflates one zlib stream (RFC 1950) into a buffer of exactly the size the
 * format promises, as QEMU's dmg and cloop readers do (`inflate(Z_FINISH)` must
 * end the stream with `total_out` equal to the chunk size).
 *
 * Output is bounded: a stream that would produce more than `out.length` bytes
 * is stopped as soon as it overflows, so a hostile chunk cannot make us
 * allocate more than the format's own limit.
 */
import { Inflate } from 'pako';

/** Fills `out` exactly from one zlib stream; returns null, or why the stream was refused. */
export type InflateExact = (input: Uint8Array, out: Uint8Array) => string | null;

let impl: InflateExact = pakoInflateExact;

/** Swaps in a faster inflate with the same contract (src/node.ts installs Node's C zlib). */
export function installInflateExact(fn: InflateExact | null): void {
  impl = fn ?? pakoInflateExact;
}

/** Why a stream was refused, or null when `out` was filled exactly. */
export function inflateExact(input: Uint8Array, out: Uint8Array): string | null {
  return impl(input, out);
}

/** The environment-neutral inflate (pako), stopped as soon as the output would overflow. */
export function pakoInflateExact(input: Uint8Array, out: Uint8Array): string | null {
  let filled = 0;
  let overflow = false;
  const inf = new Inflate({ chunkSize: Math.min(Math.max(out.length, 512), 1 << 20) });
  inf.onData = (chunk) => {
    const c = chunk as Uint8Array;
    if (filled + c.length > out.length) {
      overflow = true;
      throw new RangeError('overflow');
    }
    out.set(c, filled);
    filled += c.length;
  };
  try {
    inf.push(input, true);
  } catch (e) {
    if (overflow) return `the stream inflates to more than ${out.length} bytes`;
    return `the stream does not inflate (${(e as Error).message})`;
  }
  if (inf.err) return `the stream does not inflate (${inf.msg || `zlib error ${inf.err}`})`;
  if (!(inf as unknown as { ended: boolean }).ended) return 'the stream is truncated';
  if (filled !== out.length) return `the stream inflates to ${filled} bytes, not ${out.length}`;
  return null;
}
