/**
 * Formats QEMU only reads (dmg, cloop, bochs) refuse a read-write open as
 * QEMU's bdrv_apply_auto_read_only does without auto-read-only: EACCES,
 * "Image is read-only". Callers that can live with reading (the web app,
 * -blockdev auto-read-only) retry read-only on that code.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';

export function requireReadOnly(bs: BlockNode, format: string): void {
  if (!bs.readOnly) throw new BlockError('EACCES', `${bs.filename}: Image is read-only (${format} images can only be read)`, { qemuMessage: 'Image is read-only' });
}
