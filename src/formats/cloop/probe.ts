/**
 * The cloop format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { CLOOP_PREAMBLE_V2 } from './header.js';

export function cloopProbe(head: Uint8Array): number {
  if (head.length === 0) return 0;
  const n = Math.min(CLOOP_PREAMBLE_V2.length, head.length);
  for (let i = 0; i < n; i++) if (head[i] !== CLOOP_PREAMBLE_V2.charCodeAt(i)) return 0;
  return 2;
}
