/**
 * The luks format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { hasLuksMagic } from '../../crypto/luks-header.js';

export function luksProbe(head: Uint8Array): number {
  return hasLuksMagic(head) && head.length >= 8 && head[6] === 0 && head[7] === 1 ? 100 : 0;
}
