/**
 * The page's side of the engine worker: a typed client over comlink. This is
 * the only module that calls comlink's `wrap`. Every method is one message
 * to the worker; errors arrive as BlockError/QmpError with their code and
 * QMP class (the shared handlers in src/worker/transfer.ts).
 *
 * Buffers are moved, not copied. `read` returns a buffer the worker gave up.
 * `write` and `importFile` transfer the caller's buffer: after the call the
 * caller's ArrayBuffer is detached (byteLength 0) — all of it, also when
 * `data` is a view of part of it. Copy first (`data.slice()`) to keep using
 * it. (SharedArrayBuffers are shared, not moved.)
 */
import * as Comlink from 'comlink';
import { deserializeBlockError, type SerializedBlockError } from '../worker/transfer.js';
import type { EngineWorkerApi, BoundaryStats, StoredFile, IoPortReply, IoPortRequest, WorkerReady } from '../worker/api.js';
import type { ConvertTarget, EngineCreateOptions, EngineCreateResult, EngineMeasureOptions, EngineOpenOptions, ImageRef, QmpEvent, SnapshotOp } from '../engine/engine.js';
import type { ImageCheck } from '../img/check.js';
import type { SnapshotInfoQapi } from '../img/info.js';
import type { PreallocMode } from '../block/driver.js';
import type { QmpImageInfo } from '../engine/query.js';
import type { ConvertOptions } from '../img/convert.js';
import type { CompareOptions, CompareResult } from '../img/compare.js';
import type { MapEntry, MapOptions } from '../img/map.js';
import type { MeasureResult } from '../img/measure.js';
import type { InspectEntry, InspectTreeEntry, InspectView, LayerDiff } from '../engine/inspect.js';
import type { PartitionTable } from '../inspect/partitions.js';
import type { DiskStatus, ExportMode, RemoteOverlayOpened } from '../worker/remote-disk.js';

export type { InspectEntry, InspectTreeEntry, InspectView, LayerDiff, PartitionTable, DiskStatus, ExportMode, RemoteOverlayOpened };
export type { QmpEvent, ImageRef, ConvertTarget, EngineOpenOptions, EngineMeasureOptions, EngineCreateOptions, EngineCreateResult, SnapshotOp, ImageCheck, SnapshotInfoQapi, BoundaryStats, StoredFile };

/** Lets the caller stop a running operation: the operation rejects with a BlockError, code ECANCELED. */
export interface CancelToken {
  cancel(): Promise<void>;
}

export interface BlocktabClient {
  /** Resolves once the worker started; whether wasm kernels are in use and which storages exist. */
  ready(): Promise<WorkerReady>;
  /** A QMP command with QEMU's names; resolves to its `return` payload, rejects with a QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  open(storage: string, filename: string, opts?: EngineOpenOptions): Promise<string>;
  close(name: string): Promise<void>;
  size(name: string): Promise<number>;
  flush(name: string): Promise<void>;
  read(name: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Detaches `data`'s buffer (see the top of this file). */
  write(name: string, offset: number, data: Uint8Array): Promise<void>;
  /** Writes zeros (`unmap`: the format may deallocate instead). */
  writeZeroes(name: string, offset: number, bytes: number, opts?: { unmap?: boolean }): Promise<void>;
  discard(name: string, offset: number, bytes: number): Promise<void>;
  /** Creates `filename` in a storage with `data` as its content; detaches `data`'s buffer. */
  importFile(storage: string, filename: string, data: Uint8Array): Promise<void>;
  removeFile(storage: string, filename: string): Promise<void>;
  /** Hands a File/Blob (or file handle) to the worker's blob storage; returns its name there. */
  addFile(source: Blob | FileSystemFileHandle, name?: string): Promise<string>;
  info(image: ImageRef, opts?: { backingChain?: boolean }): Promise<QmpImageInfo>;
  map(image: ImageRef, opts?: MapOptions): Promise<MapEntry[]>;
  measure(opts: EngineMeasureOptions): Promise<MeasureResult>;
  /** With `cancel`, `cancel.token` receives a CancelToken that stops this conversion in the worker. */
  convert(
    sources: ImageRef[],
    target: ConvertTarget,
    opts?: ConvertOptions,
    onProgress?: (done: number, total: number) => void,
    cancel?: { token?: CancelToken },
  ): Promise<{ bytes: number }>;
  /** The files of a persistent storage ('local', 'opfs', 'idb') with their lengths. */
  listFiles(storage: string): Promise<StoredFile[]>;
  compare(a: ImageRef, b: ImageRef, opts?: CompareOptions, onProgress?: (done: number, total: number) => void): Promise<CompareResult>;
  /** qemu-img create (-o options as strings or a record; -b/-F/-u). */
  create(storage: string, filename: string, format: string, size?: number, opts?: EngineCreateOptions): Promise<EngineCreateResult>;
  /** qemu-img check --output=json (ImageCheck); `repair` as -r. */
  check(image: ImageRef, opts?: { repair?: 'leaks' | 'all' }): Promise<ImageCheck>;
  /** qemu-img snapshot -l/-c/-a/-d; resolves to the snapshot list afterwards (QAPI SnapshotInfo). */
  snapshot(image: ImageRef, op: SnapshotOp): Promise<SnapshotInfoQapi[]>;
  /** Reverts an open writable node to an internal snapshot. */
  snapshotApply(node: string, name: string): Promise<void>;
  /** qemu-img rebase of an image file ('' removes the backing file). */
  rebase(image: ImageRef, backing: string, opts?: { backingFormat?: string; unsafe?: boolean }, onProgress?: (done: number, total: number) => void): Promise<void>;
  /** qemu-img commit of a file or of an open writable node (-b base, -d drop). */
  commit(image: ImageRef, opts?: { base?: string; drop?: boolean }, onProgress?: (done: number, total: number) => void): Promise<void>;
  /** qemu-img resize (relative: +/-SIZE); resolves to the new size. */
  resize(image: ImageRef, size: number, opts?: { relative?: boolean; shrink?: boolean; preallocation?: PreallocMode }): Promise<{ size: number }>;
  /** qemu-img amend -o. */
  amend(image: ImageRef, options: string[] | Record<string, string | number | boolean>): Promise<void>;
  /** Receives QMP events (BLOCK_IO_ERROR, …); resolves to the function that unsubscribes. */
  onEvent(listener: (event: QmpEvent) => void): Promise<() => Promise<void>>;
  boundaryStats(): Promise<BoundaryStats>;
  /** The partition table of an open image (or a layer / snapshot of it). */
  inspectPartitions(view: InspectView): Promise<PartitionTable>;
  /** A directory of the file system on `partition` (null: the whole disk, or the one partition holding one). */
  inspectList(view: InspectView, partition: number | null, path: string): Promise<InspectEntry[]>;
  /** Everything under a directory, depth first, paths relative to it (loops and unreadable directories carry an error). */
  inspectTree(view: InspectView, partition: number | null, path: string): Promise<InspectTreeEntry[]>;
  /** Up to `bytes` bytes of a file from `offset` (at most 16 MiB a call). */
  inspectRead(view: InspectView, partition: number | null, path: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Files added, removed and changed from view `below` to view `above`. */
  inspectDiff(above: InspectView, below: InspectView, partition: number | null): Promise<LayerDiff>;
  /**
   * Opens `url` read-only under a qcow2 overlay in local storage, read-write:
   * writes stay in the tab; the same URL finds its overlay again after a reload.
   */
  openRemoteOverlay(url: string): Promise<RemoteOverlayOpened>;
  /** Lets overlays in local storage name images of `origin` as backing files (after a reload, the origins the user chose before). */
  allowRemoteBacking(origin: string): Promise<void>;
  /** The HTTP block cache's counters and the overlay's size for an open image. */
  diskStatus(name: string): Promise<DiskStatus>;
  /**
   * Streams the open image into `handle` (a file from showSaveFilePicker, or
   * an OPFS file): `overlay` its top layer as stored, `merged` the whole disk as raw.
   */
  exportTo(name: string, mode: ExportMode, handle: FileSystemFileHandle, onProgress?: (done: number, total: number) => void): Promise<number>;
  /** The comlink proxy itself, for what this wrapper does not cover. */
  readonly remote: Comlink.Remote<EngineWorkerApi>;
  /** Stops the worker (open images are not flushed: close them first). */
  terminate(): void;
}

function moved<T extends Uint8Array>(data: T): T {
  return data.buffer instanceof ArrayBuffer ? Comlink.transfer(data, [data.buffer]) : data;
}

/**
 * Reads go over a plain MessageChannel instead of comlink (the worker's
 * `ioPort`): comlink's call and proxy bookkeeping cost more than the whole
 * 4 KiB read, and reads are the app's most frequent small request (hex view,
 * map probes). Like comlink calls, reads that are not awaited are not
 * ordered after earlier calls; await a write before reading it back.
 */
function readChannel(remote: Comlink.Remote<EngineWorkerApi>) {
  const channel = new MessageChannel();
  void remote.ioPort(Comlink.transfer(channel.port2, [channel.port2]));
  const pending = new Map<number, { resolve(b: Uint8Array<ArrayBuffer>): void; reject(e: Error): void }>();
  let nextRead = 0;
  channel.port1.onmessage = (ev: MessageEvent) => {
    const [id, data, error] = ev.data as IoPortReply;
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    if (data) p.resolve(data);
    else if (error && 'blocktabError' in error) p.reject(deserializeBlockError(error as SerializedBlockError));
    else p.reject(new Error(error?.message ?? 'read failed'));
  };
  return {
    read: (name: string, offset: number, bytes: number) =>
      new Promise<Uint8Array<ArrayBuffer>>((resolve, reject) => {
        const id = ++nextRead;
        pending.set(id, { resolve, reject });
        channel.port1.postMessage([id, name, offset, bytes] satisfies IoPortRequest);
      }),
    close: () => channel.port1.close(),
  };
}

/** Ids of cancellable jobs, unique per page. */
let nextJob = 0;

const maybeProxy = <F extends object>(f: F | undefined) => (f ? Comlink.proxy(f) : undefined);

/** Starts the engine worker (or uses `worker`, already started from src/worker/engine-worker.ts) and wraps it. */
export function createClient(worker?: Worker): BlocktabClient {
  // The literal `new URL(…, import.meta.url)` form is what bundlers (vite) recognise as a worker entry.
  const w = worker ?? new Worker(new URL('../worker/engine-worker.ts', import.meta.url), { type: 'module' });
  const remote = Comlink.wrap<EngineWorkerApi>(w);
  const reads = readChannel(remote);
  return {
    remote,
    ready: () => remote.ready(),
    execute: <T>(command: string, args?: Record<string, unknown>) => remote.execute(command, args) as Promise<T>,
    open: (storage, filename, opts) => remote.open(storage, filename, opts),
    close: (name) => remote.close(name),
    size: (name) => remote.size(name),
    flush: (name) => remote.flush(name),
    read: reads.read,
    write: (name, offset, data) => remote.write(name, offset, moved(data)),
    writeZeroes: (name, offset, bytes, opts) => remote.writeZeroes(name, offset, bytes, opts),
    discard: (name, offset, bytes) => remote.discard(name, offset, bytes),
    importFile: (storage, filename, data) => remote.importFile(storage, filename, moved(data)),
    removeFile: (storage, filename) => remote.removeFile(storage, filename),
    addFile: (source, name) => remote.addFile(source, name),
    info: (image, opts) => remote.info(image, opts) as Promise<QmpImageInfo>,
    map: (image, opts) => remote.map(image, opts),
    measure: (opts) => remote.measure(opts),
    convert(sources, target, opts, onProgress, cancel) {
      let jobId: number | undefined;
      if (cancel) {
        const id = (jobId = ++nextJob);
        cancel.token = { cancel: () => remote.cancel(id) };
      }
      return remote.convert(sources, target, opts, maybeProxy(onProgress), jobId);
    },
    listFiles: (storage) => remote.listFiles(storage),
    compare: (a, b, opts, onProgress) => remote.compare(a, b, opts, maybeProxy(onProgress)) as Promise<CompareResult>,
    create: (storage, filename, format, size, opts) => remote.create(storage, filename, format, size, opts),
    check: (image, opts) => remote.check(image, opts) as Promise<ImageCheck>,
    snapshot: (image, op) => remote.snapshot(image, op) as Promise<SnapshotInfoQapi[]>,
    snapshotApply: (node, name) => remote.snapshotApply(node, name),
    rebase: (image, backing, opts, onProgress) => remote.rebase(image, backing, opts, maybeProxy(onProgress)),
    commit: (image, opts, onProgress) => remote.commit(image, opts, maybeProxy(onProgress)),
    resize: (image, size, opts) => remote.resize(image, size, opts),
    amend: (image, options) => remote.amend(image, options),
    async onEvent(listener) {
      const id = await remote.subscribe(Comlink.proxy(listener));
      return () => remote.unsubscribe(id);
    },
    boundaryStats: () => remote.boundaryStats(),
    inspectPartitions: (view) => remote.inspectPartitions(view),
    inspectList: (view, partition, path) => remote.inspectList(view, partition, path),
    inspectTree: (view, partition, path) => remote.inspectTree(view, partition, path),
    inspectRead: (view, partition, path, offset, bytes) => remote.inspectRead(view, partition, path, offset, bytes),
    inspectDiff: (above, below, partition) => remote.inspectDiff(above, below, partition),
    openRemoteOverlay: (url) => remote.openRemoteOverlay(url),
    allowRemoteBacking: (origin) => remote.allowRemoteBacking(origin),
    diskStatus: (name) => remote.diskStatus(name),
    exportTo: (name, mode, handle, onProgress) => remote.exportTo(name, mode, handle, maybeProxy(onProgress)),
    terminate: () => {
      reads.close();
      remote[Comlink.releaseProxy]();
      w.terminate();
    },
  };
}
