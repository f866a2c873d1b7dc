/**
 * Assertions usable inside a worker (vitest's expect lives in the page only).
 * A failure throws an Error whose message says what differed; comlink carries
 * the message back to the page, where the test fails with it.
 */
import { BlockError } from '../../src/block/errors.js';

export function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

export function equal<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new Error(`${what}: expected ${String(expected)}, got ${String(actual)}`);
}

/** Byte equality, reporting the first differing offset. */
export function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) throw new Error(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

/** Awaits `p`, which must reject with a BlockError of `code` whose message matches `re`. */
export async function rejects(p: Promise<unknown> | (() => unknown), code: string, re: RegExp, what: string): Promise<BlockError> {
  let err: unknown = null;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof BlockError)) throw new Error(`${what}: expected a BlockError ${code}, got ${err === null ? 'success' : String(err)}`);
  if (err.code !== code) throw new Error(`${what}: expected ${code}, got ${err.code} (${err.message})`);
  if (!re.test(err.message)) throw new Error(`${what}: message '${err.message}' does not match ${re}`);
  return err;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}
