#!/usr/bin/env node
// The WebAssembly kernels against plain-JS baselines measured in the same run
// (imports dist/: run `npm run build` first). Every figure is a throughput,
// so ratio = value / baseline and higher is better.
import { initWasm, HBitmap, wasmL2ScanRun } from '../dist/wasm/index.js';
import { allocBuffer, freeBuffer, bufferIsZero } from '../dist/block/buffers.js';
import { l2ScanRun } from '../dist/formats/qcow2/l2-scan.js';

await initWasm();

function report(name, value, unit, baseline, aim) {
  const round = (x) => Number(x.toPrecision(4));
  console.log(`BENCH ${JSON.stringify({ name, value: round(value), unit, baseline: round(baseline), ratio: round(value / baseline), aim })}`);
}

/** Best rate (units per second) of `fn` doing `units` per call, over a few timed rounds of ~150 ms. */
function rate(fn, units) {
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    const dt = performance.now() - t0;
    if (dt > 30) break;
    reps *= 2;
  }
  let best = 0;
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    const dt = (performance.now() - t0) / 1000;
    best = Math.max(best, (units * reps) / dt);
  }
  return best;
}

let sink = 0;

// ---------------------------------------------------------------- zero detection
function byteLoop(b) {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
function u32Loop(b) {
  const w = new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
  const n = w.length;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    if ((w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) !== 0) return false;
  }
  for (; i < n; i++) if (w[i] !== 0) return false;
  return true;
}

for (const [label, size] of [['64KiB', 64 * 1024], ['64MiB', 64 * 1024 * 1024]]) {
  const buf = allocBuffer(size);
  buf.fill(0);
  if (buf.buffer.byteLength === size) throw new Error('arena did not supply the buffer');
  const copyDst = new Uint8Array(size);
  const gbs = (r) => r / 1e9;
  const wasm = gbs(rate(() => (sink += bufferIsZero(buf) ? 1 : 0), size));
  const bytes = gbs(rate(() => (sink += byteLoop(buf) ? 1 : 0), size));
  const words = gbs(rate(() => (sink += u32Loop(buf) ? 1 : 0), size));
  const memcpy = gbs(rate(() => copyDst.set(buf), size));
  report(`zero-detect ${label}: wasm simd vs js byte loop`, wasm, 'GB/s', bytes, 30);
  report(`zero-detect ${label}: wasm simd vs js uint32 unrolled`, wasm, 'GB/s', words, 2.5);
  report(`zero-detect ${label}: wasm simd vs memcpy (TypedArray.set)`, wasm, 'GB/s', memcpy, 1.5);
  if (size > 1e6) {
    // A buffer outside wasm memory: staged through scratch vs the JS word loop.
    const foreign = new Uint8Array(size);
    const staged = gbs(rate(() => (sink += bufferIsZero(foreign) ? 1 : 0), size));
    report(`zero-detect ${label} outside wasm memory: staged copy+simd vs js uint32 unrolled`, staged, 'GB/s', gbs(rate(() => (sink += u32Loop(foreign) ? 1 : 0), size)), 1);
  }
  freeBuffer(buf);
}

// ---------------------------------------------------------------- hbitmap
{
  const nbits = 2 ** 24;
  const hb = new HBitmap(nbits, 0);
  if (hb.backend !== 'wasm') throw new Error('bitmap not in wasm memory');
  const flat = new Uint32Array(nbits / 32);
  function flatNext(words, start) {
    let w = start >>> 5;
    let cur = words[w] & (0xffffffff << (start & 31));
    while (cur === 0) {
      if (++w >= words.length) return -1;
      cur = words[w];
    }
    return w * 32 + (31 - Math.clz32(cur & -cur));
  }
  const hbEmpty = rate(() => (sink += hb.nextDirty(0)), 1);
  const flatEmpty = rate(() => (sink += flatNext(flat, 0)), 1);
  report('next-dirty over an empty 2^24-bit bitmap: hbitmap vs flat uint32 scan', hbEmpty, 'calls/s', flatEmpty, 50);

  // Dense: every bit set, iterate them all.
  hb.set(0, nbits);
  flat.fill(0xffffffff);
  const hbDense = rate(() => {
    const it = hb.iter();
    let n = 0;
    while (it.next() >= 0) n++;
    sink += n;
  }, nbits);
  const flatDense = rate(() => {
    let n = 0;
    for (let w = 0; w < flat.length; w++) {
      let cur = flat[w];
      while (cur !== 0) {
        sink += w * 32 + (31 - Math.clz32(cur & -cur));
        cur &= cur - 1;
        n++;
      }
    }
    sink += n;
  }, nbits);
  report('dense full iteration of a 2^24-bit bitmap: hbitmap iter vs flat uint32 scan', hbDense, 'bits/s', flatDense, 0.5);
  hb.free();
}

// ---------------------------------------------------------------- L2 scan
{
  const entries = 8192; // one 64 KiB L2 table of standard entries
  const slice = allocBuffer(entries * 8);
  const dv = new DataView(slice.buffer, slice.byteOffset, slice.byteLength);
  for (let i = 0; i < entries; i++) {
    // COPIED | host offset 1 MiB + i clusters (64 KiB clusters): one long contiguous run
    dv.setUint32(i * 8, 0x80000000);
    dv.setUint32(i * 8 + 4, 0x100000 + i * 65536);
  }
  if (wasmL2ScanRun(slice, 0, entries, false, 16, true) !== entries) throw new Error('l2 scan sanity');
  const wasm = rate(() => (sink += wasmL2ScanRun(slice, 0, entries, false, 16, true)), entries);
  const dataView = rate(() => {
    const d = new DataView(slice.buffer, slice.byteOffset, slice.byteLength);
    const first = d.getUint32(0);
    let expect = (d.getUint32(0) & 0xffffff) * 0x100000000 + (d.getUint32(4) & 0xfffffe00) + 65536;
    let i = 1;
    for (; i < entries; i++) {
      const hi = d.getUint32(i * 8);
      const lo = d.getUint32(i * 8 + 4);
      if ((hi & 0xc0000000) !== (first & 0xc0000000) || (lo & 1) !== 0) break;
      if ((hi & 0xffffff) * 0x100000000 + (lo & 0xfffffe00) !== expect) break;
      expect += 65536;
    }
    sink += i;
  }, entries);
  report('L2 scan of a 64 KiB slice: wasm simd vs DataView loop', wasm, 'entries/s', dataView, 5);
  const reference = rate(() => (sink += l2ScanRun(slice, 0, entries, false, 16, true)), entries);
  report('L2 scan of a 64 KiB slice: wasm simd vs the TS reference l2ScanRun', wasm, 'entries/s', reference, null);
  freeBuffer(slice);
}

if (sink === 0.5) console.log(sink);
