/**
 * Switching a node between read-only and read-write (the read-only part of
 * QEMU's bdrv_reopen_multiple): the driver's `reopen` hook does what the
 * format needs (qcow2 stores or re-marks its bitmaps, the file protocol
 * reopens its descriptor), then the flag changes.
 */
import type { BlockNode } from './node.js';

/** Switches `bs` alone; the caller orders children (writable before their parents, read-only after them). */
export async function reopenReadOnly(bs: BlockNode, readOnly: boolean): Promise<void> {
  if (bs.readOnly === readOnly) return;
  await bs.driver.reopen?.(bs, readOnly);
  bs.readOnly = readOnly;
}
