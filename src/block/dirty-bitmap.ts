/**
 * Dirty bitmaps on nodes (QEMU's block/dirty-bitmap.c and the
 * block-dirty-bitmap-* QMP commands).
 *
 * A node's bitmaps live in a DirtyBitmapList installed as `bs.dirtyBitmaps`;
 * io.ts reports every successful write, write-zeroes and discard to it and
 * each enabled bitmap records the range. A bitmap is an HBitmap over the
 * node's bytes (src/wasm/hbitmap.ts): its bits live in the wasm arena when
 * the module is loaded and has room, otherwise in JS typed arrays — same
 * semantics, so callers never need initWasm.
 *
 * State flags follow QEMU: disabled bitmaps ignore writes (but can be
 * cleared and merged into); busy bitmaps belong to an operation (a backup
 * job) and refuse user commands; readonly ones (loaded from a read-only
 * image) refuse changes; inconsistent ones (a persistent bitmap whose image
 * was not closed cleanly) can only be removed.
 */
import { BlockError } from './errors.js';
import type { BlockNode, WriteObserver } from './node.js';
import { HBitmap, type DirtyArea } from '../wasm/hbitmap.js';
import { WasmError } from '../wasm/errors.js';

/**
 * Runs an HBitmap operation that user input can reach, turning the wasm
 * layer's WasmError into a BlockError with the same code and message.
 */
function viaBitmap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof WasmError) throw new BlockError(e.code, e.message, { cause: e });
    throw e;
  }
}

/** QEMU's BDRV_BITMAP_MAX_NAME_SIZE. */
export const BITMAP_MAX_NAME_SIZE = 1023;
export const BITMAP_MIN_GRANULARITY = 512;
export const BITMAP_MAX_GRANULARITY = 2 ** 31;

/** The user-visible facts about a bitmap, as QEMU's BlockDirtyInfo (query-block "dirty-bitmaps"); no name for a job's own. */
export interface DirtyBitmapInfo {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent?: boolean;
}

/** Creation order of every bitmap, so a node's named and job-owned bitmaps list newest first together. */
let bitmapSeq = 0;

export class BdrvDirtyBitmap {
  /** '' for a job's own bitmap (QEMU's unnamed bitmaps), never a user's. */
  name: string;
  readonly seq = ++bitmapSeq;
  readonly bitmap: HBitmap;
  disabled = false;
  busy = false;
  persistent = false;
  readonly = false;
  inconsistent = false;
  /**
   * While a backup job syncs from this bitmap (QEMU's frozen bitmap): the unnamed bitmap that records the writes
   * made meanwhile in its place. This one keeps its bits unchanged until the job gives it the successor's.
   */
  successor: BdrvDirtyBitmap | undefined;

  constructor(name: string, size: number, granularity: number) {
    this.name = name;
    this.bitmap = viaBitmap(() => new HBitmap(size, Math.log2(granularity)));
  }

  /** Bytes per bit. */
  get granularity(): number {
    return 2 ** this.bitmap.granularity;
  }
  /** Bytes covered (the node's size). */
  get size(): number {
    return this.bitmap.size;
  }
  get enabled(): boolean {
    return !this.disabled;
  }
  /** Dirty bytes (dirty chunks × granularity), as QEMU's bdrv_get_dirty_count. */
  count(): number {
    return this.bitmap.count();
  }
  /** Whether the chunk holding `offset` is dirty. */
  get(offset: number): boolean {
    return this.bitmap.get(offset);
  }
  /** Dirty extents in [start, end), merged where chunks touch and clipped to the node's size. */
  dirtyExtents(start = 0, end = this.size): Generator<DirtyArea> {
    return this.bitmap.dirtyAreas(start, end);
  }
  /** QEMU's bdrv_dirty_bitmap_next_dirty_area. */
  nextDirtyArea(start: number, end: number, maxBytes = Infinity): DirtyArea | null {
    return this.bitmap.nextDirtyArea(start, end, maxBytes);
  }
  nextDirty(start: number, bytes = Infinity): number {
    return this.bitmap.nextDirty(start, bytes);
  }
  nextZero(start: number, bytes = Infinity): number {
    return this.bitmap.nextZero(start, bytes);
  }
  /**
   * SHA-256 of the bitmap's bits serialized as QEMU lays out its last hbitmap
   * level (little-endian 64-bit words, bit n = chunk n): what
   * x-debug-block-dirty-bitmap-sha256 answers. The hash library loads on
   * first use (only this debugging command needs it, not start-up).
   */
  async sha256(): Promise<string> {
    const buf = new Uint8Array(this.bitmap.serializationSize(0, this.size));
    if (buf.length) this.bitmap.serializePart(buf, 0, this.size);
    const [{ sha256 }, { bytesToHex }] = await Promise.all([import('@noble/hashes/sha2.js'), import('@noble/hashes/utils.js')]);
    return bytesToHex(sha256(buf));
  }
  info(): DirtyBitmapInfo {
    const info: DirtyBitmapInfo = {
      ...(this.name ? { name: this.name } : {}),
      count: this.count(),
      granularity: this.granularity,
      // QEMU's bdrv_dirty_bitmap_recording: a frozen bitmap records through its successor.
      recording: !this.disabled || (this.successor !== undefined && !this.successor.disabled),
      busy: this.busy,
      persistent: this.persistent,
    };
    if (this.inconsistent) info.inconsistent = true;
    return info;
  }
}

/** The WriteObserver installed on a node that has bitmaps. */
export class DirtyBitmapList implements WriteObserver {
  readonly bs: BlockNode;
  /** Newest first, as QEMU lists them. */
  readonly bitmaps: BdrvDirtyBitmap[] = [];
  /** An observer that was on the node before us keeps being told. */
  private readonly chained: WriteObserver | null;
  /** Unnamed observers of the node's writes (a job tracking what changes while it runs); not bitmaps users see. */
  readonly observers = new Set<WriteObserver>();
  /**
   * Jobs' own unnamed bitmaps (a mirror's): listed among the node's dirty bitmaps, as QEMU's query-block shows
   * them, but unreachable by name, never stored nor released with the node; their job records into them.
   */
  readonly shown = new Set<BdrvDirtyBitmap>();

  constructor(bs: BlockNode, chained: WriteObserver | null) {
    this.bs = bs;
    this.chained = chained;
  }

  markDirty(offset: number, bytes: number): void {
    this.chained?.markDirty(offset, bytes);
    for (const o of this.observers) o.markDirty(offset, bytes);
    if (bytes <= 0) return;
    for (const bm of this.bitmaps) {
      if (bm.disabled || bm.successor) continue;
      // A protocol node grows when written past its end; its bitmaps follow, as QEMU's write_req_finish does.
      if (offset + bytes > bm.size && this.bs.totalBytes > bm.size) bm.bitmap.truncate(this.bs.totalBytes);
      const end = Math.min(offset + bytes, bm.size);
      if (end > offset) bm.bitmap.set(offset, end - offset);
    }
  }
}

function listOf(bs: BlockNode): DirtyBitmapList {
  if (bs.dirtyBitmaps instanceof DirtyBitmapList) return bs.dirtyBitmaps;
  const list = new DirtyBitmapList(bs, bs.dirtyBitmaps);
  bs.dirtyBitmaps = list;
  return list;
}

/** Tells `observer` about every write that lands on `bs` from now on; returns the function that stops it. */
export function addWriteObserver(bs: BlockNode, observer: WriteObserver): () => void {
  const list = listOf(bs);
  list.observers.add(observer);
  return () => list.observers.delete(observer);
}

/**
 * Lists a job's own unnamed bitmap among the node's dirty bitmaps (query-block, query-named-block-nodes) while the
 * job runs, as QEMU lists a mirror's; returns the function that takes it off. The job keeps recording into it.
 */
export function showJobDirtyBitmap(bs: BlockNode, bm: BdrvDirtyBitmap): () => void {
  const list = listOf(bs);
  list.shown.add(bm);
  return () => list.shown.delete(bm);
}

/** What query-block shows of a node's dirty bitmaps: the named ones and the jobs' own, newest first (QEMU's order). */
export function dirtyBitmapInfos(bs: BlockNode): DirtyBitmapInfo[] {
  if (!(bs.dirtyBitmaps instanceof DirtyBitmapList)) return [];
  const all = [...bs.dirtyBitmaps.bitmaps, ...bs.dirtyBitmaps.shown].sort((a, b) => b.seq - a.seq);
  return all.map((b) => b.info());
}

function bitmapsOf(bs: BlockNode): BdrvDirtyBitmap[] {
  return bs.dirtyBitmaps instanceof DirtyBitmapList ? bs.dirtyBitmaps.bitmaps : [];
}

const CHECK_BUSY = 1;
const CHECK_RO = 2;
const CHECK_INCONSISTENT = 4;
/** QEMU's BDRV_BITMAP_DEFAULT: what a command that changes the bits must check. */
const CHECK_DEFAULT = CHECK_BUSY | CHECK_RO | CHECK_INCONSISTENT;
/** QEMU's BDRV_BITMAP_ALLOW_RO: commands that only change flags. */
const CHECK_ALLOW_RO = CHECK_BUSY | CHECK_INCONSISTENT;

/** QEMU's bdrv_dirty_bitmap_check, with its messages. */
export function checkDirtyBitmap(bm: BdrvDirtyBitmap, flags: number = CHECK_DEFAULT): void {
  if (flags & CHECK_BUSY && bm.busy) {
    throw new BlockError('EBUSY', `Bitmap '${bm.name}' is currently in use by another operation and cannot be used`);
  }
  if (flags & CHECK_RO && bm.readonly) {
    throw new BlockError('EPERM', `Bitmap '${bm.name}' is readonly and cannot be modified`);
  }
  if (flags & CHECK_INCONSISTENT && bm.inconsistent) {
    throw new BlockError('EINVAL', `Bitmap '${bm.name}' is inconsistent and cannot be used`);
  }
}

/**
 * The granularity a bitmap gets when none is given (QEMU's
 * bdrv_get_default_bitmap_granularity): the node's cluster size clamped to
 * 4 KiB..64 KiB, or 64 KiB when the node has no cluster size.
 */
export function defaultBitmapGranularity(bs: BlockNode): number {
  let cluster = 0;
  try {
    cluster = bs.driver.getDriverInfo?.(bs)?.clusterSize ?? 0;
  } catch {
    cluster = 0; // bdrv_get_info failing means "no cluster size"
  }
  return cluster > 0 ? Math.min(65536, Math.max(4096, cluster)) : 65536;
}

export interface AddDirtyBitmapOptions {
  /** Bytes per bit: a power of two, 512 .. 2^31. Default: defaultBitmapGranularity(bs). */
  granularity?: number;
  /** Store the bitmap in the image when it closes (needs a driver that can). */
  persistent?: boolean;
  /** Create it disabled (not recording writes). */
  disabled?: boolean;
}

/** Looks up a bitmap by name (QEMU's bdrv_find_dirty_bitmap). */
export function findDirtyBitmap(bs: BlockNode, name: string): BdrvDirtyBitmap | undefined {
  return bitmapsOf(bs).find((b) => b.name === name);
}

/** Like findDirtyBitmap but a missing bitmap is an error (QEMU's block_dirty_bitmap_lookup). */
export function lookupDirtyBitmap(bs: BlockNode, name: string): BdrvDirtyBitmap {
  const bm = findDirtyBitmap(bs, name);
  if (!bm) throw new BlockError('ENOENT', `Dirty bitmap '${name}' not found`);
  return bm;
}

/** The node's bitmaps, newest first. */
export function listDirtyBitmaps(bs: BlockNode): BdrvDirtyBitmap[] {
  return [...bitmapsOf(bs)];
}

/** block-dirty-bitmap-add. */
export function addDirtyBitmap(bs: BlockNode, name: string, opts: AddDirtyBitmapOptions = {}): BdrvDirtyBitmap {
  if (!name) throw new BlockError('EINVAL', 'Bitmap name cannot be empty');
  let granularity: number;
  if (opts.granularity !== undefined) {
    granularity = opts.granularity;
    const pow2 = Number.isInteger(granularity) && granularity > 0 && 2 ** Math.round(Math.log2(granularity)) === granularity;
    if (!pow2 || granularity < BITMAP_MIN_GRANULARITY) {
      throw new BlockError('EINVAL', 'Granularity must be power of 2 and at least 512');
    }
    if (granularity > BITMAP_MAX_GRANULARITY) {
      throw new BlockError('EINVAL', `Granularity must be at most ${BITMAP_MAX_GRANULARITY}`);
    }
  } else {
    granularity = defaultBitmapGranularity(bs);
  }
  if (findDirtyBitmap(bs, name)) throw new BlockError('EEXIST', `Bitmap already exists: ${name}`);
  if (new TextEncoder().encode(name).length > BITMAP_MAX_NAME_SIZE) throw new BlockError('EINVAL', `Bitmap name too long: ${name}`);
  if (opts.persistent) {
    const drv = bs.driver;
    if (!drv.canStoreNewDirtyBitmap) {
      throw new BlockError('ENOTSUP', `Can't store persistent bitmaps to ${bs.nodeName}`);
    }
    drv.canStoreNewDirtyBitmap(bs, name, granularity);
  }
  const bm = createDirtyBitmap(bs, name, granularity);
  bm.disabled = opts.disabled === true;
  bm.persistent = opts.persistent === true;
  return bm;
}

/**
 * Adds an empty, enabled, non-persistent bitmap without the user-facing
 * checks (QEMU's bdrv_create_dirty_bitmap): for drivers loading stored
 * bitmaps, which check names and granularity against their own format.
 */
export function createDirtyBitmap(bs: BlockNode, name: string, granularity: number): BdrvDirtyBitmap {
  if (findDirtyBitmap(bs, name)) throw new BlockError('EEXIST', `Bitmap already exists: ${name}`);
  const bm = new BdrvDirtyBitmap(name, bs.totalBytes, granularity);
  listOf(bs).bitmaps.unshift(bm);
  return bm;
}

/** block-dirty-bitmap-remove: also deletes a persistent bitmap's stored copy. */
export async function removeDirtyBitmap(bs: BlockNode, name: string): Promise<void> {
  const bm = lookupDirtyBitmap(bs, name);
  checkDirtyBitmap(bm, CHECK_BUSY | CHECK_RO);
  if (bm.persistent) await bs.driver.removePersistentDirtyBitmap?.(bs, name);
  releaseDirtyBitmap(bs, bm);
}

/** Drops a bitmap from its node and frees its memory (QEMU's bdrv_release_dirty_bitmap). */
export function releaseDirtyBitmap(bs: BlockNode, bm: BdrvDirtyBitmap): void {
  const list = bitmapsOf(bs);
  const i = list.indexOf(bm);
  if (i >= 0) list.splice(i, 1);
  bm.bitmap.free();
}

/** Releases every bitmap of a node that is closing (stored copies are kept). */
export function releaseNamedDirtyBitmaps(bs: BlockNode): void {
  for (const bm of listDirtyBitmaps(bs)) releaseDirtyBitmap(bs, bm);
}

/** block-dirty-bitmap-clear. */
export function clearDirtyBitmap(bs: BlockNode, name: string): void {
  const bm = lookupDirtyBitmap(bs, name);
  checkDirtyBitmap(bm, CHECK_DEFAULT);
  bm.bitmap.resetAll();
}

/** block-dirty-bitmap-enable. */
export function enableDirtyBitmap(bs: BlockNode, name: string): void {
  const bm = lookupDirtyBitmap(bs, name);
  checkDirtyBitmap(bm, CHECK_ALLOW_RO);
  bm.disabled = false;
}

/** block-dirty-bitmap-disable. */
export function disableDirtyBitmap(bs: BlockNode, name: string): void {
  const bm = lookupDirtyBitmap(bs, name);
  checkDirtyBitmap(bm, CHECK_ALLOW_RO);
  bm.disabled = true;
}

/** A merge source: a bitmap of the same node by name, or of another node. */
export type MergeSource = string | { node: BlockNode; name: string };

/**
 * block-dirty-bitmap-merge: target |= every source. All sources are checked
 * before the target changes, so a failed merge leaves the target as it was.
 */
export function mergeDirtyBitmaps(bs: BlockNode, target: string, sources: MergeSource[]): void {
  const dst = lookupDirtyBitmap(bs, target);
  checkDirtyBitmap(dst, CHECK_DEFAULT);
  const srcs = sources.map((s) => (typeof s === 'string' ? lookupDirtyBitmap(bs, s) : lookupDirtyBitmap(s.node, s.name)));
  for (const src of srcs) {
    checkDirtyBitmap(src, CHECK_ALLOW_RO);
    if (src.size !== dst.size) {
      throw new BlockError(
        'EINVAL',
        `Bitmaps are of different sizes (destination size is ${dst.size}, source size is ${src.size}) and can't be merged`,
      );
    }
  }
  for (const src of srcs) viaBitmap(() => dst.bitmap.merge(src.bitmap));
}

/** Resizes every bitmap of the node with it (QEMU's bdrv_dirty_bitmap_truncate); call after a successful truncate. */
export function truncateDirtyBitmaps(bs: BlockNode, size: number): void {
  for (const bm of bitmapsOf(bs)) viaBitmap(() => bm.bitmap.truncate(size));
}
