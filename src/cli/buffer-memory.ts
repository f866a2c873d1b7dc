/**
 * Huge pages for convert's buffers (Node CLI only).
 *
 * A convert reads its data into buffers carved from the wasm kernels' memory
 * (8 steps of 2 MiB in flight: 16 MiB). The first touch of each 4 KiB page
 * of fresh memory is a page fault, twice over here: once when the kernel's
 * read copies into it, once when the zero scan first reads it. On the
 * development VM (which hands freed pages back to its host) that cost
 * 100–300 ms of wall time per 16 MiB, more than the copy of half a GiB
 * itself; qemu-img pays the same for its own buffers (8 × 1 MiB for a vdi
 * source). With MADV_HUGEPAGE (which the usual THP mode "madvise" requires)
 * the kernel backs the memory with 2 MiB pages: one fault per 2 MiB, and
 * the zero scan's first pass costs nothing extra (measured: 4096 fewer
 * page faults per convert, peak RSS within 2 MiB of before).
 *
 * src/cli/convert.ts asks for it from 256 MiB of guest data: a small convert
 * touches a few 4 KiB pages of one buffer, and a fresh 2 MiB page costs more.
 * Advice only: without the native addon, on another OS or with THP off,
 * nothing changes but the speed. The arena is 32 MiB (src/cli/main.ts), so
 * at most that much can be committed, and a convert touches most of what it
 * uses anyway.
 */
import { wasmState } from '../wasm/module.js';
import { adviseHugePages } from '../protocols/seek-hole.js';

/** Advises the kernels' memory (once per process); the bytes advised, 0 when none. */
export function adviseBufferMemory(): number {
  const s = wasmState();
  if (!s || advised.has(s.memory)) return 0;
  advised.add(s.memory);
  return adviseHugePages(s.memory.buffer as ArrayBuffer);
}

const advised = new WeakSet<WebAssembly.Memory>();
