/**
 * The one seeded generator the tests share (xorshift32): workloads, random
 * data and model tests must be reproducible from a seed, and the browser and
 * Node sides of a test must draw the same numbers. No node:* imports, so
 * browser tests can use it too.
 */

/** Successive 32-bit unsigned values of xorshift32 from `seed` (0 counts as 1). */
export function xorshift32(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Uniform numbers in [0, 1) from `seed`. */
export function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32;
}

/** `n` deterministic pseudo-random bytes from `seed`. */
export function seededBytes(n: number, seed: number): Uint8Array {
  const next = xorshift32(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = next() & 0xff;
  return out;
}
