/**
 * zlib-exact's contract (one zlib stream fills `out` exactly) on Node's C
 * zlib, with one inflate handle kept for the whole process.
 *
 * `zlib.inflateSync` makes a new zlib stream object per call (its state,
 * a 32 KiB window, an output Buffer that is then copied out): for the 64 KiB
 * grains of a stream-optimized vmdk that is thousands of allocations and
 * copies per GiB, most of the CPU a convert spends. Here the stream's native
 * handle inflates straight into the caller's buffer and is reset after each
 * stream. `_handle.writeSync` and `_writeState` are the (undocumented)
 * pieces `inflateSync` itself runs on; where they are missing the one-shot
 * `inflateSync` path is used, with the same answers.
 *
 * "Exactly": after the stream has filled `out`, one more call with a 1-byte
 * buffer tells a finished stream (nothing more comes out) from a longer one
 * (a byte comes out) and from a truncated one (zlib's "unexpected end of
 * file").
 */
import type * as NodeZlib from 'node:zlib';
import type { InflateExact } from './zlib-exact.js';

type Zlib = typeof NodeZlib;

/** The native side of a node:zlib stream, as lib/zlib.js drives it. */
interface ZlibHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  reset(): void;
  onerror: (message: string, errno: number) => void;
}

interface Reusable {
  stream: { close(): void };
  handle: ZlibHandle;
  /** [avail_out, avail_in] after each write. */
  state: Uint32Array;
}

/** The inflate of `zlib()`: a reused handle where the runtime exposes it, else one `inflateSync` per stream. */
export function nodeInflateExact(zlib: () => Zlib): InflateExact {
  let reusable: Reusable | null | undefined;
  let error: string | undefined;
  const extra = new Uint8Array(1);

  const open = (): Reusable | null => {
    const stream = new (zlib().Inflate)() as unknown as { _handle?: Partial<ZlibHandle>; _writeState?: unknown; close(): void };
    const handle = stream._handle;
    const state = stream._writeState;
    if (!handle || typeof handle.writeSync !== 'function' || typeof handle.reset !== 'function' || !(state instanceof Uint32Array)) {
      stream.close();
      return null;
    }
    handle.onerror = (message) => {
      error = message;
    };
    return { stream, handle: handle as ZlibHandle, state };
  };

  return (input, out) => {
    if (reusable === undefined) reusable = open();
    if (!reusable) return oneShot(zlib(), input, out);
    const { handle, state } = reusable;
    const finish = zlib().constants.Z_FINISH;
    error = undefined;
    let why: string | null = null;
    handle.writeSync(finish, input, 0, input.length, out, 0, out.length);
    if (error === undefined) {
      const filled = out.length - state[0]!;
      if (filled < out.length) {
        why = `the stream inflates to ${filled} bytes, not ${out.length}`;
      } else {
        const left = state[1]!;
        handle.writeSync(finish, input, input.length - left, left, extra, 0, 1);
        if (error === undefined && state[0] === 0) why = `the stream inflates to more than ${out.length} bytes`;
      }
    }
    if (error !== undefined) why = `the stream does not inflate (${error})`;
    try {
      handle.reset();
    } catch {
      // A handle that cannot be reset is dropped; the next stream gets a new one.
      reusable.stream.close();
      reusable = undefined;
    }
    return why;
  };
}

/** One `inflateSync` per stream, bounded by the output size. */
function oneShot(zlib: Zlib, input: Uint8Array, out: Uint8Array): string | null {
  let got: Buffer;
  try {
    // One output chunk of the expected size: no concatenation of 16 KiB pieces.
    got = zlib.inflateSync(input, { maxOutputLength: out.length, chunkSize: out.length + 64 });
  } catch (e) {
    const err = e as { code?: string; message?: string };
    if (err.code === 'ERR_BUFFER_TOO_LARGE') return `the stream inflates to more than ${out.length} bytes`;
    return `the stream does not inflate (${err.message})`;
  }
  if (got.length !== out.length) return `the stream inflates to ${got.length} bytes, not ${out.length}`;
  out.set(got);
  return null;
}
