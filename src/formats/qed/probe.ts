/**
 * The qed format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { QED_HEADER_BYTES, QED_MAGIC } from './header.js';

export function qedProbe(head: Uint8Array): number {
  if (head.length < QED_HEADER_BYTES) return 0;
  const magic = (head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24)) >>> 0;
  return magic === QED_MAGIC ? 100 : 0;
}
