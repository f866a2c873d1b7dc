/**
 * The L2 run kernel (asm/l2-scan.ts) over bytes: staging, addresses and the
 * call. What the answer means (entry kinds, runs, the TS reference it is
 * tested against) belongs to src/formats/qcow2/l2-scan.ts, which calls this
 * and falls back to its own loop when this returns -1.
 *
 * Zero-copy when the slice is a view into wasm memory (an L2 cache whose
 * slices come from the arena); otherwise the entries are staged through the
 * scratch area chunk by chunk, which is correct but no faster than the TS
 * loop.
 */
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState } from './module.js';

/**
 * The kernel's run length from entry `start` up to `end` of `slice` (entries
 * of 8 bytes, or 16 with `extended`), or -1 when the module is not loaded.
 * Entries past the end of the view do not exist.
 */
export function wasmL2ScanRun(
  slice: Uint8Array,
  start: number,
  end: number,
  extended: boolean,
  clusterBits: number,
  matchCopied: boolean,
): number {
  const s = wasmState();
  if (!s) return -1;
  const esz = extended ? 16 : 8;
  end = Math.min(end, Math.floor(slice.length / esz));
  if (start >= end) return 0;
  const ext = extended ? 1 : 0;
  const copied = matchCopied ? 1 : 0;
  if (slice.buffer === s.memory.buffer) {
    return s.exports.l2ScanRun(slice.byteOffset, start, end, ext, clusterBits, copied);
  }
  // Staged: runs chain across chunks because each entry only has to agree
  // with its predecessor (and start's kind and COPIED flag, shared by the run).
  const perChunk = Math.floor(SCRATCH_BYTES / esz);
  let total = 0;
  let from = start;
  for (;;) {
    const to = Math.min(end, from + perChunk);
    s.u8.set(slice.subarray(from * esz, to * esz), SCRATCH_BASE);
    const run = s.exports.l2ScanRun(SCRATCH_BASE, 0, to - from, ext, clusterBits, copied);
    if (from === start) total = run;
    else total += run - 1; // the chunk's first entry was the previous chunk's last
    if (from + run < to || to === end) return total;
    from = to - 1;
  }
}

/** The kernel's kind of entry `index`, or -1 unless the module is loaded and the slice is in wasm memory. */
export function wasmL2EntryKind(slice: Uint8Array, index: number, extended: boolean): number {
  const s = wasmState();
  if (!s || slice.buffer !== s.memory.buffer) return -1;
  return s.exports.l2EntryKind(slice.byteOffset, index, extended ? 1 : 0);
}
