/**
 * Compression off the calling thread: the one small interface a pool of
 * workers offers the formats (qcow2's compressed clusters now), and the pool
 * logic shared by every environment. Only how a worker starts differs:
 * worker_threads running Node's C zlib (deflate-pool-node.ts, installed by
 * src/node.ts) or Web Workers running pako (deflate-pool-browser.ts,
 * installed by the engine worker). A caller that keeps several requests in
 * flight (convert -c) then compresses on every core; the streams are the
 * ones the in-thread codec makes (same library, same settings), so images
 * do not depend on whether a pool is installed.
 *
 * Requests made in the same turn of the event loop travel together, split
 * evenly over the workers: a message round trip costs a thread wake-up on
 * each side, which on a busy machine can take longer than compressing one
 * 64 KiB cluster, so a caller asking for many clusters at once pays it once
 * per batch rather than once per cluster.
 *
 * Message protocol (the browser's worker script): in { id, inputs:
 * Uint8Array[], limits: number[] }, out { id, outs: Uint8Array[] } or
 * { id, error: string }; buffers move by transfer. Node's workers take their
 * batches through shared memory instead (deflate-pool-node.ts).
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */

export interface DeflatePool {
  /**
   * Raw deflate with a 4 KiB window, level 6, memLevel 9 (QEMU's settings
   * for qcow2 clusters). `input` is copied before the call returns, so the
   * caller may reuse its buffer at once. With `limit`, a stream longer than
   * `limit` bytes is not handed back (null): a caller that would not use it
   * (qcow2 writes such a cluster uncompressed) spares its copy.
   */
  deflateRaw4k(input: Uint8Array, limit?: number): Promise<Uint8Array | null>;
  /** How many requests it compresses at once (its workers). */
  readonly threads: number;
  /** Ends the workers (a later call starts them again). */
  close(): void;
}

let installed: DeflatePool | null = null;

/** Installs (or, with null, removes) the pool compressed writes use. */
export function installDeflatePool(pool: DeflatePool | null): void {
  installed?.close();
  installed = pool;
}

/** The installed pool, or null: compress on the calling thread. */
export function deflatePool(): DeflatePool | null {
  return installed;
}

/** One started worker, as the pool needs it. */
export interface PoolWorker {
  /**
   * Sends a batch. `limits[i]` (-1 for none) lets the worker leave out a
   * stream longer than it (null in `outs`). The inputs belong to the pool:
   * a worker that copies them (instead of taking `transfer`) may let the
   * pool reuse them once `post` returns, by `reusesInputs`.
   */
  post(message: { id: number; inputs: Uint8Array[]; limits: number[] }, transfer: ArrayBuffer[]): void;
  /** `post` copies the inputs, so the pool may reuse their buffers afterwards. */
  reusesInputs?: boolean;
  /** Keep the process alive while the worker has work (Node); optional. */
  ref?(): void;
  unref?(): void;
  terminate(): void;
}

export interface PoolWorkerEvents {
  message(m: { id: number; outs?: (Uint8Array | null)[]; error?: string }): void;
  error(e: Error): void;
}

interface Slot {
  worker: PoolWorker;
  pending: number;
}

interface Request {
  input: Uint8Array;
  limit: number;
  resolve: (b: Uint8Array | null) => void;
  reject: (e: Error) => void;
}

/** A DeflatePool over `workers` workers that `spawn` starts on demand. */
export function createDeflatePool(spawn: (events: PoolWorkerEvents) => PoolWorker, workers: number): DeflatePool {
  let slots: Slot[] = [];
  const inFlight = new Map<number, { requests: Request[]; slot: Slot }>();
  let queue: Request[] = [];
  let nextId = 0;
  const spare = new SpareBuffers();

  const fail = (slot: Slot, e: Error): void => {
    // A worker that dies fails its requests; the next batch starts a new one.
    slots = slots.filter((s) => s !== slot);
    for (const [id, b] of inFlight) {
      if (b.slot !== slot) continue;
      inFlight.delete(id);
      for (const r of b.requests) r.reject(e);
    }
  };

  const start = (): Slot => {
    const slot = {} as Slot;
    slot.pending = 0;
    slot.worker = spawn({
      message(m) {
        const batch = inFlight.get(m.id);
        if (!batch) return;
        inFlight.delete(m.id);
        if (--slot.pending === 0) slot.worker.unref?.();
        batch.requests.forEach((r, i) => {
          const out = m.outs?.[i];
          if (out === null || (out && r.limit >= 0 && out.length > r.limit)) r.resolve(null);
          else if (out) r.resolve(out);
          else r.reject(new Error(`deflate worker: ${m.error ?? 'no output'}`));
        });
      },
      error: (e) => fail(slot, e),
    });
    slot.worker.unref?.();
    slots.push(slot);
    return slot;
  };

  const send = (requests: Request[]): void => {
    const idle = slots.reduce<Slot | undefined>((a, s) => (!a || s.pending < a.pending ? s : a), undefined);
    const slot = !idle || (idle.pending > 0 && slots.length < workers) ? start() : idle;
    const id = nextId++;
    inFlight.set(id, { requests, slot });
    if (slot.pending++ === 0) slot.worker.ref?.();
    const inputs = requests.map((r) => r.input);
    try {
      slot.worker.post({ id, inputs, limits: requests.map((r) => r.limit) }, inputs.map((i) => i.buffer as ArrayBuffer));
    } catch (e) {
      fail(slot, e instanceof Error ? e : new Error(String(e)));
    }
    if (slot.worker.reusesInputs) for (const i of inputs) spare.put(i);
  };

  const flush = (): void => {
    const all = queue;
    queue = [];
    const parts = Math.min(workers, all.length);
    const per = Math.ceil(all.length / parts);
    for (let i = 0; i < all.length; i += per) send(all.slice(i, i + per));
  };

  return {
    threads: workers,
    deflateRaw4k(input, limit) {
      return new Promise<Uint8Array | null>((resolve, reject) => {
        if (queue.length === 0) queueMicrotask(flush);
        queue.push({ input: spare.copy(input), limit: limit ?? -1, resolve, reject });
      });
    },
    close() {
      for (const s of slots) s.worker.terminate();
      slots = [];
      for (const b of inFlight.values()) for (const r of b.requests) r.reject(new Error('deflate pool closed'));
      inFlight.clear();
    },
  };
}

/**
 * Copies of inputs whose buffers come back once a worker that copies its
 * inputs has them (Node's): a convert -c then reuses the same few MiB instead
 * of leaving a dead 64 KiB buffer per cluster for the garbage collector,
 * which lets tens of MiB of them pile up before it runs.
 */
class SpareBuffers {
  private readonly bySize = new Map<number, Uint8Array[]>();
  private bytes = 0;
  private static readonly MAX_BYTES = 16 * 1024 * 1024;

  copy(input: Uint8Array): Uint8Array {
    const b = this.bySize.get(input.length)?.pop();
    if (!b) return input.slice();
    this.bytes -= b.length;
    b.set(input);
    return b;
  }

  put(b: Uint8Array): void {
    if (this.bytes + b.length > SpareBuffers.MAX_BYTES) return;
    let list = this.bySize.get(b.length);
    if (!list) this.bySize.set(b.length, (list = []));
    list.push(b);
    this.bytes += b.length;
  }
}
