/**
 * blocktab's WebAssembly layer: one loader (initWasm / wasmReady), the
 * zero-copy buffer arena (installed as the BufferProvider when the module
 * loads), zero detection, the qcow2 L2 scan and hierarchical bitmaps.
 * Everything has a JS fallback, so nothing requires initWasm to have run.
 */
import './provider.js';

export { initWasm, wasmReady, type InitWasmOptions } from './module.js';
export { wasmArena } from './provider.js';
export { wasmBufferIsZero } from './zero.js';
export { wasmL2ScanRun, wasmL2EntryKind } from './l2-scan.js';
export { HBitmap, HBitmapIter, HBITMAP_MAX_BITS, type DirtyArea, type HBitmapOptions } from './hbitmap.js';
