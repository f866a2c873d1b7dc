/**
 * qemu-img commit as a function: the chain of `filename` is opened, the base
 * (the immediate backing file, or the image named by `base`, found in the
 * chain as QEMU's bdrv_find_backing_image does) is reopened read-write in
 * place (its protocol node first; read-only again afterwards), and the commit
 * job copies what lies above it. Reopening rather than opening the base a
 * second time matters where a second handle is refused (OPFS locks). With `base` given, or with
 * `drop`, the top image keeps its data (qemu-img: "-b implies -d").
 */
import { BlockError, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
import { bdrvFlush } from '../block/io.js';
import { reopenReadOnly } from '../block/reopen.js';
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
  let restore: (() => Promise<void>) | undefined;
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
    await job.start((j) => runCommit(j, top, { base, baseWritable: base, keepTop: req.drop === true || req.base !== undefined, zeroUnmap: true }));
    req.onProgress?.(job.total, job.total);
  } finally {
    try {
      await restore?.();
    } finally {
      await closeNode(top);
    }
  }
}

/**
 * Makes `base` and the children it writes through (file, data file)
 * read-write, children first; the returned function flushes and puts every
 * one back as it was, parents first. A refused step undoes the ones before it.
 */
async function reopenWritableInPlace(base: BlockNode): Promise<() => Promise<void>> {
  const layers = [base.file?.node, base.dataFile?.node, base].filter((n): n is BlockNode => n !== undefined && n.readOnly);
  const done: BlockNode[] = [];
  const putBack = async () => {
    for (const n of [...done].reverse()) await reopenReadOnly(n, true);
  };
  try {
    for (const n of layers) {
      await reopenReadOnly(n, false);
      done.push(n);
    }
  } catch (e) {
    await putBack();
    throw e;
  }
  return async () => {
    try {
      await bdrvFlush(base);
    } finally {
      await putBack();
    }
  };
}
