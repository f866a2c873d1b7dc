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
