/**
 * wasmL2ScanRun: the same question and answer as l2ScanRun in
 * src/formats/qcow2/l2-scan.ts, answered by the SIMD kernel (asm/l2-scan.ts).
 *
 * Zero-copy when the slice is a view into wasm memory (an L2 cache whose
 * slices come from allocBuffer); otherwise the entries are staged through
 * the scratch area chunk by chunk, which is correct but no faster than the
 * TS loop. Before initWasm resolves the TS reference answers.
 */
import { l2EntryBytes, l2EntryKind, l2ScanRun, type L2Kind } from '../formats/qcow2/l2-scan.js';
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState } from './module.js';

/** Same signature and semantics as l2ScanRun (src/formats/qcow2/l2-scan.ts). */
export function wasmL2ScanRun(
  slice: Uint8Array,
  start: number,
  end: number,
  extended: boolean,
  clusterBits: number,
  matchCopied: boolean,
): number {
  const s = wasmState();
  if (!s) return l2ScanRun(slice, start, end, extended, clusterBits, matchCopied);
  const esz = l2EntryBytes(extended);
  // Never read past the view: entries beyond it do not exist.
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

/** Kind of entry `index` (same as l2EntryKind); zero-copy for wasm-memory slices. */
export function wasmL2EntryKind(slice: Uint8Array, index: number, extended: boolean): L2Kind {
  const s = wasmState();
  if (!s || slice.buffer !== s.memory.buffer) return l2EntryKind(slice, index, extended);
  return s.exports.l2EntryKind(slice.byteOffset, index, extended ? 1 : 0) as L2Kind;
}
