/**
 * The backup job (QEMU's block/backup.c with block-copy and the
 * copy-before-write filter; drive-backup / blockdev-backup): the target
 * receives the source as it was when the job started, while the guest
 * keeps writing to the source.
 *
 * A copy bitmap at the job's cluster size says what is still to copy:
 * `full` every cluster, `top` what the top layer holds, `bitmap` the
 * clusters a user's dirty bitmap marks, `none` every cluster but the job
 * itself copies nothing (only the guest's writes do, until cancelled: the
 * target is a point-in-time view for a reader, QEMU's fleecing). A
 * before-write hook on the source (src/block/before-write.ts) copies the
 * old data of every cluster a guest write is about to change and is still
 * in the copy bitmap, before the write goes on: so no guest write made
 * after the start reaches the target. A cluster is taken out of the bitmap
 * before it is read; the hook waits for the job's copy of a cluster in
 * flight, so the old data is always what lands.
 *
 * The job's bitmaps are QEMU's, listed where QEMU lists them (query-block,
 * query-named-block-nodes), unnamed and not recording: the copy bitmap on
 * the source (block-copy's), and on the copy-before-write filter node the
 * clusters its hook copied (`done`) and those a reader of the point-in-time
 * view may read (`access`: all of them, nothing discards through the filter).
 *
 * With a sync bitmap, the bitmap is busy and frozen during the job and an
 * unnamed successor on the source records the writes made meanwhile (if the
 * bitmap was enabled); at the end, as QEMU's
 * backup_cleanup_sync_bitmap: `on-success` keeps only the successor when
 * the job succeeded (else the bitmap keeps its bits and gains the
 * successor's), `always` keeps the successor plus what was not copied,
 * `never` keeps the bitmap plus the successor.
 */
import { allocBuffer, bufferIsZero, freeBuffer } from '../block/buffers.js';
import { addBeforeWriteHook } from '../block/before-write.js';
import { addWriteObserver, BdrvDirtyBitmap, showJobDirtyBitmap } from '../block/dirty-bitmap.js';
import { BlockError } from '../block/errors.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { BDRV_BLOCK_ZERO, blockStatusAbove, isAllocatedAbove } from '../block/status.js';
import type { HBitmap } from '../wasm/hbitmap.js';
import type { Job, JobDriver, JobErrorPolicy } from './job.js';
import { registerJobType } from './registry.js';

export type BackupSyncMode = 'full' | 'top' | 'none' | 'bitmap';
export type BitmapSyncMode = 'on-success' | 'always' | 'never';

/** QEMU's BACKUP_CLUSTER_SIZE_DEFAULT. */
export const BACKUP_CLUSTER_SIZE_DEFAULT = 65536;
/** The largest run the job copies at once (QEMU's block-copy max chunk without compression). */
const MAX_RUN = 1024 * 1024;
/** Runs copied at once when the job is not throttled. */
const WORKERS = 4;

export interface BackupOptions {
  source: BlockNode;
  target: BlockNode;
  sync: BackupSyncMode;
  /** Bytes per copy bit: the target's cluster size, at least 64 KiB (QEMU's backup_calculate_cluster_size). */
  clusterSize: number;
  /** The user's bitmap: what to copy (sync=bitmap) and/or what to update at the end. */
  bitmap?: BdrvDirtyBitmap;
  bitmapMode?: BitmapSyncMode;
  /** Write clusters compressed (qcow2 targets). */
  compress?: boolean;
  onSourceError?: JobErrorPolicy;
  onTargetError?: JobErrorPolicy;
  /** Always, last: releases what the command opened (an implicit target). */
  release?(): Promise<void>;
  /**
   * The copy-before-write filter node's own bitmaps (the engine lists them on the node), newest first: the job
   * fills the list when it starts and empties it when it ends.
   */
  filterBitmaps?: BdrvDirtyBitmap[];
  /** Bytes the job read from the source and wrote to the target (benchmarks count them). */
  counters?: { read: number; written: number };
}

interface InFlight {
  start: number;
  end: number;
  done: Promise<void>;
}

export function backupDriver(o: BackupOptions): JobDriver {
  const cs = o.clusterSize;
  const size = o.source.totalBytes;
  let copy: HBitmap | undefined;
  let successor: BdrvDirtyBitmap | undefined;
  /** The filter's record of the clusters its hook copied (QEMU's copy-before-write done_bitmap). */
  let done: BdrvDirtyBitmap | undefined;
  /** Bitmaps this job made, freed in clean. */
  const owned: BdrvDirtyBitmap[] = [];
  const stops: (() => void)[] = [];
  const inFlight = new Set<InFlight>();
  /** A failed copy-before-write fails the job (QEMU's on-cbw-error=break-snapshot), not the guest write. */
  let cbwError: BlockError | undefined;
  let success = false;
  /** The copy-before-write hooks' turns (they share one buffer). */
  let cbwQueue: Promise<void> = Promise.resolve();
  let cbwBuf: Uint8Array | undefined;

  /** Copies [offset, offset + bytes) (cluster-aligned, already taken out of `copy`) from source to target. */
  const copyRange = async (offset: number, bytes: number, buf: Uint8Array): Promise<void> => {
    const chunk = buf.subarray(0, bytes);
    if (!o.compress) {
      // A range the source's chain reads as zeros is written as zeros without reading it (QEMU's block-copy does the same).
      const st = await blockStatusAbove(o.source, null, true, offset, bytes).catch(() => null);
      if (st && st.pnum >= bytes && st.status & BDRV_BLOCK_ZERO) {
        try {
          await bdrvPwriteZeroes(o.target, offset, bytes);
        } catch (e) {
          throw Object.assign(e instanceof BlockError ? e : new BlockError('EIO', String(e)), { operation: 'write' });
        }
        if (o.counters) o.counters.written += bytes;
        return;
      }
    }
    await bdrvPread(o.source, offset, bytes, chunk).catch((e: unknown) => {
      throw Object.assign(e instanceof BlockError ? e : new BlockError('EIO', String(e)), { operation: 'read' });
    });
    if (o.counters) o.counters.read += bytes;
    try {
      if (o.compress) {
        // Compressed clusters are written one by one, whole; a zero cluster too (it compresses to nearly nothing).
        for (let p = 0; p < bytes; p += cs) {
          const n = Math.min(cs, bytes - p);
          await bdrvPwrite(o.target, offset + p, n, chunk.subarray(p, p + n), { compressed: n === cs });
        }
      } else if (bufferIsZero(chunk)) await bdrvPwriteZeroes(o.target, offset, bytes);
      else await bdrvPwrite(o.target, offset, bytes, chunk);
    } catch (e) {
      throw Object.assign(e instanceof BlockError ? e : new BlockError('EIO', String(e)), { operation: 'write' });
    }
    if (o.counters) o.counters.written += bytes;
  };

  /** Waits for copies in flight that overlap [start, end). */
  const waitInFlight = async (start: number, end: number): Promise<void> => {
    for (;;) {
      const c = [...inFlight].find((r) => r.start < end && start < r.end);
      if (!c) return;
      await c.done;
    }
  };

  /** Takes the dirty clusters of [start, end) out of `copy` and copies them, visible to the hook while in flight. */
  const copyDirty = async (start: number, end: number, buf: Uint8Array): Promise<number> => {
    let moved = 0;
    for (let off = start; off < end; ) {
      const area = copy!.nextDirtyArea(off, end, buf.length);
      if (!area) break;
      copy!.reset(area.offset, area.bytes);
      let release!: () => void;
      const me: InFlight = { start: area.offset, end: area.offset + area.bytes, done: new Promise<void>((r) => (release = r)) };
      inFlight.add(me);
      try {
        await copyRange(area.offset, area.bytes, buf);
      } catch (e) {
        // Not copied: the clusters stay to copy (bitmap-mode=always keeps them).
        copy!.set(area.offset, area.bytes);
        throw e;
      } finally {
        inFlight.delete(me);
        release();
      }
      moved += area.bytes;
      off = area.offset + area.bytes;
    }
    return moved;
  };

  /** Fills the copy bitmap as `sync` asks (QEMU's backup_init_bcs_bitmap). */
  const initCopyBitmap = async (): Promise<void> => {
    const bm = copy!;
    if (o.sync === 'bitmap') {
      for (const a of o.bitmap!.dirtyExtents()) bm.set(a.offset, a.bytes);
      return;
    }
    bm.set(0, size);
    if (o.sync !== 'top') return;
    const base = o.source.cowNode();
    for (let off = 0; off < size; ) {
      const { allocated, pnum } = await isAllocatedAbove(o.source, base, false, off, Math.min(size - off, 1 << 30));
      const n = Math.max(1, pnum);
      if (!allocated) {
        // Only whole clusters leave: a cluster partly allocated is copied.
        const s = Math.ceil(off / cs) * cs;
        const e = Math.floor((off + n) / cs) * cs;
        if (e > s) bm.reset(s, Math.min(e, size) - s);
      }
      off += n;
    }
  };

  return {
    async run(job) {
      // Made before the first await, so the command's reply finds them (QEMU makes them with the job), in QEMU's
      // order: the sync bitmap's successor, block-copy's copy bitmap, the filter's done and access bitmaps.
      const made = (on: BlockNode | null, granularity: number, disabled: boolean): BdrvDirtyBitmap => {
        const bm = new BdrvDirtyBitmap('', size, granularity);
        bm.disabled = disabled;
        owned.push(bm);
        if (on) stops.push(showJobDirtyBitmap(on, bm));
        return bm;
      };
      if (o.bitmap) {
        // QEMU's bdrv_dirty_bitmap_create_successor: it records in the bitmap's place, if the bitmap did.
        const s = (successor = made(o.source, o.bitmap.granularity, o.bitmap.disabled));
        o.bitmap.busy = true;
        o.bitmap.successor = s;
        stops.push(
          addWriteObserver(o.source, {
            markDirty(offset, bytes) {
              const end = Math.min(offset + bytes, s.size);
              if (!s.disabled && end > offset) s.bitmap.set(offset, end - offset);
            },
          }),
        );
      }
      // The job sets and clears it itself: it records no writes.
      copy = made(o.source, cs, true).bitmap;
      done = made(null, cs, true);
      const access = made(null, cs, true);
      access.bitmap.set(0, size);
      o.filterBitmaps?.splice(0, Infinity, access, done);
      // The command may hold the job in a drained section for its first moment (QEMU's backup start).
      await Promise.resolve();
      await job.pausePoint();
      if (o.target.totalBytes < size) throw new BlockError('EINVAL', `Source and target image have different sizes`);
      await initCopyBitmap();
      job.total = copy.count();
      // Copy-before-write: from now on, the old data of a cluster goes to the target before a guest write changes it.
      const buf0 = allocBuffer(MAX_RUN);
      cbwBuf = buf0;
      stops.push(
        addBeforeWriteHook(o.source, (offset, bytes) => {
          const start = Math.floor(offset / cs) * cs;
          const end = Math.min(size, Math.ceil((offset + bytes) / cs) * cs);
          // Hooks of concurrent guest writes share one buffer, so they take turns.
          const turn = cbwQueue.then(async () => {
            if (cbwError || end <= start) return;
            await waitInFlight(start, end);
            try {
              const moved = await copyDirty(start, end, buf0);
              job.current += moved;
              // The whole aligned range is now as it was at the start on the target, copied now or before.
              done!.bitmap.set(start, end - start);
            } catch (e) {
              cbwError = e instanceof BlockError ? e : new BlockError('EIO', String(e));
            }
          });
          cbwQueue = turn;
          return turn;
        }),
      );
      if (o.sync === 'none') {
        // Fleecing: the guest's writes copy; the job waits for its cancel.
        while (!job.isCancelled && !cbwError) await job.sleep(100_000_000);
      } else {
        const runLen = Math.min(MAX_RUN, Math.max(cs, Math.min(size, MAX_RUN)));
        const bufs = Array.from({ length: WORKERS }, () => allocBuffer(runLen));
        const buf = bufs[0]!;
        try {
          for (let off = 0; off < size && !cbwError; ) {
            await job.rateLimitSleep();
            // Unthrottled, several runs are copied at once (QEMU's block-copy workers); throttled, one per slice.
            const areas = [];
            for (let from = off; areas.length < (job.speed ? 1 : WORKERS); ) {
              const a = copy.nextDirtyArea(from, size, runLen);
              if (!a) break;
              areas.push(a);
              from = a.offset + a.bytes;
            }
            if (areas.length === 0) break;
            const results = await Promise.allSettled(
              areas.map(async (area, i) => {
                await waitInFlight(area.offset, area.offset + area.bytes);
                return copyDirty(area.offset, area.offset + area.bytes, bufs[i]!);
              }),
            );
            let moved = 0;
            let failure: unknown;
            for (const r of results) {
              if (r.status === 'fulfilled') moved += r.value;
              else failure ??= r.reason;
            }
            job.progress(moved);
            if (failure !== undefined) {
              const op = (failure as { operation?: 'read' | 'write' }).operation ?? 'read';
              const action = job.errorAction((op === 'read' ? o.onSourceError : o.onTargetError) ?? 'report', op, failure);
              if (action === 'report') throw failure;
              // ignore / stop: the clusters stay in the bitmap and are tried again (after job-resume for stop).
              continue;
            }
            off = areas[areas.length - 1]!.offset + areas[areas.length - 1]!.bytes;
          }
          // Clusters a failed pass left are tried from the start again.
          while (!cbwError && !job.isCancelled && copy.count() > 0) {
            await job.rateLimitSleep();
            const area = copy.nextDirtyArea(0, size, buf.length);
            if (!area) break;
            try {
              job.progress(await copyDirty(area.offset, area.offset + area.bytes, buf));
            } catch (e) {
              const op = (e as { operation?: 'read' | 'write' }).operation ?? 'read';
              if (job.errorAction((op === 'read' ? o.onSourceError : o.onTargetError) ?? 'report', op, e) === 'report') throw e;
            }
          }
        } finally {
          for (const b of bufs) freeBuffer(b);
        }
      }
      if (cbwError) throw cbwError;
      await bdrvFlush(o.target);
    },
    commit() {
      success = true;
    },
    async clean(job) {
      // No more copy-before-write: take the hooks off, then wait for the ones running.
      for (const s of stops.splice(0)) s();
      await cbwQueue;
      if (cbwBuf) freeBuffer(cbwBuf);
      cbwBuf = undefined;
      if (o.bitmap && successor) {
        const bm = o.bitmap.bitmap;
        const mode = o.bitmapMode ?? 'on-success';
        const ok = success && !job.error;
        // Abdicate: the bitmap becomes its successor (the writes made during the job); reclaim: it keeps its bits
        // and gains the successor's. Its enabled state never changed (a busy bitmap cannot be enabled or disabled).
        if ((ok || mode === 'always') && mode !== 'never') bm.resetAll();
        bm.merge(successor.bitmap);
        if (!ok && mode === 'always' && copy) {
          // What was not copied stays dirty.
          for (const a of copy.dirtyAreas(0, size)) bm.set(a.offset, a.bytes);
        }
        o.bitmap.successor = undefined;
        o.bitmap.busy = false;
      }
      o.filterBitmaps?.splice(0);
      for (const b of owned.splice(0)) b.bitmap.free();
      await o.release?.();
    },
  };
}

export const backupJobType = registerJobType<BackupOptions>({
  type: 'backup',
  blockJob: true,
  readyPhase: false,
  driver: backupDriver,
});
