/**
 * The arena-backed buffer provider: once the module is loaded, `alloc` hands
 * out Uint8Array views INTO wasm memory and `isZero` scans them where they
 * lie. Requests the arena cannot meet (exhausted, or larger than the arena)
 * get a plain Uint8Array, which every caller handles the same way; freeing
 * such a buffer is a no-op.
 *
 * This file does not install anything: the shape matches block/buffers.ts's
 * BufferProvider, and the wiring module (src/runtime.ts) installs it when
 * the module is ready, so wasm/ stays a leaf.
 */
import { BuddyArena } from './arena.js';
import { ARENA_BASE, wasmState, type WasmState } from './module.js';
import { wasmBlockRunEnd, wasmBufferIsZero } from './zero.js';

/** What block/buffers.ts calls a BufferProvider (declared here so wasm/ imports nothing outside itself). */
export interface WasmBufferProvider {
  alloc(bytes: number): Uint8Array;
  free(buf: Uint8Array): void;
  isZero(buf: Uint8Array): boolean;
  runEnd(buf: Uint8Array, from: number, block: number, zero: boolean): number;
}

let arena: BuddyArena | null = null;

/** The arena, or null before initWasm resolved (created on first use after that). */
export function wasmArena(): BuddyArena | null {
  if (arena) return arena;
  const s = wasmState();
  if (!s) return null;
  arena = new BuddyArena(ARENA_BASE, s.arenaBytes);
  return arena;
}

export function arenaProvider(s: WasmState, a: BuddyArena): WasmBufferProvider {
  return {
    alloc(bytes) {
      const addr = a.alloc(bytes);
      return addr < 0 ? new Uint8Array(bytes) : new Uint8Array(s.memory.buffer, addr, bytes);
    },
    free(buf) {
      if (buf.buffer === s.memory.buffer) a.release(buf.byteOffset);
    },
    isZero: wasmBufferIsZero,
    runEnd: wasmBlockRunEnd,
  };
}

/** The provider over the module's arena, or null before initWasm resolved. */
export function wasmBufferProvider(): WasmBufferProvider | null {
  const s = wasmState();
  const a = wasmArena();
  return s && a ? arenaProvider(s, a) : null;
}
