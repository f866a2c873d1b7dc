/**
 * qemu-img commit as a function: the chain of `filename` is opened, the base
 * (the immediate backing file, or the image named by `base`, found in the
 * chain as QEMU's bdrv_find_backing_image does) is reopened read-write in
 * place (its protocol node first; read-only again afterwards), and the commit
 * job copies what lies above it. Reopening rather than opening the base a
 * second time matters where a second handle is refused (OPFS locks). With `base` given, or with
 * `drop`, the top image keeps its data (qemu-img: "-b implies -d").
 */
import { BlockError, describeCode, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { closeNode, hasProtocol, openImage, type Storage } from '../block/open.js';
import { bdrvFlush, bdrvMakeEmpty } from '../block/io.js';
import { bdrvReopen } from '../block/reopen.js';
import { Job } from '../jobs/job.js';
import { runCommit } from '../jobs/commit.js';
import type { ProgressFn } from './convert.js';

export interface CommitRequest {
  filename: string;
  format?: string;
  /** -b: the backing image to commit into. */
  base?: string;
  /** -d: do not empty the top image. */
  drop?: boolean;
  onProgress?: ProgressFn;
  /** The top image already opened (an options tree: --image-opts, json:); commitImage closes it. */
  top?: BlockNode;
}

/**
 * QEMU's bdrv_find_backing_image: the chain member whose overlay's backing
 * file is `name`. A plain path is taken relative to each overlay's directory
 * (absolute stays) and compared with the overlay's resolved backing file, both
 * made absolute where the storage can; names with a protocol compare as given.
 */
export function findBackingImage(storage: Storage, top: BlockNode, name: string): BlockNode | undefined {
  const canonical = (f: string): string => storage.absolute?.(f) ?? f;
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    const b = n.cowNode();
    if (!b) break;
    if (hasProtocol(name) || (n.backingFile !== null && hasProtocol(n.backingFile))) {
      if (n.backingFile === name || b.filename === name) return b;
    } else if (canonical(storage.resolve(n.filename, name)) === canonical(b.filename)) {
      return b;
    }
  }
  return undefined;
}

export async function commitImage(storage: Storage, req: CommitRequest): Promise<void> {
  const top = req.top ?? (await openImage(storage, req.filename, { format: req.format, readOnly: false }));
  let restore: (() => Promise<void>) | undefined;
  let failed = false;
  try {
    const below = top.cowNode();
    if (!below) throw new BlockError('EINVAL', 'Image does not have a backing file');
    let base = below;
    if (req.base !== undefined) {
      const found = findBackingImage(storage, top, req.base);
      if (!found) throw new BlockError('ENOENT', `Did not find '${req.base}' in the backing chain of '${req.filename}'`);
      base = found;
    }
    try {
      restore = await reopenWritableInPlace(base);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new BlockError(isBlockError(e) ? e.code : 'EIO', `Could not reopen '${base.filename}' read-write: ${why}`, { cause: e });
    }
    const job = new Job('commit', 'commit', (j) => req.onProgress?.(j.current, j.total));
    job.total = top.totalBytes;
    try {
      await job.start((j) => runCommit(j, top, { base, keepTop: true, zeroUnmap: true }));
    } catch (e) {
      // qemu-img reports the job's errno alone (run_block_job's "Block job failed").
      if (!isBlockError(e)) throw e;
      throw new BlockError(e.code, `Block job failed: ${describeCode(e.code)}`, { cause: e });
    }
    req.onProgress?.(job.total, job.total);
    // As qemu-img, the top is emptied after the job, its failure reported as bdrv_make_empty words it (098);
    // a format that cannot be emptied (vmdk, vpc, vdi) keeps its data (020).
    if (req.drop !== true && req.base === undefined) {
      try {
        await bdrvMakeEmpty(top, req.filename);
      } catch (e) {
        if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
      }
    }
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    try {
      await restore?.();
    } finally {
      // After a failure the image may refuse its close-time writes (an emptying that failed half-way): the first error is the one reported.
      await closeNode(top).catch((e: unknown) => {
        if (!failed) throw e;
      });
    }
  }
}

/**
 * Makes `base` and the nodes it writes through (file, filters below it, data
 * file) read-write, children first (src/block/reopen.ts); the returned
 * function flushes and puts them back read-only. A refused reopen changes nothing.
 */
async function reopenWritableInPlace(base: BlockNode): Promise<() => Promise<void>> {
  if (!base.readOnly) return async () => {};
  await bdrvReopen(base, { 'read-only': 'off' });
  return async () => {
    try {
      await bdrvFlush(base);
    } finally {
      await bdrvReopen(base, { 'read-only': 'on' });
    }
  };
}
