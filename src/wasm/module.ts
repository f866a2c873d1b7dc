/**
 * Loading blocktab's WebAssembly module (asm/ → build/blocktab.wasm), the
 * one loader used by the Node CLI, the tests and the browser worker.
 *
 * The module imports its memory; we create it here, once, at a fixed size,
 * with maximum === initial, so it can never grow. That is what makes
 * zero-copy safe: a Uint8Array view into wasm memory is only invalidated when
 * the memory grows (its ArrayBuffer is detached), and ours never does, so
 * buffers handed out by the arena stay valid for the life of the page or
 * process. Layout (see README.md in this folder):
 *
 *   0        heapBase      AssemblyScript's static data (a few hundred bytes)
 *   64 KiB   1 MiB         scratch: staging for data that lives outside wasm memory
 *   1 MiB    1 MiB + A     arena (src/wasm/arena.ts): I/O buffers and bitmaps, A = arenaBytes
 *
 * Everything works without the module (JS fallbacks); `initWasm` swaps in the
 * kernels and the arena-backed BufferProvider when it resolves.
 */
import { WasmError } from './errors.js';

/** The kernels exported by asm/index.ts (addresses and bit indices are plain numbers). */
export interface WasmExports {
  heapBase(): number;
  bufferIsZero(ptr: number, len: number): number;
  blockRunEnd(ptr: number, len: number, from: number, block: number, zero: number): number;
  l2EntryKind(ptr: number, index: number, extended: number): number;
  l2ScanRun(ptr: number, start: number, end: number, extended: number, clusterBits: number, matchCopied: number): number;
  refCountTable(
    ptr: number, from: number, n: number, stride: number, skipMask: bigint, rejectMask: bigint, offsetMask: bigint, flagBit: bigint,
    clusterBits: number, counts: number, width: number, max: number, limit: bigint, frag: number, marks: number, markBytes: number, st: number,
  ): number;
  refCompareBlock(blk: number, from: number, n: number, bits: number, counts: number, width: number, base: bigint, marks: number, markBytes: number, st: number): number;
  hbBytes(nbits: number): number;
  hbInit(hdr: number, nbits: number): void;
  hbCount(hdr: number): number;
  hbGet(hdr: number, bit: number): number;
  hbSet(hdr: number, first: number, last: number): void;
  hbReset(hdr: number, first: number, last: number): void;
  hbResetAll(hdr: number): void;
  hbNextDirty(hdr: number, start: number, end: number): number;
  hbNextZero(hdr: number, start: number, end: number): number;
  hbCollect(hdr: number, start: number, end: number, out: number, max: number): number;
  hbMerge(dst: number, src: number): void;
  hbCopyPrefix(dst: number, src: number): void;
  hbDeserialize(hdr: number, src: number, firstWord: number, nwords: number): void;
  hbLevel0(hdr: number): number;
  crc32cUpdate(crc: number, ptr: number, len: number): number;
}

export const SCRATCH_BASE = 64 * 1024;
export const SCRATCH_BYTES = 1024 * 1024 - SCRATCH_BASE;
export const ARENA_BASE = 1024 * 1024;
/** Default arena: room for a 64 MiB buffer, a convert pipeline and bitmaps of many TiB of disk. */
export const DEFAULT_ARENA_BYTES = 256 * 1024 * 1024;

export interface WasmState {
  exports: WasmExports;
  memory: WebAssembly.Memory;
  /** A view of the whole memory; valid forever because the memory never grows. */
  u8: Uint8Array;
  arenaBytes: number;
}

export interface InitWasmOptions {
  /** The module's bytes (Node reads build/blocktab.wasm; tests may pass their own). */
  bytes?: BufferSource;
  /** Where to fetch the module (a browser passes vite's `?url` import here). */
  url?: string | URL;
  /** An already compiled module (e.g. posted to a worker). */
  module?: WebAssembly.Module;
  /** Size of the buffer arena; a power of two ≥ 1 MiB. Only the first successful init decides it. */
  arenaBytes?: number;
}

let state: WasmState | null = null;
let pending: Promise<WasmState> | null = null;
const readyHooks: ((s: WasmState) => void)[] = [];

/** True once the module is instantiated (synchronous check for hot paths). */
export function wasmReady(): boolean {
  return state !== null;
}

/** The loaded module, or null (callers then use their JS fallback). */
export function wasmState(): WasmState | null {
  return state;
}

/** Runs `hook` when the module is ready (now, if it already is). Used to install the buffer provider. */
export function onWasmReady(hook: (s: WasmState) => void): void {
  if (state) hook(state);
  else readyHooks.push(hook);
}

async function moduleSource(opts: InitWasmOptions): Promise<WebAssembly.Module> {
  if (opts.module) return opts.module;
  if (opts.bytes) return WebAssembly.compile(opts.bytes);
  if (!opts.url && isNode()) {
    // Node: read the file next to the sources. The specifier is not a literal
    // so a browser bundler never follows it into node:fs.
    const nodeLoader = './node-bytes.js';
    const mod = (await import(/* @vite-ignore */ nodeLoader)) as { readWasmBytes(): Promise<Uint8Array> };
    return WebAssembly.compile((await mod.readWasmBytes()) as Uint8Array<ArrayBuffer>);
  }
  const url = opts.url ?? new URL('../../build/blocktab.wasm', import.meta.url);
  const res = await fetch(url);
  if (!res.ok) throw new WasmError('ENOENT', `blocktab.wasm: fetching ${String(url)} failed with HTTP ${res.status}`);
  if (typeof WebAssembly.compileStreaming === 'function' && res.headers.get('content-type') === 'application/wasm') {
    return WebAssembly.compileStreaming(res);
  }
  return WebAssembly.compile(await res.arrayBuffer());
}

function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string' && typeof (globalThis as { window?: unknown }).window === 'undefined';
}

/**
 * Loads the module once (later calls return the same promise). Resolves to
 * the state; the arena-backed buffer provider is installed as it resolves.
 */
export function initWasm(opts: InitWasmOptions = {}): Promise<WasmState> {
  if (state) return Promise.resolve(state);
  if (pending) return pending;
  pending = (async () => {
    const arenaBytes = opts.arenaBytes ?? DEFAULT_ARENA_BYTES;
    if (!(arenaBytes >= 1024 * 1024 && (arenaBytes & (arenaBytes - 1)) === 0 && arenaBytes <= 2 ** 31)) {
      throw new WasmError('EINVAL', `blocktab.wasm: arena size ${arenaBytes} must be a power of two between 1 MiB and 2 GiB`);
    }
    const pages = (ARENA_BASE + arenaBytes) / 65536;
    const mod = await moduleSource(opts);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    const instance = await WebAssembly.instantiate(mod, { env: { memory } });
    const exports = instance.exports as unknown as WasmExports;
    if (exports.heapBase() > SCRATCH_BASE) {
      throw new WasmError('EINVAL', `blocktab.wasm: static data ends at ${exports.heapBase()}, past the scratch area`);
    }
    const s: WasmState = { exports, memory, u8: new Uint8Array(memory.buffer), arenaBytes };
    state = s;
    for (const hook of readyHooks.splice(0)) hook(s);
    return s;
  })();
  pending.catch(() => {
    pending = null; // a failed load may be retried (e.g. with another URL)
  });
  return pending;
}
