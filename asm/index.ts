// blocktab's WebAssembly module: one entry re-exporting every kernel.
// Memory is imported (env.memory) and never grows; the JS side (src/wasm/)
// owns the layout and passes addresses. No AssemblyScript runtime
// allocation happens here, so the stub runtime never touches the heap.
export { bufferIsZero, blockRunEnd } from './zero';
export { l2EntryKind, l2ScanRun } from './l2-scan';
export { crc32cUpdate } from './crc32c';
export { refCountTable, refCompareBlock } from './refcount';
export {
  hbBytes, hbInit, hbCount, hbGet, hbSet, hbReset, hbResetAll, hbNextDirty, hbNextZero,
  hbCollect, hbMerge, hbCopyPrefix, hbDeserialize, hbLevel0,
} from './hbitmap';

/** End of the module's static data; the JS memory layout starts above it. */
export function heapBase(): usize {
  return __heap_base;
}
