/**
 * The qcow format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { view } from '../on-disk.js';
import { QCOW1_HEADER_BYTES, QCOW1_MAGIC, QCOW1_VERSION } from './header.js';

export function qcowProbe(head: Uint8Array): number {
  if (head.length < QCOW1_HEADER_BYTES) return 0;
  const dv = view(head);
  return dv.getUint32(0) === QCOW1_MAGIC && dv.getUint32(4) === QCOW1_VERSION ? 100 : 0;
}
