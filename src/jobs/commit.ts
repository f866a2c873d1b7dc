/**
 * The commit job (QEMU's block/commit.c, as qemu-img commit runs it): data
 * allocated in the layers above `base` is copied into `base`, then the top
 * image is emptied (QEMU's bdrv_make_empty) unless the caller keeps it.
 * The caller makes `base` writable first (reopened in place).
 */
import { BlockError } from '../block/errors.js';
import { bdrvFlush, bdrvMakeEmpty, bdrvTruncate } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_ZERO, blockStatusAbove, isAllocatedAbove } from '../block/status.js';
import { copyAllocated } from './copy-range.js';
import type { Job, JobDriver } from './job.js';
import { registerJobType } from './registry.js';

export interface CommitOptions {
  /** The base image as it sits in top's chain (the copy stops there), already writable. */
  base: BlockNode;
  /** Keep the top image's data (qemu-img commit -d). */
  keepTop?: boolean;
  /**
   * Ranges the chain above base reports as zeros are written to base as
   * zeros that may unmap (qemu-img commit: QEMU runs it as an active commit,
   * whose mirror copies zero ranges that way), instead of as read data.
   */
  zeroUnmap?: boolean;
}

export async function runCommit(job: Job, top: BlockNode, o: CommitOptions): Promise<void> {
  if (o.base.readOnly) throw new BlockError('EPERM', `${o.base.filename}: the base image is read-only`);
  const size = top.totalBytes;
  // QEMU grows a smaller base to the top's size before copying.
  if (o.base.totalBytes < size) await bdrvTruncate(o.base, size, false, 'off');
  const allocatedIn = o.zeroUnmap
    ? async (off: number, n: number) => {
        const st = await blockStatusAbove(top, o.base, true, off, n);
        return { allocated: (st.status & BDRV_BLOCK_ALLOCATED) !== 0, pnum: st.pnum, zero: (st.status & BDRV_BLOCK_ZERO) !== 0 };
      }
    : (off: number, n: number) => isAllocatedAbove(top, o.base, false, off, n);
  await copyAllocated(job, size, allocatedIn, top, o.base);
  await bdrvFlush(o.base);
  // QEMU's bdrv_make_empty, through the request path so the top image's dirty bitmaps see it.
  // qemu-img commit ignores ENOTSUP there: a format that cannot be emptied (vmdk, vpc, vdi) keeps its data (020).
  if (!o.keepTop) {
    try {
      await bdrvMakeEmpty(top);
    } catch (e) {
      if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
    }
  }
}

export interface CommitJobOptions {
  /** The top of the range to commit (its data and the layers down to base's overlay). */
  top: BlockNode;
  /** The base image as it sits in top's chain. */
  base: BlockNode;
  /** Makes base writable for the copy (default: base must already be writable); `release` runs when the job ends. */
  acquireBase?: () => Promise<{ node: BlockNode; release(): Promise<void> }>;
  /** Keep the top image's data (default: as runCommit, top is emptied). */
  keepTop?: boolean;
  /** The graph change once the job is finalized, given the node base was written through. */
  prepare?: (base: BlockNode) => Promise<void>;
}

/** The commit job's driver: copies in `run`, changes the graph in `prepare`, releases base in `clean`. */
export function commitDriver(o: CommitJobOptions): JobDriver {
  let held: { node: BlockNode; release(): Promise<void> } | undefined;
  return {
    async run(job) {
      held = o.acquireBase ? await o.acquireBase() : { node: o.base, release: () => bdrvFlush(o.base) };
      await runCommit(job, o.top, { base: held.node, keepTop: o.keepTop });
    },
    async prepare() {
      await o.prepare?.(held!.node);
    },
    async clean() {
      await held?.release();
    },
  };
}

export const commitJobType = registerJobType<CommitJobOptions>({ type: 'commit', blockJob: true, readyPhase: false, driver: commitDriver });
