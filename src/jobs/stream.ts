/**
 * The stream job (QEMU's block/stream.c): data the top reads from the layers
 * between it and `base` (all of the chain without a base) is copied into the
 * top (`run`), then — when the job is finalized — the top is rebased onto
 * `base` (`prepare`): its header names base (or no backing file) and the
 * intermediate nodes leave the graph.
 */
import { BlockError } from '../block/errors.js';
import { bdrvFlush } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { closeNode } from '../block/open.js';
import { isAllocated, isAllocatedAbove } from '../block/status.js';
import { isBelow } from '../block/copy-on-read.js';
import { copyAllocated } from './copy-range.js';
import type { Job, JobDriver } from './job.js';
import { registerJobType } from './registry.js';

export interface StreamOptions {
  /** Stop above this node of top's chain (it stays the backing); null streams everything. */
  base: BlockNode | null;
  /** Backing file name to write into top (default: the name top's chain used for base). */
  backingFile?: string;
  /** Close the intermediate nodes once they left the graph (default true). */
  closeIntermediates?: boolean;
  /** Called with the first dropped intermediate node once it left the graph (the engine closes what nobody else uses). */
  dropped?: (below: BlockNode) => Promise<void>;
}

/** The name the overlay of `base` in top's chain stores for it. */
export function backingNameOf(top: BlockNode, base: BlockNode): { name: string; format: string } | undefined {
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    if (n.cowNode() === base) return { name: n.backingFile ?? base.filename, format: n.backingFormat ?? base.driver.name };
  }
  return undefined;
}

/** The stream job's driver: checks the chain at once, copies in `run`, rebases in `prepare`. */
export function streamDriver(top: BlockNode, o: StreamOptions): JobDriver {
  if (top.readOnly) throw new BlockError('EPERM', `${top.filename}: the image is read-only`);
  const below = top.cowNode();
  const base = o.base;
  if (base && !isBelow(top, base)) {
    throw new BlockError('EINVAL', `${base.filename}: not in the backing chain of ${top.filename}`);
  }
  const ref = base ? backingNameOf(top, base)! : undefined;
  if (!top.driver.changeBackingFile) throw new BlockError('ENOTSUP', `${top.filename}: the ${top.driver.name} format has no backing file to change`);
  const changeBackingFile = top.driver.changeBackingFile;
  return {
    async run(job: Job) {
      if (below && below !== base) {
        await copyAllocated(
          job,
          top.totalBytes,
          async (off, n) => {
            const own = await isAllocated(top, off, n);
            if (own.allocated) return { allocated: false, pnum: own.pnum };
            return isAllocatedAbove(below, base, false, off, Math.max(1, own.pnum));
          },
          top,
          top,
          { zeroDetect: true, copyOnRead: true },
        );
        await bdrvFlush(top);
      } else {
        job.total = top.totalBytes;
        job.current = top.totalBytes;
      }
    },
    async prepare() {
      // Data first, then the header: a crash in between leaves a valid (longer) chain.
      await changeBackingFile(top, base ? (o.backingFile ?? ref!.name) : null, base ? ref!.format : null);
      if (below && below !== base) {
        top.detach('backing');
        if (base) top.attach(base, 'backing');
        top.fullBackingFilename = base ? base.filename : null;
        // Base keeps top's new edge, so closing the old chain stops above it.
        if (o.dropped) await o.dropped(below);
        else if (o.closeIntermediates !== false && below.parents.length === 0) await closeNode(below);
      }
    },
  };
}

/** Streams and rebases in one go (for library callers that hold their own Job). */
export async function runStream(job: Job, top: BlockNode, o: StreamOptions): Promise<void> {
  const d = streamDriver(top, o);
  await d.run(job);
  await job.step();
  await d.prepare!(job);
}

export const streamJobType = registerJobType<{ top: BlockNode } & StreamOptions>({
  type: 'stream',
  blockJob: true,
  readyPhase: false,
  driver: ({ top, ...o }) => streamDriver(top, o),
});
