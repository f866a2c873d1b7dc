/**
 * What a filter driver only forwards to its `file` child: resizing (the
 * filter's size follows the child's), the length and the allocated size.
 * Filters spread `filterPassThrough` into their driver table and write only
 * what they change.
 */
import type { BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { bdrvGetLength, bdrvTruncate } from '../block/io.js';

/** The filter's `file` child. */
export const filterFile = (bs: BlockNode): BlockNode => bs.file!.node;

export const filterPassThrough = {
  async truncate(bs, size, exact, prealloc) {
    await bdrvTruncate(filterFile(bs), size, exact, prealloc);
    bs.totalBytes = filterFile(bs).totalBytes;
  },
  async getLength(bs) {
    return bdrvGetLength(filterFile(bs));
  },
  async getAllocatedFileSize(bs) {
    return filterFile(bs).driver.getAllocatedFileSize?.(filterFile(bs));
  },
} satisfies Pick<BlockDriver, 'truncate' | 'getLength' | 'getAllocatedFileSize'>;
