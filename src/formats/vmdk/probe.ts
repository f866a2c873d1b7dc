/**
 * The vmdk format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
import { VMDK3_MAGIC, VMDK4_MAGIC } from './sparse-header.js';

/** QEMU's probe: a sparse magic, or a text file whose first non-comment, non-blank line is `version=1|2|3`. */
export function vmdkProbe(head: Uint8Array): number {
  if (head.length < 4) return 0;
  const magic = ((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0;
  if (magic === VMDK3_MAGIC || magic === VMDK4_MAGIC) return 100;
  let p = 0;
  const end = head.length;
  const startsWith = (s: string) => {
    if (end - p < s.length) return false;
    for (let i = 0; i < s.length; i++) if (head[p + i] !== s.charCodeAt(i)) return false;
    return true;
  };
  while (p < end) {
    const c = head[p];
    if (c === 0x23) {
      while (p < end && head[p] !== 0x0a) p++;
      p++;
      continue;
    }
    if (c === 0x20) {
      while (p < end && head[p] === 0x20) p++;
      if (p < end && head[p] === 0x0d) p++;
      if (p === end || head[p] !== 0x0a) return 0;
      p++;
      continue;
    }
    for (const v of ['1', '2', '3']) {
      if (startsWith(`version=${v}\n`) || startsWith(`version=${v}\r\n`)) return 100;
    }
    return 0;
  }
  return 0;
}
