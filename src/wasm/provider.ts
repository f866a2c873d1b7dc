/**
 * The arena-backed BufferProvider (src/block/buffers.ts): once the module is
 * loaded, `allocBuffer` hands out Uint8Array views INTO wasm memory and
 * `bufferIsZero` scans them where they lie. Requests the arena cannot meet
 * (exhausted, or larger than the arena) get a plain Uint8Array, which every
 * caller handles the same way; freeing such a buffer is a no-op.
 */
import { installBufferProvider, type BufferProvider } from '../block/buffers.js';
import { BuddyArena } from './arena.js';
import { ARENA_BASE, onWasmReady, type WasmState } from './module.js';
import { wasmBufferIsZero } from './zero.js';

let arena: BuddyArena | null = null;

/** The arena, or null before initWasm resolved. */
export function wasmArena(): BuddyArena | null {
  return arena;
}

export function arenaProvider(s: WasmState, a: BuddyArena): BufferProvider {
  return {
    alloc(bytes) {
      const addr = a.alloc(bytes);
      return addr < 0 ? new Uint8Array(bytes) : new Uint8Array(s.memory.buffer, addr, bytes);
    },
    free(buf) {
      if (buf.buffer === s.memory.buffer) a.release(buf.byteOffset);
    },
    isZero: wasmBufferIsZero,
  };
}

onWasmReady((s) => {
  arena = new BuddyArena(ARENA_BASE, s.arenaBytes);
  installBufferProvider(arenaProvider(s, arena));
});
