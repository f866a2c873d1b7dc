/**
 * The parallels format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { HEADER_MAGIC, HEADER_MAGIC2, HEADER_VERSION, PARALLELS_HEADER_BYTES, parseParallelsHeader } from './header.js';

export function parallelsProbe(head: Uint8Array): number {
  if (head.length < PARALLELS_HEADER_BYTES) return 0;
  const h = parseParallelsHeader(head);
  return (h.magic === HEADER_MAGIC || h.magic === HEADER_MAGIC2) && h.version === HEADER_VERSION ? 100 : 0;
}
