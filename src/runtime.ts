/**
 * Wiring between the leaf wasm layer and the block layer: when the module is
 * ready, its arena becomes block/buffers.ts's buffer provider, so I/O
 * buffers are views into wasm memory and zero detection scans them in place.
 *
 * Entry points (the library's src/index.ts, the CLI, the worker) load wasm
 * through this module's initWasm; importing it is enough to have the
 * provider installed whenever and however the module gets loaded.
 */
import { installBufferProvider } from './block/buffers.js';
import { onWasmReady, wasmBufferProvider } from './wasm/index.js';

onWasmReady(() => installBufferProvider(wasmBufferProvider()));

export { initWasm, wasmReady, type InitWasmOptions } from './wasm/index.js';
