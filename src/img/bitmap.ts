/**
 * qemu-img bitmap as a function: a sequence of actions on one bitmap of one
 * node, each the block-dirty-bitmap-* operation QEMU's img_bitmap runs
 * (added bitmaps are persistent). The caller opens the node read/write and
 * closes it afterwards, which stores the bitmaps.
 */
import { BlockError, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import {
  addDirtyBitmap,
  clearDirtyBitmap,
  disableDirtyBitmap,
  enableDirtyBitmap,
  listDirtyBitmaps,
  mergeDirtyBitmaps,
  removeDirtyBitmap,
} from '../block/dirty-bitmap.js';

export type BitmapAction =
  | { op: 'add'; granularity?: number }
  | { op: 'remove' | 'clear' | 'enable' | 'disable' }
  /** Merge bitmap `source` of `sourceNode` (default: the same node) into the bitmap. */
  | { op: 'merge'; source: string; sourceNode?: BlockNode };

/** Runs `actions` in order; the first failure stops them with qemu-img's "Operation … failed" message. */
export async function imgBitmap(bs: BlockNode, name: string, actions: readonly BitmapAction[]): Promise<void> {
  for (const a of actions) {
    try {
      switch (a.op) {
        case 'add':
          addDirtyBitmap(bs, name, { granularity: a.granularity, persistent: true });
          break;
        case 'remove':
          await removeDirtyBitmap(bs, name);
          break;
        case 'clear':
          clearDirtyBitmap(bs, name);
          break;
        case 'enable':
          enableDirtyBitmap(bs, name);
          break;
        case 'disable':
          disableDirtyBitmap(bs, name);
          break;
        case 'merge':
          mergeDirtyBitmaps(bs, name, [a.sourceNode ? { node: a.sourceNode, name: a.source } : a.source]);
          break;
      }
    } catch (e) {
      if (!isBlockError(e)) throw e;
      throw new BlockError(e.code, `Operation ${a.op} on bitmap ${name} failed: ${e.message}`, { cause: e });
    }
  }
}

/**
 * qemu-img convert --bitmaps, before the copy: the single source must hold
 * persistent bitmaps, and without `skipBroken` none may be inconsistent.
 */
export function checkConvertBitmaps(sources: readonly BlockNode[], skipBroken: boolean): void {
  if (sources.length !== 1) throw new BlockError('EINVAL', 'Copying bitmaps only possible with single source');
  const src = sources[0]!;
  if (!src.driver.canStoreNewDirtyBitmap) throw new BlockError('ENOTSUP', 'Source lacks bitmap support');
  if (skipBroken) return;
  const bad = listDirtyBitmaps(src).find((b) => b.persistent && b.inconsistent);
  if (bad) {
    throw new BlockError('EINVAL', `Cannot copy inconsistent bitmap '${bad.name}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`);
  }
}

/** qemu-img convert --bitmaps: the target's format must store bitmaps (checked once it exists, before the copy). */
export function checkBitmapTarget(dst: BlockNode): void {
  if (!dst.driver.canStoreNewDirtyBitmap) throw new BlockError('ENOTSUP', `Format driver '${dst.driver.name}' does not support bitmaps`);
}

/**
 * qemu-img convert --bitmaps, after the data is copied: each persistent
 * bitmap of `src` is added to `dst` (same granularity and state) and merged
 * in; `warn` hears about the inconsistent ones skipped.
 */
export function copyBitmaps(src: BlockNode, dst: BlockNode, warn: (msg: string) => void): void {
  checkBitmapTarget(dst);
  for (const bm of listDirtyBitmaps(src)) {
    if (!bm.persistent) continue;
    if (bm.inconsistent) {
      warn(`Skipping inconsistent bitmap '${bm.name}'`);
      continue;
    }
    addDirtyBitmap(dst, bm.name, { granularity: bm.granularity, persistent: true, disabled: !bm.enabled });
    mergeDirtyBitmaps(dst, bm.name, [{ node: src, name: bm.name }]);
  }
}
