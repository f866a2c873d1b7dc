/**
 * The DeflatePool's workers in Node: worker_threads, each running Node's C
 * zlib with QEMU's settings (the same call src/node.ts installs for
 * in-thread compression, so the streams are byte-identical). One worker per
 * core up to MAX_WORKERS, started on the first request; a worker holds the
 * process open only while it has work (ref on send, unref when idle), so a
 * CLI command or a library user never has to close the pool to exit.
 *
 * Memory: clusters travel through SharedArrayBuffer regions that are reused
 * (one per batch in flight, up to KEPT_BYTES kept for later batches), not as
 * a transferred buffer per cluster; each worker deflates every cluster with
 * one zlib handle (reset between streams, the same bytes as a fresh
 * deflateRawSync) straight into the region; the pool reuses the input copies
 * (`reusesInputs`); a stream longer than the caller's limit (a cluster qcow2
 * writes uncompressed) is not copied back; and the worker asks V8 for a
 * young-generation collection after each batch. Without these, every cluster
 * left dead buffers on both threads (its input, zlib's outputs, the result),
 * which V8 only collects once tens of MiB of them pile up (its
 * external-memory limit): `convert -c` peaked at ~236 MiB, each worker's C
 * heap ~50 MiB of it.
 *
 * The worker's code is a string evaluated by worker_threads, not a file
 * beside this module, so the bundled CLI (dist/bin/) carries it inside.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { createDeflatePool, type DeflatePool, type PoolWorkerEvents } from './deflate-pool.js';

const MAX_WORKERS = 8;
/** Bytes of regions a worker keeps for later batches (more are made while more batches are in flight). */
const KEPT_BYTES = 16 * 1024 * 1024;

/**
 * In: { id, lens, limits, inp, out } (lens: input lengths, packed in `inp`
 * one after the other). Out: { id, outLens } with the streams packed in `out`
 * the same way (-1: longer than its limit, left out), or { id, error }. A stream that would not fit (never, with zlib's bound
 * below) is an error rather than a silent truncation.
 * v8.setFlagsFromString('--expose-gc') only makes `gc` available to contexts
 * made afterwards (this worker's vm context); worker_threads refuses the flag
 * in execArgv.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
require('node:v8').setFlagsFromString('--expose-gc');
const collect = require('node:vm').runInNewContext('gc');
const OPTS = { windowBits: 12, level: 6, memLevel: 9 };
// One deflate handle for every cluster (reset between streams), writing straight into the shared
// region: a new zlib stream per cluster allocated ~300 KiB of C heap and an output Buffer each time.
let stream, handle, state, zerr;
function reusable() {
  if (handle !== undefined) return handle;
  stream = new zlib.DeflateRaw(OPTS);
  const h = stream._handle;
  if (!h || typeof h.writeSync !== 'function' || typeof h.reset !== 'function' || !(stream._writeState instanceof Uint32Array)) {
    stream.close();
    return (handle = null);
  }
  h.onerror = (message) => { zerr = message; };
  state = stream._writeState;
  return (handle = h);
}
/** Deflates src[at, at + len) into dst at outAt: the stream's length, or -1 when longer than limit (limit < 0: none). */
function deflateInto(src, at, len, dst, outAt, limit) {
  const room = dst.length - outAt;
  const h = reusable();
  if (h === null) {
    const z = zlib.deflateRawSync(src.subarray(at, at + len), OPTS);
    if (limit >= 0 && z.length > limit) return -1;
    if (z.length > room) throw new Error('compressed stream larger than its bound');
    dst.set(z, outAt);
    return z.length;
  }
  const avail = limit >= 0 ? Math.min(limit + 1, room) : room;
  zerr = undefined;
  h.writeSync(zlib.constants.Z_FINISH, src, at, len, dst, outAt, avail);
  const left = state[0];
  try {
    h.reset();
  } catch (e) {
    stream.close();
    handle = undefined;
  }
  if (zerr !== undefined) throw new Error(zerr);
  // With Z_FINISH deflate stops with output room left only at the stream's end.
  if (left === 0) {
    if (limit >= 0 && avail === limit + 1) return -1;
    throw new Error('compressed stream larger than its bound');
  }
  return avail - left;
}
parentPort.on('message', ({ id, lens, limits, inp, out }) => {
  try {
    const src = new Uint8Array(inp), dst = new Uint8Array(out);
    const outLens = [];
    let at = 0, outAt = 0;
    for (const len of lens) {
      const n = deflateInto(src, at, len, dst, outAt, limits[outLens.length]);
      at += len;
      outLens.push(n);
      if (n >= 0) outAt += n;
    }
    parentPort.postMessage({ id, outLens });
  } catch (e) {
    parentPort.postMessage({ id, error: String((e && e.message) || e) });
  }
  collect({ type: 'minor' });
});`;

/** Bytes a raw deflate stream of `len` input bytes can take: zlib's conservative deflateBound (any window and memLevel), plus room to spare. */
const deflateBound = (len: number) => len + ((len + 7) >> 3) + ((len + 63) >> 6) + 5 + 16;

interface Region {
  inp: SharedArrayBuffer;
  out: SharedArrayBuffer;
}

export function createNodeDeflatePool(workers = Math.min(MAX_WORKERS, availableParallelism())): DeflatePool {
  return createDeflatePool((events: PoolWorkerEvents) => {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source a module.
    // worker_threads loads on the first compressed write only: it costs start-up time every other command would pay.
    const { Worker } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    const free: Region[] = [];
    const busy = new Map<number, Region>();
    const size = (r: Region) => r.inp.byteLength + r.out.byteLength;
    const take = (inBytes: number, outBytes: number): Region => {
      const i = free.findIndex((r) => r.inp.byteLength >= inBytes && r.out.byteLength >= outBytes);
      return i >= 0 ? free.splice(i, 1)[0]! : { inp: new SharedArrayBuffer(inBytes), out: new SharedArrayBuffer(outBytes) };
    };
    /** Back to the free list (smallest first), which drops its smallest regions beyond KEPT_BYTES. */
    const keep = (region: Region) => {
      free.push(region);
      free.sort((a, b) => size(a) - size(b));
      let kept = free.reduce((n, r) => n + size(r), 0);
      while (kept > KEPT_BYTES) kept -= size(free.shift()!);
    };
    w.on('message', (m: { id: number; outLens?: number[]; error?: string }) => {
      const region = busy.get(m.id);
      busy.delete(m.id);
      let outs: (Uint8Array | null)[] | undefined;
      if (region && m.outLens) {
        // Copied out at once: the region is handed to the next batch.
        const all = new Uint8Array(region.out);
        let at = 0;
        outs = m.outLens.map((n) => (n < 0 ? null : all.slice(at, (at += n))));
      }
      if (region) keep(region);
      events.message({ id: m.id, outs, error: m.error });
    });
    w.on('error', events.error);
    return {
      reusesInputs: true,
      post: ({ id, inputs, limits }) => {
        const lens = inputs.map((x) => x.length);
        const inBytes = lens.reduce((a, b) => a + b, 0);
        const region = take(inBytes, lens.reduce((a, n) => a + deflateBound(n), 0));
        const inp = new Uint8Array(region.inp);
        let at = 0;
        for (const x of inputs) {
          inp.set(x, at);
          at += x.length;
        }
        busy.set(id, region);
        w.postMessage({ id, lens, limits, inp: region.inp, out: region.out });
      },
      ref: () => w.ref(),
      unref: () => w.unref(),
      terminate: () => void w.terminate(),
    };
  }, workers);
}
