/**
 * The vdi format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { VDI_HEADER_BYTES, VDI_SIGNATURE } from './header.js';

export function vdiProbe(head: Uint8Array): number {
  if (head.length < VDI_HEADER_BYTES) return 0;
  const sig = (head[64]! | (head[65]! << 8) | (head[66]! << 16) | (head[67]! << 24)) >>> 0;
  return sig === VDI_SIGNATURE ? 100 : 0;
}
