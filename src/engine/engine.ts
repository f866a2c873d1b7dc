/**
 * The Engine: one block graph, its named nodes and devices, and QMP-style
 * commands over them (QEMU's monitor, without a VM). Environment-neutral: the
 * storages it opens images from are given to the constructor (OPFS, IndexedDB,
 * HTTP, blobs and memory in a browser worker; the file system and memory in
 * Node), so the same Engine runs behind the worker boundary and in-process.
 *
 * Two ways in:
 * - `execute(command, args)` with QEMU's command and argument names and reply
 *   shapes; failures are QmpErrors ({ class, desc } plus a BlockError code).
 *   Commands live in a table (src/engine/commands/) — one entry per command.
 * - typed methods for what QMP does not cover: read/write for the app, and
 *   the qemu-img operations (info, map, convert, compare, measure, …).
 *
 * Split by concern, each layer a class the next extends (one Engine object,
 * one public API): events.ts (the event channel) → graph.ts (named nodes
 * and devices, lookup, open/close) → dispatch.ts (the QMP command table) →
 * this file (the typed I/O API and the qemu-img operations).
 */
import '../drivers.js';
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { BlockBackend } from '../block/backend.js';
import { bdrvFlush, bdrvGetLength, bdrvPwrite, bdrvTruncate } from '../block/io.js';
import { closeNode, openImage } from '../block/open.js';
import { mapExtents, type MapEntry, type MapOptions } from '../img/map.js';
import { convert, convertTotalBytes, createConvertTarget, type ConvertOptions, type ProgressFn } from '../img/convert.js';
import { compareImages, type CompareOptions, type CompareResult } from '../img/compare.js';
import { measureImage, planMeasure, type MeasureResult } from '../img/measure.js';
import { EngineDispatch } from './dispatch.js';
import { IoTarget, type EngineGraphOptions } from './graph.js';
import { imageInfoTree, type QmpImageInfo } from './query.js';
import { createImage, planCreate } from '../img/create.js';
import { checkNode, type ImageCheck } from '../img/check.js';
import { imgSnapshot, listSnapshots } from '../img/snapshot.js';
import { snapshotInfoQapi, type SnapshotInfoQapi } from '../img/info.js';
import { rebaseImage } from '../img/rebase.js';
import { commitImage, findBackingImage } from '../img/commit.js';
import { amendImage, parseAmendOptions } from '../img/amend.js';
import { Job } from '../jobs/job.js';
import { runCommit } from '../jobs/commit.js';
import { overlayOf, reopenWritable } from './commands/commit.js';
import type { PreallocMode } from '../block/driver.js';

// The names other modules import from here (commands, worker, client) stay here.
export { EngineEvents, type QmpEvent, type EventListener } from './events.js';
export { EngineGraph, IoTarget, type EngineOpenOptions, type EngineGraphOptions } from './graph.js';
export { EngineDispatch } from './dispatch.js';

/** Largest single read()/write() through the typed API (a request this size is one allocation). */
/** The typed API plays the device: its requests are accounted in the backend's statistics. */
const ACCOUNT = { account: true, errorPolicy: true } as const;

export const DEFAULT_MAX_IO_BYTES = 256 * 1024 * 1024;

export interface EngineOptions extends EngineGraphOptions {
  /** Largest read()/write() request in bytes (default 256 MiB). */
  maxIoBytes?: number;
}

/**
 * An image for the typed operations: the name of a node or device already in
 * the graph, or a file in one of the storages (opened read-only for the
 * operation and closed after it; the format is probed unless given).
 */
export type ImageRef = string | { storage: string; filename: string; format?: string };

/** Target of convert: an existing writable node/device, or a new file in a storage. */
export type ConvertTarget =
  | string
  | { storage: string; filename: string; format?: string; options?: string[]; backingFile?: string; backingFormat?: string };

export interface EngineMeasureOptions {
  /** Output format, any registered format driver that measures (default qcow2). */
  format?: string;
  /** Virtual size in bytes of the new image, when no `image` is given. */
  size?: number;
  /** qemu-img's -o creation options for the new image: "name=value" strings, or a record of them. */
  options?: string[] | Record<string, string | number | boolean>;
  /** Measure what this image holds instead of a bare `size`. */
  image?: ImageRef;
}

export interface EngineCreateOptions {
  /** qemu-img's -o options: "name=value" strings, or a record of them. */
  options?: string[] | Record<string, string | number | boolean>;
  /** -b and -F. */
  backingFile?: string;
  backingFormat?: string;
  /** -u: do not open the backing file (its format must be given). */
  unsafe?: boolean;
}

export interface EngineCreateResult {
  filename: string;
  format: string;
  /** Virtual size in bytes. */
  size: number;
  /** qemu-img's "Formatting '…', fmt=… size=…" line. */
  line: string;
}

/** qemu-img snapshot's actions: -l, -c NAME, -a NAME, -d NAME. */
export type SnapshotOp = { list: true } | { create: string } | { apply: string } | { delete: string };

/** -o values as qemu-img's option strings (a comma in a value is doubled, as QemuOpts wants). */
function optionStrings(o: string[] | Record<string, string | number | boolean> | undefined): string[] | undefined {
  if (o === undefined || Array.isArray(o)) return o;
  return Object.entries(o).map(([k, v]) => `${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v).replaceAll(',', ',,')}`);
}

/** Drops absent (undefined) members, so replies look the same after structured clone and JSON. */
function present<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

export class Engine extends EngineDispatch {
  readonly maxIoBytes: number;

  constructor(options: EngineOptions) {
    super(options);
    this.maxIoBytes = options.maxIoBytes ?? DEFAULT_MAX_IO_BYTES;
  }

  // ------------------------------------------------------ the app's API

  /**
   * Reads `bytes` bytes at `offset` of a device or node into a fresh buffer
   * (never a view of the wasm arena, so the worker can transfer it).
   */
  async read(name: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>> {
    const io = this.guestTarget(name);
    this.checkIo(io, offset, bytes, 'read');
    const buf = new Uint8Array(bytes);
    await io.backend.read(offset, bytes, buf, ACCOUNT);
    return buf;
  }

  /** Writes `data` at `offset` of a device or node. */
  async write(name: string, offset: number, data: Uint8Array): Promise<void> {
    const io = this.guestTarget(name);
    this.checkIo(io, offset, data.length, 'write');
    await io.backend.write(offset, data.length, data, {}, ACCOUNT);
  }

  async flush(name: string): Promise<void> {
    await this.guestTarget(name).backend.flush(ACCOUNT);
  }

  /** Virtual size of a device or node in bytes. */
  size(name: string): number {
    return this.lookup(name).totalBytes;
  }

  /** Creates (or truncates) `filename` in a storage and fills it with `data`. */
  async importFile(storageName: string, filename: string, data: Uint8Array): Promise<void> {
    const storage = this.requireStorage(storageName);
    if (!storage.createFile) throw new BlockError('EROFS', `Could not create '${filename}': the ${storage.name} storage cannot create files`);
    await storage.createFile(filename);
    const bs = await storage.openProtocol(filename, { readOnly: false });
    try {
      if (data.length > 0) await bdrvPwrite(bs, 0, data.length, data);
      await bdrvFlush(bs);
    } finally {
      await closeNode(bs);
    }
  }

  async removeFile(storageName: string, filename: string): Promise<void> {
    const storage = this.requireStorage(storageName);
    if (!storage.removeFile) throw new BlockError('EROFS', `Could not remove '${filename}': the ${storage.name} storage cannot remove files`);
    await storage.removeFile(filename);
  }

  // -------------------------------------------------- qemu-img operations

  /** qemu-img info: QAPI ImageInfo; with `backingChain`, each backing image nested as `backing-image`. */
  async info(image: ImageRef, opts: { backingChain?: boolean } = {}): Promise<QmpImageInfo> {
    return this.withImage(image, async (bs) => (await imageInfoTree(bs, opts.backingChain !== true)).info);
  }

  /** qemu-img map --output=json: the merged extents. */
  async map(image: ImageRef, opts: MapOptions = {}): Promise<MapEntry[]> {
    return this.withImage(image, async (bs) => {
      const out: MapEntry[] = [];
      for await (const e of mapExtents(bs, opts)) {
        const entry: MapEntry = { ...e };
        if (entry.offset === undefined) delete entry.offset;
        if (entry.filename === undefined) delete entry.filename;
        out.push(entry);
      }
      return out;
    });
  }

  /**
   * qemu-img convert: copies the sources' guest view (concatenated) into the
   * target. A new target file is created in `format` (raw or qcow2) with
   * qemu-img's -o options and -B/-F; an existing node must be writable and large enough.
   */
  async convert(sources: ImageRef[], target: ConvertTarget, opts: ConvertOptions = {}, onProgress?: ProgressFn): Promise<{ bytes: number }> {
    if (sources.length === 0) throw new BlockError('EINVAL', 'convert needs at least one source image');
    const opened: BlockNode[] = [];
    const temps: BlockNode[] = [];
    try {
      for (const s of sources) {
        const { bs, temporary } = await this.resolveImage(s);
        opened.push(bs);
        if (temporary) temps.push(bs);
      }
      const total = convertTotalBytes(opened);
      if (typeof target === 'string') {
        await convert(opened, this.lookup(target), opts, onProgress);
        return { bytes: total };
      }
      const made = await createConvertTarget(this.requireStorage(target.storage), {
        ...target,
        compressed: opts.compressed,
        sourceCount: opened.length,
        size: total,
      });
      try {
        await convert(opened, made.target, { ...made.options, ...opts }, onProgress);
      } finally {
        await closeNode(made.target);
      }
      return { bytes: total };
    } finally {
      for (const bs of temps) await closeNode(bs);
    }
  }

  /** qemu-img compare. */
  async compare(a: ImageRef, b: ImageRef, opts: CompareOptions = {}, onProgress?: ProgressFn): Promise<CompareResult> {
    return this.withImage(a, (bsA) => this.withImage(b, (bsB) => compareImages(bsA, bsB, opts, onProgress)));
  }

  /** qemu-img measure: for a new image of `size` bytes, or for what `image` holds. */
  async measure(opts: EngineMeasureOptions): Promise<MeasureResult> {
    const { image, format = 'qcow2' } = opts;
    const plan = await planMeasure(format, optionStrings(opts.options) ?? []);
    if (!image) return measureImage(plan, undefined, opts.size ?? 0);
    return this.withImage(image, (bs) => measureImage(plan, bs));
  }

  // ------------------------------------- qemu-img operations that write

  /**
   * qemu-img create: a new image `filename` in a storage. `opts.options` are
   * qemu-img's -o options ("cluster_size=4k" strings, or a record such as
   * `{ cluster_size: 4096, lazy_refcounts: true }`); `size` in bytes may be
   * left out when a backing file gives it. Returns what the "Formatting"
   * line says.
   */
  async create(storage: string, filename: string, format: string, size?: number, opts: EngineCreateOptions = {}): Promise<EngineCreateResult> {
    const st = this.requireStorage(storage);
    const plan = await planCreate(st, {
      filename,
      format,
      size,
      options: optionStrings(opts.options),
      backingFile: opts.backingFile,
      backingFormat: opts.backingFormat,
      unsafe: opts.unsafe,
    });
    await createImage(st, plan);
    return { filename, format, size: plan.size, line: plan.line };
  }

  /**
   * qemu-img check --output=json: QAPI ImageCheck. `repair` ('leaks' | 'all')
   * repairs and reports the second check with the fixed counts, as qemu-img
   * -r; a file is then opened read-write, a node must be writable.
   */
  async check(image: ImageRef, opts: { repair?: 'leaks' | 'all' } = {}): Promise<ImageCheck> {
    const fix = { leaks: opts.repair !== undefined, errors: opts.repair === 'all' };
    return this.withImage(image, async (bs) => present((await checkNode(bs, typeof image === 'string' ? bs.filename : image.filename, fix)).check), {
      writable: fix.leaks,
      // A repair may open an image with the corrupt bit read/write (QEMU's BDRV_O_CHECK), as `blocktab check -r` does.
      driverOptions: fix.leaks ? { check: true } : undefined,
    });
  }

  /**
   * qemu-img snapshot -l / -c / -a / -d on a file or an open node (a node
   * must be writable for all but list). Returns the snapshot list after the
   * operation, shaped as qemu-img info's `snapshots` (QAPI SnapshotInfo).
   */
  async snapshot(image: ImageRef, op: SnapshotOp): Promise<SnapshotInfoQapi[]> {
    const list = (bs: BlockNode) => listSnapshots(bs).map((sn) => present(snapshotInfoQapi(sn)));
    if ('list' in op) return this.withImage(image, async (bs) => list(bs));
    const [action, name] = 'create' in op ? (['create', op.create] as const) : 'apply' in op ? (['apply', op.apply] as const) : (['delete', op.delete] as const);
    return this.withImage(
      image,
      async (bs) => {
        await imgSnapshot(bs, action, name);
        return list(bs);
      },
      { writable: true },
    );
  }

  /** Reverts an open, writable node to internal snapshot `name` (id or name); QEMU has no QMP command for this. */
  async snapshotApply(node: string, name: string): Promise<void> {
    await this.snapshot(node, { apply: name });
  }

  /**
   * qemu-img rebase on an image file (not open in the engine: the chain
   * changes under it). `backing` '' removes the backing file; `unsafe` only
   * rewrites the header.
   */
  async rebase(image: ImageRef, backing: string, opts: { backingFormat?: string; unsafe?: boolean } = {}, onProgress?: ProgressFn): Promise<void> {
    if (typeof image === 'string') {
      throw new BlockError('EBUSY', `${image}: rebase works on an image file, not an open node (block-stream changes the chain of an open node)`);
    }
    await rebaseImage(this.requireStorage(image.storage), { filename: image.filename, format: image.format, backing, ...opts, onProgress });
  }

  /**
   * qemu-img commit: what the image holds above `base` (default: its backing
   * file) goes into base; the image is then emptied unless `drop` (-d) or
   * `base` (-b implies -d). On an open, writable node the node stays the
   * active layer (the base is reopened read-write for the copy).
   */
  async commit(image: ImageRef, opts: { base?: string; drop?: boolean } = {}, onProgress?: ProgressFn): Promise<void> {
    if (typeof image !== 'string') {
      await commitImage(this.requireStorage(image.storage), { filename: image.filename, format: image.format, ...opts, onProgress });
      return;
    }
    const top = this.lookup(image);
    if (top.readOnly) throw new BlockError('EROFS', `${image}: the node is read-only`);
    let base = top.cowNode();
    if (!base) throw new BlockError('EINVAL', `${image}: Image does not have a backing file`);
    if (opts.base !== undefined) {
      const st = this.storageOf(top);
      const found = st && findBackingImage(st, top, opts.base);
      if (!found) throw new BlockError('ENOENT', `Did not find '${opts.base}' in the backing chain of '${image}'`);
      base = found;
    }
    const w = await reopenWritable(this, base, overlayOf(top, base)!);
    const job = new Job('commit', 'commit', (j) => onProgress?.(j.current, j.total));
    try {
      await job.start((j) => runCommit(j, top, { base: w.node, keepTop: opts.drop === true || opts.base !== undefined }));
    } finally {
      await w.release();
    }
    onProgress?.(job.total, job.total);
  }

  /**
   * qemu-img resize: `size` in bytes, or relative with `relative: true`
   * (qemu-img's +SIZE / -SIZE). Shrinking needs `shrink`. A node (QEMU's
   * block_resize) must be writable; a file is opened read-write without its
   * backing chain.
   */
  async resize(image: ImageRef, size: number, opts: { relative?: boolean; shrink?: boolean; preallocation?: PreallocMode } = {}): Promise<{ size: number }> {
    return this.withImage(
      image,
      async (bs) => {
        const current = await bdrvGetLength(bs);
        const total = opts.relative ? current + size : size;
        if (!Number.isSafeInteger(total) || total <= 0) throw new BlockError('EINVAL', 'New image size must be positive');
        if (total < current && !opts.shrink) {
          throw new BlockError('EINVAL', 'Use the --shrink option to perform a shrink operation (shrinking deletes all data beyond the new end)');
        }
        await bdrvTruncate(bs, total, false, opts.preallocation ?? 'off');
        return { size: bs.totalBytes };
      },
      { writable: true },
    );
  }

  /** qemu-img amend -o: options as strings ("compat=0.10") or a record, for formats that amend (qcow2). */
  async amend(image: ImageRef, options: string[] | Record<string, string | number | boolean>): Promise<void> {
    await this.withImage(image, async (bs) => amendImage(bs, await parseAmendOptions(bs.driver.name, optionStrings(options) ?? [])), { writable: true, backing: true });
  }

  /** Writes zeros at `offset` of a device or node (qemu-io's write -z; `unmap` lets the format deallocate). */
  async writeZeroes(name: string, offset: number, bytes: number, opts: { unmap?: boolean } = {}): Promise<void> {
    await this.guestTarget(name).backend.writeZeroes(offset, bytes, { mayUnmap: opts.unmap === true }, ACCOUNT);
  }

  /** Discards `bytes` at `offset` of a device or node (qemu-io's discard). */
  async discard(name: string, offset: number, bytes: number): Promise<void> {
    await this.guestTarget(name).backend.discard(offset, bytes, ACCOUNT);
  }

  // ------------------------------------------------------------- helpers

  /** The backend of a device, or a node's anonymous one; I/O through it plays a device's (accounted, error policy). */
  ioTarget(name: string): IoTarget {
    const dev = this.devices.get(name);
    if (dev) return dev;
    const bs = this.lookup(name);
    let io = this.nodeIo.get(bs);
    if (!io) this.nodeIo.set(bs, (io = new IoTarget(this.makeBackend(bs, { werror: 'report' }))));
    return io;
  }

  /** ioTarget for the typed API, which is the backend's "device": iostatus is tracked from its first use. */
  private guestTarget(name: string): IoTarget {
    const io = this.ioTarget(name);
    io.backend.iostatusEnabled = true;
    return io;
  }

  private checkIo(io: IoTarget, offset: number, bytes: number, what: 'read' | 'write'): void {
    const size = io.backend.root.totalBytes;
    const label = io.backend.name || this.nameOf(io.backend.root);
    let problem: BlockError | undefined;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
      problem = new BlockError('EINVAL', `${label}: invalid ${what} request (offset ${offset}, ${bytes} bytes)`);
    } else if (bytes > this.maxIoBytes) {
      problem = new BlockError('EINVAL', `${label}: ${what} of ${bytes} bytes is larger than the ${this.maxIoBytes}-byte limit per request`);
    } else if (offset + bytes > size) {
      problem = new BlockError('EIO', `${label}: ${what} at offset ${offset} (+${bytes} bytes) is past the end of the device (${size} bytes)`);
    }
    if (!problem) return;
    io.backend.stats.invalid(what);
    throw problem;
  }

  /**
   * The node for `ref`, and whether it was opened just for this call. With
   * `writable`, a file is opened read-write (without its backing chain unless
   * `backing`) and a node must be writable.
   */
  private async resolveImage(
    ref: ImageRef,
    rw?: { writable: boolean; backing?: boolean; driverOptions?: Record<string, unknown> },
  ): Promise<{ bs: BlockNode; temporary: boolean }> {
    if (typeof ref === 'string') {
      const bs = this.lookup(ref);
      if (rw?.writable && bs.readOnly) throw new BlockError('EROFS', `${ref}: the node is read-only`);
      return { bs, temporary: false };
    }
    const writable = rw?.writable === true;
    const bs = await openImage(this.requireStorage(ref.storage), ref.filename, {
      format: ref.format,
      readOnly: !writable,
      backing: writable ? rw?.backing === true : undefined,
      driverOptions: rw?.driverOptions,
      warn: this.warn,
    });
    return { bs, temporary: true };
  }

  private async withImage<T>(
    ref: ImageRef,
    fn: (bs: BlockNode) => Promise<T>,
    rw?: { writable: boolean; backing?: boolean; driverOptions?: Record<string, unknown> },
  ): Promise<T> {
    const { bs, temporary } = await this.resolveImage(ref, rw);
    try {
      return await fn(bs);
    } finally {
      if (temporary) await closeNode(bs);
    }
  }
}
