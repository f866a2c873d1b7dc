// Without initWasm (this file never calls it) everything still works on the
// JS fallbacks; each vitest file has its own module graph. The wiring module
// is imported, as every entry point does, so the provider hook is in place
// but has nothing to install.
import { describe, expect, it } from 'vitest';
import { wasmReady, wasmBufferIsZero, wasmL2ScanRun, wasmL2EntryKind, wasmArena, wasmBufferProvider, HBitmap } from '../../src/wasm/index.js';
import '../../src/runtime.js';
import { allocBuffer, freeBuffer, bufferIsZero } from '../../src/block/buffers.js';
import { l2FindRun, l2ScanRun } from '../../src/formats/qcow2/l2-scan.js';

describe('wasm layer before initWasm', () => {
  it('is not ready, and every entry point answers through its JS fallback', () => {
    expect(wasmReady()).toBe(false);
    expect(wasmArena()).toBeNull();
    expect(wasmBufferProvider()).toBeNull();
    const b = allocBuffer(4096);
    expect(b.buffer.byteLength).toBe(4096); // a plain buffer, not a view into wasm memory
    b.fill(0);
    expect(wasmBufferIsZero(b)).toBe(true);
    expect(bufferIsZero(b)).toBe(true);
    b[4000] = 1;
    expect(wasmBufferIsZero(b)).toBe(false);
    expect(bufferIsZero(b)).toBe(false);
    freeBuffer(b);

    const slice = new Uint8Array(64);
    const dv = new DataView(slice.buffer);
    for (let i = 0; i < 8; i++) dv.setBigUint64(i * 8, 0x8000000000000000n | BigInt((i + 1) << 16));
    // The kernel says "not loaded"; the qcow2 driver's entry point answers with the TS reference.
    expect(wasmL2ScanRun(slice, 0, 8, false, 16, true)).toBe(-1);
    expect(wasmL2EntryKind(slice, 0, false)).toBe(-1);
    expect(l2FindRun(slice, 0, 8, false, 16, true)).toBe(l2ScanRun(slice, 0, 8, false, 16, true));
    expect(l2FindRun(slice, 0, 8, false, 16, true)).toBe(8);
    dv.setBigUint64(5 * 8, 0x8000000000000000n | BigInt(40 << 16)); // a gap ends the run
    expect(l2FindRun(slice, 0, 8, false, 16, true)).toBe(5);

    const hb = new HBitmap(1 << 20, 9);
    expect(hb.backend).toBe('js');
    hb.set(4096, 1);
    expect(hb.nextDirty(0)).toBe(4096);
    hb.free();
  });
});
