/**
 * The DeflatePool for Node: worker_threads, each running Node's C zlib with
 * QEMU's settings (the same call src/node.ts installs for in-thread
 * compression, so the streams are byte-identical). Workers start on the
 * first request, one per core up to MAX_WORKERS, and hold the process open
 * only while they have work (ref on send, unref when idle), so a CLI
 * command or a library user never has to close the pool to exit.
 *
 * Requests made in the same turn of the event loop travel together, split
 * evenly over the workers: a message round trip costs a thread wake-up on
 * each side, which on a busy machine can take longer than compressing one
 * 64 KiB cluster, so a caller that asks for many clusters at once pays it
 * once per batch rather than once per cluster.
 *
 * The worker's code is a string evaluated by worker_threads, not a file
 * beside this module, so the bundled CLI (dist/bin/) carries it inside.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DeflatePool } from './deflate-pool.js';

const MAX_WORKERS = 8;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { deflateRawSync } = require('node:zlib');
parentPort.on('message', ({ id, inputs }) => {
  try {
    const outs = inputs.map((input) => {
      const out = deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 });
      const copy = new Uint8Array(out.length);
      copy.set(out);
      return copy;
    });
    parentPort.postMessage({ id, outs }, outs.map((o) => o.buffer));
  } catch (e) {
    parentPort.postMessage({ id, error: String((e && e.message) || e) });
  }
});`;

interface Slot {
  worker: Worker;
  pending: number;
}

interface Request {
  input: Uint8Array;
  resolve: (b: Uint8Array) => void;
  reject: (e: Error) => void;
}

export function createNodeDeflatePool(workers = Math.min(MAX_WORKERS, availableParallelism())): DeflatePool {
  let slots: Slot[] = [];
  const inFlight = new Map<number, { requests: Request[]; slot: Slot }>();
  let queue: Request[] = [];
  let nextId = 0;

  const start = (): Slot => {
    const slot: Slot = { worker: new Worker(WORKER_SOURCE, { eval: true }), pending: 0 };
    slot.worker.unref();
    slot.worker.on('message', (m: { id: number; outs?: Uint8Array[]; error?: string }) => {
      const batch = inFlight.get(m.id);
      if (!batch) return;
      inFlight.delete(m.id);
      if (--slot.pending === 0) slot.worker.unref();
      batch.requests.forEach((r, i) => {
        const out = m.outs?.[i];
        if (out) r.resolve(out);
        else r.reject(new Error(`deflate worker: ${m.error ?? 'no output'}`));
      });
    });
    slot.worker.on('error', (e) => {
      // A worker that dies fails its requests; the next batch starts a new one.
      slots = slots.filter((s) => s !== slot);
      for (const [id, b] of inFlight) {
        if (b.slot !== slot) continue;
        inFlight.delete(id);
        for (const r of b.requests) r.reject(e);
      }
    });
    slots.push(slot);
    return slot;
  };

  const send = (requests: Request[]): void => {
    const idle = slots.reduce<Slot | undefined>((a, s) => (!a || s.pending < a.pending ? s : a), undefined);
    const slot = !idle || (idle.pending > 0 && slots.length < workers) ? start() : idle;
    const id = nextId++;
    inFlight.set(id, { requests, slot });
    if (slot.pending++ === 0) slot.worker.ref();
    const inputs = requests.map((r) => r.input);
    slot.worker.postMessage({ id, inputs }, inputs.map((i) => i.buffer as ArrayBuffer));
  };

  const flush = (): void => {
    const all = queue;
    queue = [];
    const parts = Math.min(workers, all.length);
    const per = Math.ceil(all.length / parts);
    for (let i = 0; i < all.length; i += per) send(all.slice(i, i + per));
  };

  return {
    deflateRaw4k(input) {
      return new Promise<Uint8Array>((resolve, reject) => {
        if (queue.length === 0) queueMicrotask(flush);
        queue.push({ input: input.slice(), resolve, reject });
      });
    },
    close() {
      for (const s of slots) void s.worker.terminate();
      slots = [];
      for (const b of inFlight.values()) for (const r of b.requests) r.reject(new Error('deflate pool closed'));
      inFlight.clear();
    },
  };
}
