/**
 * The bochs format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { BOCHS_HEADER_SIZE, isBochsGrowing, parseBochsHeader } from './header.js';

export function bochsProbe(head: Uint8Array): number {
  if (head.length < BOCHS_HEADER_SIZE) return 0;
  return isBochsGrowing(parseBochsHeader(head)) ? 100 : 0;
}
