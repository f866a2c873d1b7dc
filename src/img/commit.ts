/**
 * qemu-img commit as a function: the chain of `filename` is opened, the base
 * (the immediate backing file, or the image named by `base`, found in the
 * chain as QEMU's bdrv_find_backing_image does) is opened again read-write,
 * and the commit job copies what lies above it. With `base` given, or with
 * `drop`, the top image keeps its data (qemu-img: "-b implies -d").
 */
import { BlockError, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
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
}

/** QEMU's bdrv_find_backing_image: a chain member by the name an overlay stores for it, or by its resolved name. */
export function findBackingImage(storage: Storage, top: BlockNode, name: string): BlockNode | undefined {
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    const b = n.cowNode();
    if (!b) break;
    if (n.backingFile === name || b.filename === name || b.filename === storage.resolve(n.filename, name) || b.filename === storage.resolve(top.filename, name)) {
      return b;
    }
  }
  return undefined;
}

export async function commitImage(storage: Storage, req: CommitRequest): Promise<void> {
  const top = await openImage(storage, req.filename, { format: req.format, readOnly: false });
  let baseRw: BlockNode | undefined;
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
      baseRw = await openImage(storage, base.filename, { format: base.driver.name, readOnly: false, backing: false });
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new BlockError(isBlockError(e) ? e.code : 'EIO', `Could not reopen '${base.filename}' read-write: ${why}`, { cause: e });
    }
    const job = new Job('commit', 'commit', (j) => req.onProgress?.(j.current, j.total));
    job.total = top.totalBytes;
    await job.start((j) => runCommit(j, top, { base, baseWritable: baseRw!, keepTop: req.drop === true || req.base !== undefined, zeroUnmap: true }));
    req.onProgress?.(job.total, job.total);
  } finally {
    if (baseRw) await closeNode(baseRw);
    await closeNode(top);
  }
}
