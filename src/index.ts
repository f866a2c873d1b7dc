/**
 * blocktab's library entry (environment-neutral: runs in a browser worker and
 * in Node). Node's file protocol is in `blocktab/node` (src/node.ts).
 */
import './drivers.js';

export * from './block/errors.js';
export * from './block/driver.js';
export * from './block/node.js';
export * from './block/io.js';
export * from './block/status.js';
export * from './block/backend.js';
export * from './block/open.js';
export * from './block/info.js';
export * from './block/buffers.js';
export * from './block/dirty-bitmap.js';
export * from './block/secrets.js';
export { initWasm, wasmReady, type InitWasmOptions } from './runtime.js';
export { MemoryStorage, MemoryFile } from './protocols/memory.js';
export * from './attach/index.js';
