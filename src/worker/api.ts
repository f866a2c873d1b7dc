/**
 * What the engine worker exposes: the Engine's QMP entry and typed methods,
 * shaped for a message boundary.
 *
 * - Buffers move, never copy: read results are fresh ArrayBuffers handed over
 *   with comlink.transfer; writes arrive in buffers the page transferred.
 * - Callbacks (progress, events) are comlink proxies from the page. Progress
 *   is throttled (every report would be a message) but the last one, done ===
 *   total, always goes, and it has been delivered before the call returns.
 * - Errors cross as BlockError/QmpError (transfer.ts).
 */
import * as Comlink from 'comlink';
import type { Engine, EngineCreateOptions, EngineMeasureOptions, EngineOpenOptions, ImageRef, ConvertTarget, QmpEvent, SnapshotOp } from '../engine/engine.js';
import { loadDrivers, type PreallocMode } from '../block/driver.js';
import type { ConvertOptions } from '../img/convert.js';
import type { CompareOptions } from '../img/compare.js';
import type { MapOptions } from '../img/map.js';
import { BlockError } from '../block/errors.js';
import { serializeBlockError, type SerializedBlockError } from './transfer.js';
import { InspectService, type InspectView } from '../engine/inspect.js';
import { diskStatus, exportTo, openRemoteOverlay, type DiskStatus, type ExportMode, type RemoteOverlayOpened, type WritableHandle } from './remote-disk.js';

/** Shortest gap between two progress messages. */
const PROGRESS_INTERVAL_MS = 50;

export type ProgressCallback = (done: number, total: number) => void | Promise<void>;
export type EventCallback = (event: QmpEvent) => void | Promise<void>;

export interface WorkerApiOptions {
  /** Adds a user-supplied file (a File/Blob or a file handle) to the blob storage; returns its name there. */
  addFile?: (source: Blob | FileSystemFileHandle, name?: string) => string;
  /** Resolves when start-up (the wasm module) finished; says whether wasm is in use. */
  ready?: Promise<{ wasm: boolean }>;
  /** Lists the files of a persistent storage (the app's library), with their lengths in bytes. */
  listFiles?: (storage: string) => Promise<StoredFile[]>;
  /** The storage that holds overlays over web images (local + http), and how to let it reach an origin. */
  remote?: { storage: string; allowOrigin(origin: string): void };
}

/** A file in one of the worker's storages. */
export interface StoredFile {
  name: string;
  /** Length in bytes. */
  size: number;
}

/** Counters that show the data path uses transfers (tests and diagnostics). */
export interface BoundaryStats {
  transferredReads: number;
  transferredBytes: number;
  /** Whether the buffer of the last read was detached after it was sent (null before any read). */
  lastReadDetached: boolean | null;
}

/** A read on the port given to `ioPort`: [request id, device or node name, offset, bytes]. */
export type IoPortRequest = [id: number, name: string, offset: number, bytes: number];
/** Its answer: the data (transferred), or null and the error (a BlockError's code and message survive). */
export type IoPortReply = [id: number, data: Uint8Array<ArrayBuffer>] | [id: number, data: null, error: SerializedBlockError | { message: string }];

function throttled(cb: ProgressCallback | undefined): { report?: (done: number, total: number) => void; settle: () => Promise<void> } {
  if (!cb) return { settle: async () => {} };
  let last = 0;
  let pending: Promise<unknown> = Promise.resolve();
  const report = (done: number, total: number) => {
    const now = Date.now();
    if (done !== 0 && done < total && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    // The page's callback failing must not fail the operation.
    pending = Promise.resolve(cb(done, total)).catch(() => {});
  };
  return {
    report,
    settle: async () => {
      await pending;
      (cb as Partial<Comlink.ProxyMethods>)[Comlink.releaseProxy]?.();
    },
  };
}

export function createWorkerApi(engine: Engine, options: WorkerApiOptions = {}) {
  const stats = { transferredReads: 0, transferredBytes: 0 };
  let lastRead: ArrayBuffer | null = null;
  const subscriptions = new Map<number, () => void>();
  let nextSubscription = 0;
  // Cancellable jobs by the id the page chose: cancel(id) aborts the job's
  // signal, which convert checks between requests (it also yields to the
  // event loop regularly, so the cancel message is handled mid-copy).
  const running = new Map<number, AbortController>();
  const started = (jobId: number | undefined): AbortSignal | undefined => {
    if (jobId === undefined) return undefined;
    const c = new AbortController();
    running.set(jobId, c);
    return c.signal;
  };
  const finished = (jobId: number | undefined) => {
    if (jobId !== undefined) running.delete(jobId);
  };
  /** The engine's read into a fresh buffer, counted as transferred (the caller transfers it). */
  const inspect = new InspectService((name) => engine.lookup(name));
  const readOut = async (name: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>> => {
    const buf = await engine.read(name, offset, bytes);
    stats.transferredReads++;
    stats.transferredBytes += buf.byteLength;
    lastRead = buf.buffer;
    return buf;
  };

  return {
    ready: async (): Promise<WorkerReady> => ({
      ...((await options.ready) ?? { wasm: false }),
      storages: [...engine.storages.keys()],
      targetFormats: await targetFormats(),
    }),

    execute: (command: string, args?: Record<string, unknown>): Promise<unknown> => engine.execute(command, args),

    open: (storage: string, filename: string, opts?: EngineOpenOptions): Promise<string> => engine.open(storage, filename, opts),
    async close(name: string): Promise<void> {
      await inspect.release(name);
      await engine.close(name);
    },
    size: async (name: string): Promise<number> => engine.size(name),
    flush: (name: string): Promise<void> => engine.flush(name),

    /** A fresh buffer, transferred: the worker keeps no copy. */
    async read(name: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>> {
      const buf = await readOut(name, offset, bytes);
      return Comlink.transfer(buf, [buf.buffer]);
    },
    /**
     * Serves reads on `port` without comlink (see IoPortRequest): a small
     * request's round trip is dominated by the message layer, and comlink's
     * per call (a proxy, wrapped arguments, a string id, a promise chain)
     * costs about a quarter of a bare postMessage round trip. Same engine
     * call, same stats, same error codes as `read`.
     */
    ioPort(port: MessagePort): void {
      port.onmessage = async (ev: MessageEvent) => {
        const [id, name, offset, bytes] = ev.data as IoPortRequest;
        let buf: Uint8Array<ArrayBuffer>;
        try {
          buf = await readOut(name, offset, bytes);
        } catch (e) {
          const error = e instanceof BlockError ? serializeBlockError(e) : { message: e instanceof Error ? e.message : String(e) };
          port.postMessage([id, null, error] satisfies IoPortReply);
          return;
        }
        port.postMessage([id, buf] satisfies IoPortReply, [buf.buffer]);
      };
    },
    /** `data` arrived by transfer from the page. */
    write: (name: string, offset: number, data: Uint8Array): Promise<void> => engine.write(name, offset, data),

    writeZeroes: (name: string, offset: number, bytes: number, opts?: { unmap?: boolean }): Promise<void> => engine.writeZeroes(name, offset, bytes, opts),
    discard: (name: string, offset: number, bytes: number): Promise<void> => engine.discard(name, offset, bytes),

    importFile: (storage: string, filename: string, data: Uint8Array): Promise<void> => engine.importFile(storage, filename, data),
    removeFile: (storage: string, filename: string): Promise<void> => engine.removeFile(storage, filename),
    async addFile(source: Blob | FileSystemFileHandle, name?: string): Promise<string> {
      if (!options.addFile) throw new Error('this worker has no blob storage');
      return options.addFile(source, name);
    },

    info: (image: ImageRef, opts?: { backingChain?: boolean }) => engine.info(image, opts),
    map: (image: ImageRef, opts?: MapOptions) => engine.map(image, opts),
    measure: (opts: EngineMeasureOptions) => engine.measure(opts),
    /**
     * `jobId` (chosen by the page) makes the conversion cancellable with
     * cancel(jobId): it aborts the signal convert checks between requests.
     */
    async convert(sources: ImageRef[], target: ConvertTarget, opts?: ConvertOptions, onProgress?: ProgressCallback, jobId?: number) {
      const p = throttled(onProgress);
      const signal = started(jobId);
      try {
        return await engine.convert(sources, target, signal ? { ...opts, signal } : opts, p.report);
      } finally {
        finished(jobId);
        await p.settle();
      }
    },
    /** Stops the running job `jobId` (convert); it rejects with ECANCELED. A job that already ended is left alone. */
    cancel(jobId: number): void {
      running.get(jobId)?.abort();
    },
    /** The files of `storage` ('local', 'opfs', 'idb'), for the app's library. */
    async listFiles(storage: string): Promise<StoredFile[]> {
      if (!options.listFiles) throw new BlockError('ENOTSUP', 'this worker cannot list its storages');
      return options.listFiles(storage);
    },
    async compare(a: ImageRef, b: ImageRef, opts?: CompareOptions, onProgress?: ProgressCallback) {
      const p = throttled(onProgress);
      try {
        return await engine.compare(a, b, opts, p.report);
      } finally {
        await p.settle();
      }
    },

    create: (storage: string, filename: string, format: string, size?: number, opts?: EngineCreateOptions) => engine.create(storage, filename, format, size, opts),
    check: (image: ImageRef, opts?: { repair?: 'leaks' | 'all' }) => engine.check(image, opts),
    snapshot: (image: ImageRef, op: SnapshotOp) => engine.snapshot(image, op),
    snapshotApply: (node: string, name: string): Promise<void> => engine.snapshotApply(node, name),
    async rebase(image: ImageRef, backing: string, opts?: { backingFormat?: string; unsafe?: boolean }, onProgress?: ProgressCallback): Promise<void> {
      const p = throttled(onProgress);
      try {
        await engine.rebase(image, backing, opts, p.report);
      } finally {
        await p.settle();
      }
    },
    async commit(image: ImageRef, opts?: { base?: string; drop?: boolean }, onProgress?: ProgressCallback): Promise<void> {
      const p = throttled(onProgress);
      try {
        await engine.commit(image, opts, p.report);
      } finally {
        await p.settle();
      }
    },
    resize: (image: ImageRef, size: number, opts?: { relative?: boolean; shrink?: boolean; preallocation?: PreallocMode }) => engine.resize(image, size, opts),
    amend: (image: ImageRef, options: string[] | Record<string, string | number | boolean>): Promise<void> => engine.amend(image, options),

    // Looking inside a disk (src/engine/inspect.ts): partitions, listings, file bytes, layer diffs.
    inspectPartitions: (view: InspectView) => inspect.partitions(view),
    inspectList: (view: InspectView, partition: number | null, path: string) => inspect.list(view, partition, path),
    inspectTree: (view: InspectView, partition: number | null, path: string) => inspect.tree(view, partition, path),
    async inspectRead(view: InspectView, partition: number | null, path: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>> {
      const buf = await inspect.read(view, partition, path, offset, bytes);
      return Comlink.transfer(buf, [buf.buffer]);
    },
    inspectDiff: (above: InspectView, below: InspectView, partition: number | null) => inspect.diff(above, below, partition),
    inspectRelease: (node?: string) => inspect.release(node),

    // Remote disks (remote-disk.ts): a URL under a local overlay, its status, export changes.
    async openRemoteOverlay(url: string): Promise<RemoteOverlayOpened> {
      if (!options.remote) throw new BlockError('ENOTSUP', 'this worker has no local storage for overlays');
      return openRemoteOverlay(engine, options.remote.storage, url, options.remote.allowOrigin);
    },
    /** Lets local overlays name images of `origin` as backing files (origins the user opened overlays for). */
    allowRemoteBacking(origin: string): void {
      if (!options.remote) throw new BlockError('ENOTSUP', 'this worker has no local storage for overlays');
      options.remote.allowOrigin(new URL(origin).origin);
    },
    diskStatus: (name: string): Promise<DiskStatus> => diskStatus(engine.lookup(name)),
    async exportTo(name: string, mode: ExportMode, handle: WritableHandle, onProgress?: ProgressCallback): Promise<number> {
      const p = throttled(onProgress);
      try {
        return await exportTo(engine.lookup(name), () => engine.flush(name), mode, handle, p.report);
      } finally {
        await p.settle();
      }
    },

    /** Sends every QMP event to `listener` (a comlink proxy) until unsubscribe(id). */
    subscribe(listener: EventCallback): number {
      const id = ++nextSubscription;
      const off = engine.onEvent((e) => void Promise.resolve(listener(e)).catch(() => {}));
      subscriptions.set(id, () => {
        off();
        (listener as Partial<Comlink.ProxyMethods>)[Comlink.releaseProxy]?.();
      });
      return id;
    },
    unsubscribe(id: number): void {
      subscriptions.get(id)?.();
      subscriptions.delete(id);
    },

    boundaryStats(): BoundaryStats {
      // A transferred ArrayBuffer is detached on this side: its byteLength reads 0.
      return { ...stats, lastReadDetached: lastRead === null ? null : lastRead.byteLength === 0 };
    },
  };
}

export type EngineWorkerApi = ReturnType<typeof createWorkerApi>;

/** What the worker says when it is ready: wasm or not, its storages, the formats it can create. */
export interface WorkerReady {
  wasm: boolean;
  storages: string[];
  targetFormats: TargetFormat[];
}

/** A format `convert` and `create` can write, with the -o options its driver takes (qemu-img create -o help). */
export interface TargetFormat {
  name: string;
  options: { name: string; help: string; def?: string }[];
}

/**
 * The registered format drivers that can create images, from the driver
 * registry (loaded here: the app offers every format); not those whose
 * creation needs a secret (luks's key-secret): the app has no way to define
 * one yet.
 */
async function targetFormats(): Promise<TargetFormat[]> {
  return (await loadDrivers('format'))
    .filter((d) => d.create && d.createOptions && !d.createOptions.some((o) => o.name === 'key-secret'))
    .map((d) => ({ name: d.name, options: d.createOptions!.map((o) => ({ name: o.name, help: o.help, ...(o.def !== undefined ? { def: o.def } : {}) })) }));
}
