/**
 * Active commit (QEMU's commit of the active layer, which QEMU runs as a
 * mirror job): what the top and the layers down to `base` hold is copied
 * into base, then the job is 'ready' and keeps copying every write the top
 * takes, until job-complete: then the device is pivoted onto base
 * (`pivot`) and the committed layers leave. A cancel without force while
 * ready ends the job without the pivot, base holding a consistent copy.
 *
 * Writes to the top are tracked from the job's start by a write observer
 * (src/block/dirty-bitmap.ts) feeding a private, unlisted bitmap; a tracked range is
 * cleared before it is read, so a write landing during the copy marks it
 * again and is copied in a later round.
 */
import { allocBuffer, freeBuffer } from '../block/buffers.js';
import { addWriteObserver, BdrvDirtyBitmap, showJobDirtyBitmap } from '../block/dirty-bitmap.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { isAllocatedAbove } from '../block/status.js';
import { JOB_CHUNK } from './copy-range.js';
import { MIRROR_DEFAULT_BUF_SIZE } from './mirror.js';
import type { Job, JobDriver } from './job.js';
import { registerJobType } from './registry.js';

/** Tracking granularity (QEMU's mirror default for 64 KiB clusters). */
const TRACK_GRANULARITY = 65536;
/** How long a ready job with nothing to copy waits before it looks again (QEMU's mirror: SLICE_TIME). */
const IDLE_NS = 100_000_000;

export interface ActiveCommitOptions {
  /** The active layer (a device's root). */
  top: BlockNode;
  /** The base image as it sits in top's chain. */
  base: BlockNode;
  /** Makes base writable; `release` runs when the job ends without a pivot. */
  acquireBase?: () => Promise<{ node: BlockNode; release(): Promise<void> }>;
  /** After job-complete: switches the users of top onto base (given as the node base was written through). */
  pivot(base: BlockNode): Promise<void>;
}

export function activeCommitDriver(o: ActiveCommitOptions): JobDriver {
  let held: { node: BlockNode; release(): Promise<void> } | undefined;
  let tracker: BdrvDirtyBitmap | undefined;
  let stopTracking: (() => void) | undefined;
  let unshow: (() => void) | undefined;
  let completeRequested = false;
  let pivoted = false;

  /** Copies what top's chain holds above base in [offset, offset + bytes) into base (unallocated pieces stay). */
  const copyRun = async (job: Job, offset: number, bytes: number, buf: Uint8Array): Promise<void> => {
    for (let off = offset; off < offset + bytes; ) {
      const want = Math.min(JOB_CHUNK, offset + bytes - off);
      const { allocated, pnum } = await isAllocatedAbove(o.top, held!.node, false, off, want);
      const n = Math.max(1, Math.min(pnum, want));
      if (allocated) {
        const chunk = buf.subarray(0, n);
        try {
          await bdrvPread(o.top, off, n, chunk);
        } catch (e) {
          throw job.ioError('read', e);
        }
        try {
          await bdrvPwrite(held!.node, off, n, chunk);
        } catch (e) {
          throw job.ioError('write', e);
        }
      }
      off += n;
    }
  };

  /**
   * Copies the tracked ranges until none is left, as QEMU's mirror iterates:
   * each round takes the next run of consecutive dirty chunks (up to the
   * mirror's buf-size, 16 MiB), copies it, counts it as progress, and sleeps
   * what the speed limit asks before the next round — so at speed 1 the job
   * has copied its first run and stays running, as QEMU's does. The job's
   * total is what was copied plus what is still dirty (QEMU's len).
   */
  const drain = async (job: Job): Promise<void> => {
    const buf = allocBuffer(JOB_CHUNK);
    try {
      for (let from = 0; ; ) {
        await job.rateLimitSleep();
        const area = tracker!.nextDirtyArea(from, tracker!.size, MIRROR_DEFAULT_BUF_SIZE) ?? tracker!.nextDirtyArea(0, tracker!.size, MIRROR_DEFAULT_BUF_SIZE);
        if (!area) return;
        tracker!.bitmap.reset(area.offset, area.bytes);
        await copyRun(job, area.offset, area.bytes, buf);
        job.progress(area.bytes);
        job.total = job.current + tracker!.count();
        from = area.offset + area.bytes;
      }
    } finally {
      freeBuffer(buf);
    }
  };

  return {
    async run(job) {
      held = o.acquireBase ? await o.acquireBase() : { node: o.base, release: () => bdrvFlush(o.base) };
      const size = o.top.totalBytes;
      if (held.node.totalBytes < size) await bdrvTruncate(held.node, size, false, 'off');
      tracker = new BdrvDirtyBitmap('', size, TRACK_GRANULARITY);
      // Listed among top's dirty bitmaps, unnamed, as QEMU's mirror lists its own.
      unshow = showJobDirtyBitmap(o.top, tracker);
      const t = tracker.bitmap;
      stopTracking = addWriteObserver(o.top, {
        markDirty(offset, bytes) {
          const end = Math.min(offset + bytes, t.size);
          if (end > offset) t.set(offset, end - offset);
        },
      });
      // The bulk copy: what top's chain holds above base, marked dirty (QEMU's mirror_dirty_init), then drained.
      // Base as the chain has it now: acquireBase may have opened it again as a fresh node.
      for (let off = 0; off < size; ) {
        const { allocated, pnum } = await isAllocatedAbove(o.top, held!.node, false, off, Math.min(size - off, 1 << 30));
        const n = Math.max(1, pnum);
        if (allocated) t.set(off, n);
        off += n;
      }
      job.total = tracker.count();
      await drain(job);
      await bdrvFlush(held.node);
      job.transitionToReady();
      while (!completeRequested && !job.cancelPending) {
        if (tracker.count() > 0) await drain(job);
        else await job.sleep(IDLE_NS);
        if (job.isCancelled) return;
      }
      // Complete (or a soft cancel): copy what is left, so base is the top's guest view.
      await drain(job);
      await bdrvFlush(held.node);
    },
    async prepare(job) {
      if (job.cancelPending) return;
      await o.pivot(held!.node);
      pivoted = true;
    },
    async clean() {
      stopTracking?.();
      unshow?.();
      tracker?.bitmap.free();
      if (held && !pivoted) await held.release();
    },
    complete() {
      completeRequested = true;
    },
  };
}

/** QEMU reports an active commit as a job of type "commit" with a ready phase. */
export const activeCommitJobType = registerJobType<ActiveCommitOptions>({
  type: 'active-commit',
  qapiType: 'commit',
  blockJob: true,
  readyPhase: true,
  driver: activeCommitDriver,
});
