/**
 * The mirror job (QEMU's block/mirror.c, drive-mirror / blockdev-mirror):
 * copies a source node to a target while the source keeps taking writes.
 *
 * A private dirty bitmap at the job's granularity drives everything. It
 * starts with what `sync` asks for — `full`: the whole disk (or only what
 * the source's chain holds, when the target is known to read as zeros),
 * `top`: what the top layer holds above its backing file, `none`: nothing —
 * and a write observer on the source marks every guest write from the
 * job's start. The job clears a run of dirty chunks, reads it from the
 * source and writes it to the target (an all-zero run as write-zeroes);
 * a guest write that lands meanwhile marks the run again and it is copied
 * in a later round. When the bitmap is first empty the job is 'ready'
 * (BLOCK_JOB_READY) and keeps copying what the guest writes; job-complete
 * drains the rest and pivots the source's users onto the target, a cancel
 * without force drains and ends without the pivot (the target is then a
 * consistent copy), a forced cancel just stops.
 *
 * I/O errors follow on-source-error / on-target-error: `report` fails the
 * job, `ignore` marks the run dirty again, `stop` (and `enospc` on ENOSPC)
 * pauses the job until job-resume, which retries the run.
 *
 * Every byte goes through src/block/io.ts, so the target's own bitmaps and
 * write statistics see the job's writes.
 */
import { allocBuffer, bufferIsZero, freeBuffer } from '../block/buffers.js';
import { addAfterWriteHook } from '../block/before-write.js';
import { addWriteObserver, BdrvDirtyBitmap } from '../block/dirty-bitmap.js';
import { BlockError } from '../block/errors.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { BDRV_BLOCK_ZERO, blockStatusAbove, isAllocatedAbove } from '../block/status.js';
import type { Job, JobDriver, JobErrorPolicy } from './job.js';
import { registerJobType } from './registry.js';

export type MirrorSyncMode = 'full' | 'top' | 'none';

/** QEMU's mirror default buf-size (16 MiB): what one throttled iteration copies at most. */
export const MIRROR_DEFAULT_BUF_SIZE = 16 * 1024 * 1024;
/** The largest piece one copy moves (a buffer's size). */
const MAX_RUN = 4 * 1024 * 1024;
/** How long a ready job with nothing to copy waits before it looks again (QEMU's SLICE_TIME). */
const IDLE_NS = 100_000_000;

export interface MirrorOptions {
  source: BlockNode;
  target: BlockNode;
  sync: MirrorSyncMode;
  /** Bytes per bit of the job's bitmap (power of two, 512 B .. 64 MiB). */
  granularity: number;
  /** Bytes in flight at most (QEMU's buf-size); one run is at most this. */
  bufSize?: number;
  /**
   * sync=full: the target does not read as zeros yet, so every chunk is
   * copied, zeros included (QEMU's zero_target). Otherwise only what the
   * source's chain holds.
   */
  zeroTarget?: boolean;
  onSourceError?: JobErrorPolicy;
  onTargetError?: JobErrorPolicy;
  /**
   * QEMU's copy-mode: `background` (default) copies guest writes in a later
   * round; `write-blocking` copies each guest write to the target before the
   * write completes (an after-write hook), so the target never falls behind.
   */
  copyMode?: 'background' | 'write-blocking';
  /** After job-complete: switch the source's users onto the target. */
  pivot(target: BlockNode): Promise<void>;
  /** Always, last: releases what the command opened (an implicit target that was not pivoted to). */
  release?(pivoted: boolean): Promise<void>;
}

/** The chunk-aligned cover of [offset, offset + bytes). */
function alignOut(offset: number, bytes: number, g: number): { offset: number; bytes: number } {
  const start = offset - (offset % g);
  return { offset: start, bytes: Math.ceil((offset + bytes) / g) * g - start };
}

export function mirrorDriver(o: MirrorOptions): JobDriver {
  let dirty: BdrvDirtyBitmap | undefined;
  let stopTracking: (() => void) | undefined;
  let completeRequested = false;
  let pivoted = false;
  let stopActive: (() => void) | undefined;
  /** Copies in flight (background runs and write-blocking copies): two copies of one range never overlap. */
  const inFlight = new Set<{ start: number; end: number; done: Promise<void> }>();
  const waitInFlight = async (start: number, end: number): Promise<void> => {
    for (;;) {
      const c = [...inFlight].find((r) => r.start < end && start < r.end);
      if (!c) return;
      await c.done;
    }
  };
  /** Runs `fn` as a copy of [start, end), after the copies it overlaps. */
  const exclusive = async <T>(start: number, end: number, fn: () => Promise<T>): Promise<T> => {
    await waitInFlight(start, end);
    let release!: () => void;
    const me = { start, end, done: new Promise<void>((r) => (release = r)) };
    inFlight.add(me);
    try {
      return await fn();
    } finally {
      inFlight.delete(me);
      release();
    }
  };
  const run = Math.max(o.granularity, Math.min(o.bufSize ?? MIRROR_DEFAULT_BUF_SIZE, MAX_RUN));

  /** Marks what `sync` asks to copy before the first round (QEMU's mirror_dirty_init). */
  const initialDirty = async (size: number): Promise<void> => {
    const bm = dirty!.bitmap;
    if (o.sync === 'none') return;
    if (o.sync === 'full' && o.zeroTarget) {
      bm.set(0, size);
      return;
    }
    const base = o.sync === 'top' ? o.source.skipFilters().cowNode() : null;
    for (let off = 0; off < size; ) {
      const { allocated, pnum } = await isAllocatedAbove(o.source, base, false, off, Math.min(size - off, 1 << 30));
      const n = Math.max(1, pnum);
      if (allocated) bm.set(off, n);
      off += n;
    }
  };

  /** Copies one run; returns false when the error policy stopped or ignored it (the run is dirty again). */
  const copyRun = async (job: Job, offset: number, bytes: number, buf: Uint8Array): Promise<boolean> => {
    const chunk = buf.subarray(0, bytes);
    const retry = (): false => {
      dirty!.bitmap.set(offset, bytes);
      return false;
    };
    try {
      // What the source's chain reads as zeros is written as zeros without reading it (QEMU's MIRROR_METHOD_ZERO).
      const st = await blockStatusAbove(o.source, o.sync === 'top' ? o.source.skipFilters().cowNode() : null, true, offset, bytes);
      if (st.pnum >= bytes && st.status & BDRV_BLOCK_ZERO) chunk.fill(0);
      else await bdrvPread(o.source, offset, bytes, chunk);
    } catch (e) {
      if (job.errorAction(o.onSourceError ?? 'report', 'read', e) === 'report') throw e;
      return retry();
    }
    try {
      if (bufferIsZero(chunk)) await bdrvPwriteZeroes(o.target, offset, bytes);
      else await bdrvPwrite(o.target, offset, bytes, chunk);
    } catch (e) {
      if (job.errorAction(o.onTargetError ?? 'report', 'write', e) === 'report') throw e;
      return retry();
    }
    return true;
  };

  /**
   * One iteration under a speed limit, as QEMU's mirror_iteration: the run of
   * consecutive dirty chunks from the next dirty one (wrapping to the start),
   * up to buf-size (16 MiB by default), copied piece by piece (each at most a
   * buffer's worth, counted as progress when done) before the one sleep the
   * speed limit asks. So at speed 1 the first query-block-jobs shows the whole
   * first run copied, as QEMU's does. Returns where the next iteration looks,
   * or -1 when nothing is dirty or a piece failed under an error policy (the
   * rest of the run is marked dirty again).
   */
  const throttledIteration = async (job: Job, from: number, buf: Uint8Array): Promise<number> => {
    const span = Math.max(o.granularity, o.bufSize ?? MIRROR_DEFAULT_BUF_SIZE);
    let area = dirty!.nextDirtyArea(from, dirty!.size, span);
    if (!area && from > 0) area = dirty!.nextDirtyArea(0, dirty!.size, span);
    if (!area) return -1;
    const a = alignOut(area.offset, area.bytes, o.granularity);
    const end = Math.min(a.offset + a.bytes, dirty!.size);
    // Cleared before the reads: a guest write landing meanwhile marks its chunks again.
    dirty!.bitmap.reset(a.offset, end - a.offset);
    for (let off = a.offset; off < end; ) {
      const bytes = Math.min(run, end - off);
      const ok = await exclusive(off, off + bytes, () => copyRun(job, off, bytes, buf));
      if (!ok) {
        if (off + bytes < end) dirty!.bitmap.set(off + bytes, end - off - bytes);
        job.total = job.current + dirty!.count();
        return -1;
      }
      job.progress(bytes);
      job.total = job.current + dirty!.count();
      off += bytes;
    }
    return end >= dirty!.size ? 0 : end;
  };

  /**
   * Copies dirty runs until the bitmap is empty (or the job is cancelled,
   * paused by an error, or an ignored error recurs). Unthrottled, up to
   * `bufs.length` runs are in flight at once (QEMU's buf-size bounds them).
   */
  const drain = async (job: Job, bufs: Uint8Array[]): Promise<void> => {
    let from = 0;
    for (;;) {
      await job.rateLimitSleep();
      if (job.speed) {
        const next = await throttledIteration(job, from, bufs[0]!);
        if (next < 0) return;
        from = next;
        continue;
      }
      const runs: { offset: number; bytes: number }[] = [];
      for (let wrapped = false; runs.length < bufs.length; ) {
        let area = dirty!.nextDirtyArea(from, dirty!.size, run);
        if (!area && from > 0 && !wrapped) {
          wrapped = true;
          from = 0;
          area = dirty!.nextDirtyArea(0, dirty!.size, run);
        }
        if (!area) break;
        const a = alignOut(area.offset, area.bytes, o.granularity);
        const bytes = Math.min(a.bytes, dirty!.size - a.offset);
        // Cleared before the read: a guest write landing meanwhile marks the run again.
        dirty!.bitmap.reset(a.offset, bytes);
        runs.push({ offset: a.offset, bytes });
        from = a.offset + bytes;
        if (from >= dirty!.size) break;
      }
      if (runs.length === 0) return;
      const oks = await Promise.all(runs.map((r, i) => exclusive(r.offset, r.offset + r.bytes, () => copyRun(job, r.offset, r.bytes, bufs[i]!))));
      let moved = 0;
      runs.forEach((r, i) => (moved += oks[i] ? r.bytes : 0));
      job.progress(moved);
      // QEMU's len: what was copied plus what is still dirty.
      job.total = job.current + dirty!.count();
      if (oks.includes(false)) return;
    }
  };

  return {
    async run(job) {
      const size = o.source.totalBytes;
      if (o.target.totalBytes !== size) {
        if (o.target.totalBytes > size) throw new BlockError('EINVAL', 'Source and target image have different sizes');
        await bdrvTruncate(o.target, size, false, 'off');
      }
      dirty = new BdrvDirtyBitmap('', size, o.granularity);
      const bm = dirty.bitmap;
      stopTracking = addWriteObserver(o.source, {
        markDirty(offset, bytes) {
          const end = Math.min(offset + bytes, bm.size);
          if (end > offset) bm.set(offset, end - offset);
          // A ready job idling for its next look starts copying at once; a sleep the speed limit asked for is not cut
          // short (QEMU's guest writes do not enter a throttled mirror: query-block-jobs shows the same offset).
          if (job.status === 'ready') job.kick();
        },
      });
      if (o.copyMode === 'write-blocking') {
        // Each guest write is copied before it completes: its chunks leave the bitmap, the target gets them now.
        stopActive = addAfterWriteHook(o.source, (offset, bytes) => {
          const a = alignOut(offset, bytes, o.granularity);
          const n = Math.min(a.bytes, size - a.offset);
          if (n <= 0 || job.status === 'concluded' || job.status === 'null') return Promise.resolve();
          return exclusive(a.offset, a.offset + n, async () => {
            bm.reset(a.offset, n);
            const buf = allocBuffer(n);
            try {
              // A failed copy never fails the guest's write: the chunks stay dirty and the background copy meets the error.
              // A failed copy never fails the guest's write: the chunks stay dirty and the background copy meets the error.
              if (!(await copyRun(job, a.offset, n, buf).catch(() => (bm.set(a.offset, n), false)))) return;
              // QEMU counts these copies in the job's progress (checked over QMP).
              job.current += n;
              job.total = job.current + dirty!.count();
            } finally {
              freeBuffer(buf);
            }
          });
        });
      }
      await initialDirty(size);
      job.total = dirty.count();
      const inFlight = Math.max(1, Math.min(4, Math.floor((o.bufSize ?? MIRROR_DEFAULT_BUF_SIZE) / run)));
      const buf = Array.from({ length: inFlight }, () => allocBuffer(run));
      try {
        while (dirty.count() > 0) {
          await drain(job, buf);
          if (job.isCancelled) return;
        }
        await bdrvFlush(o.target);
        job.transitionToReady();
        while (!completeRequested && !job.cancelPending) {
          if (dirty.count() > 0) await drain(job, buf);
          else await job.sleep(IDLE_NS);
          if (job.isCancelled) return;
        }
        // Complete, or a cancel without force: copy what is left, so the target is the source's guest view.
        while (dirty.count() > 0 && !job.isCancelled) await drain(job, buf);
        await bdrvFlush(o.target);
      } finally {
        for (const b of buf) freeBuffer(b);
      }
    },
    async prepare(job) {
      if (job.cancelPending) return;
      await o.pivot(o.target);
      pivoted = true;
    },
    async clean() {
      stopActive?.();
      await waitInFlight(0, Infinity);
      stopTracking?.();
      dirty?.bitmap.free();
      await o.release?.(pivoted);
    },
    complete() {
      completeRequested = true;
    },
  };
}

export const mirrorJobType = registerJobType<MirrorOptions>({
  type: 'mirror',
  blockJob: true,
  readyPhase: true,
  driver: mirrorDriver,
});
