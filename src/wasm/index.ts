/**
 * blocktab's WebAssembly layer: one loader (initWasm / wasmReady), the
 * zero-copy buffer arena, zero detection, the L2 run kernel and hierarchical
 * bitmaps. A leaf: nothing here imports code outside src/wasm/; the wiring
 * that installs the arena as the block layer's buffer provider is in
 * src/runtime.ts. Everything has a JS fallback, so nothing requires initWasm
 * to have run.
 */
export { initWasm, wasmReady, onWasmReady, type InitWasmOptions } from './module.js';
export { wasmArena, wasmBufferProvider, type WasmBufferProvider } from './provider.js';
export { wasmBufferIsZero, wasmBlockRunEnd } from './zero.js';
export { bufferIsZeroJs, blockRunEndJs } from './zero-js.js';
export { wasmL2ScanRun, wasmL2EntryKind } from './l2-scan.js';
export { wasmCrc32cUpdate } from './crc32c.js';
export { WasmRefcounts, type CountCells, type CountMasks } from './refcount.js';
export { HBitmap, HBitmapIter, HBITMAP_MAX_BITS, type DirtyArea, type HBitmapOptions } from './hbitmap.js';
export { WasmError, type WasmErrorCode } from './errors.js';
