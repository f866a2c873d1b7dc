/**
 * The vhdx format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { isVhdxSignature } from './header.js';

export function vhdxProbe(head: Uint8Array): number {
  return isVhdxSignature(head) ? 100 : 0;
}
