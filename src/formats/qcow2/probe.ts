/**
 * The qcow2 format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { be, QCOW_MAGIC } from './header.js';

export function qcow2Probe(head: Uint8Array): number {
  if (head.length < 8) return 0;
  return be.u32(head, 0) === QCOW_MAGIC && be.u32(head, 4) >= 2 ? 100 : 0;
}
