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
import { addWriteObserver, BdrvDirtyBitmap } from '../block/dirty-bitmap.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { isAllocatedAbove } from '../block/status.js';
import { copyAllocated, JOB_CHUNK } from './copy-range.js';
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
  let completeRequested = false;
  let pivoted = false;

  /** Copies every tracked range from top (its guest view) into base. */
  const drain = async (job: Job): Promise<void> => {
    const buf = allocBuffer(JOB_CHUNK);
    try {
      for (;;) {
        const area = tracker!.nextDirtyArea(0, tracker!.size, JOB_CHUNK);
        if (!area) return;
        tracker!.bitmap.reset(area.offset, area.bytes);
        job.total += area.bytes;
        const chunk = buf.subarray(0, area.bytes);
        try {
          await bdrvPread(o.top, area.offset, area.bytes, chunk);
        } catch (e) {
          throw job.ioError('read', e);
        }
        try {
          await bdrvPwrite(held!.node, area.offset, area.bytes, chunk);
        } catch (e) {
          throw job.ioError('write', e);
        }
        job.progress(area.bytes);
        await job.rateLimitSleep();
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
      const t = tracker.bitmap;
      stopTracking = addWriteObserver(o.top, {
        markDirty(offset, bytes) {
          const end = Math.min(offset + bytes, t.size);
          if (end > offset) t.set(offset, end - offset);
        },
      });
      // The bulk copy: what top's chain holds above base.
      await copyAllocated(job, size, (off, n) => isAllocatedAbove(o.top, o.base, false, off, n), o.top, held.node);
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
