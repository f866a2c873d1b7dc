// The refcount codec (src/formats/qcow2/refcount-codec.ts): every width
// 1..64 against a bit-level model of the spec's layout, table entries, and
// the refcount blocks qemu-img writes.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  countNonzeroRefcounts,
  decodeReftable,
  getRefcountEntry,
  putReftableEntry,
  refcountLimit,
  refcountsPerBlock,
  reftableEntryAt,
  reftableEntryOffset,
  reftableEntryReserved,
  setRefcountEntry,
} from '../../src/formats/qcow2/refcount-codec.js';
import { parseHeader } from '../../src/formats/qcow2/header.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';

const WIDTHS = [1, 2, 4, 8, 16, 32, 64];

/**
 * The spec's layout, bit by bit: entry i of a `width`-bit block. Below 8 bits
 * entries fill a byte from its least significant bit; from 8 bits on each
 * entry is a big-endian integer.
 */
function modelPut(block: Uint8Array, width: number, i: number, v: bigint): void {
  for (let b = 0; b < width; b++) {
    let byte: number;
    let bit: number;
    if (width < 8) {
      byte = Math.floor((i * width + b) / 8);
      bit = (i * width + b) % 8;
    } else {
      byte = (i * width) / 8 + (width / 8 - 1 - Math.floor(b / 8));
      bit = b % 8;
    }
    if ((v >> BigInt(b)) & 1n) block[byte]! |= 1 << bit;
    else block[byte]! &= ~(1 << bit);
  }
}

describe('refcount block entries', () => {
  for (const width of WIDTHS) {
    it(`refcount_bits ${width}: set/get round-trip, the spec's byte layout, neighbours untouched`, () => {
      const limit = refcountLimit(width);
      expect(limit).toBe(width >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** width - 1);
      const per = refcountsPerBlock(512, width);
      expect(per).toBe((512 * 8) / width);
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(per - 1), fc.double({ min: 0, max: 1, noNaN: true })), { maxLength: 60 }), (ops) => {
          const block = new Uint8Array(512);
          const model = new Uint8Array(512);
          const values = new Map<number, number>();
          for (const [i, r] of ops) {
            const v = Math.floor(r * limit);
            setRefcountEntry(block, width, i, v);
            modelPut(model, width, i, BigInt(v));
            values.set(i, v);
          }
          expect(Buffer.compare(Buffer.from(block), Buffer.from(model))).toBe(0);
          const got: number[] = [];
          const want: number[] = [];
          for (let i = 0; i < per; i++) {
            got.push(getRefcountEntry(block, width, i));
            want.push(values.get(i) ?? 0);
          }
          expect(got).toEqual(want);
          let nonzero = 0;
          for (const v of values.values()) if (v) nonzero++;
          expect(countNonzeroRefcounts(block, width, per)).toBe(nonzero);
        }),
        { numRuns: 100 },
      );
      // The extremes, next to each other.
      const block = new Uint8Array(64);
      setRefcountEntry(block, width, 1, limit);
      expect(getRefcountEntry(block, width, 0)).toBe(0);
      expect(getRefcountEntry(block, width, 1)).toBe(limit);
      expect(getRefcountEntry(block, width, 2)).toBe(0);
      setRefcountEntry(block, width, 1, 0);
      expect(block.every((b) => b === 0)).toBe(true);
    });
  }

  it('refcount_bits 1 puts cluster 0 in bit 0 of byte 0 (QEMU reads index/8 >> index%8)', () => {
    const block = new Uint8Array(4);
    setRefcountEntry(block, 1, 0, 1);
    setRefcountEntry(block, 1, 9, 1);
    expect([...block]).toEqual([0x01, 0x02, 0, 0]);
    setRefcountEntry(block, 16, 1, 0x1234);
    expect([...block]).toEqual([0x01, 0x02, 0x12, 0x34]);
  });
});

describe('refcount table entries', () => {
  it('hold the block offset in bits 9..63; bits 0..8 are reserved', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 44n) - 1n }), fc.nat(0x1ff), (cluster, reserved) => {
        const offset = cluster << 9n;
        const raw = new Uint8Array(24);
        putReftableEntry(raw, 1, Number(offset));
        const dv = new DataView(raw.buffer);
        expect(dv.getBigUint64(8)).toBe(offset);
        expect(reftableEntryAt(raw, 1)).toBe(Number(offset));
        dv.setBigUint64(8, offset | BigInt(reserved));
        const hi = dv.getUint32(8);
        const lo = dv.getUint32(12);
        expect(reftableEntryOffset(hi, lo)).toBe(Number(offset));
        expect(reftableEntryReserved(lo)).toBe(reserved);
        expect([...decodeReftable(raw)]).toEqual([0, Number(offset), 0]);
      }),
      { numRuns: 500 },
    );
  });
});

describe('refcount blocks qemu-img writes', () => {
  const dir = tmpDir('qcow2-refcount-codec-');
  for (const width of WIDTHS) {
    it(`refcount_bits ${width}: every cluster of a fresh image has refcount 1, those past the end 0; a snapshot makes shared ones 2`, () => {
      const img = path.join(dir, `r${width}.qcow2`);
      const cs = 4096;
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs},refcount_bits=${width}`, img, '8M']);
      qemuIo(img, ['write -P 0x5a 0 64k', 'write -P 0x33 1M 8k'], 'qcow2');
      const read = (): { file: Uint8Array; block: Uint8Array; clusters: number } => {
        const file = new Uint8Array(fs.readFileSync(img));
        const h = parseHeader(file.subarray(0, cs), img);
        expect(h.refcountOrder).toBe(Math.log2(width));
        const table = decodeReftable(file.subarray(h.refcountTableOffset, h.refcountTableOffset + h.refcountTableClusters * cs));
        // An 8 MiB image with 4 KiB clusters fits in the first refcount block for every width.
        expect(table[0]).toBeGreaterThan(0);
        for (let i = 1; i < table.length; i++) expect(table[i]).toBe(0);
        return { file, block: file.subarray(table[0]!, table[0]! + cs), clusters: Math.ceil(file.length / cs) };
      };
      let { block, clusters } = read();
      const per = refcountsPerBlock(cs, width);
      expect(clusters).toBeLessThan(per);
      const got = Array.from({ length: per }, (_, k) => getRefcountEntry(block, width, k));
      expect(got).toEqual(Array.from({ length: per }, (_, k) => (k < clusters ? 1 : 0)));
      expect(countNonzeroRefcounts(block, width, per)).toBe(clusters);
      if (width === 1) return; // a snapshot needs refcount 2
      qemuImg(['snapshot', '-c', 'one', img]);
      ({ block, clusters } = read());
      let twos = 0;
      for (let k = 0; k < clusters; k++) {
        const v = getRefcountEntry(block, width, k);
        expect(v === 0 || v === 1 || v === 2, `cluster ${k}: ${v}`).toBe(true);
        if (v === 2) twos++;
      }
      // Shared with the snapshot now: the one L2 table (4 KiB clusters map 2 MiB per table) and the 16 + 2 data clusters.
      expect(twos).toBe(19);
    });
  }
});

describe('decoding a whole table and counting a whole block', () => {
  // decodeReftable skips the zero tail 4 KiB at a time and countNonzeroRefcounts
  // reads whole-byte widths through typed views: both against entry-by-entry models,
  // with entries at slice edges, tables not a multiple of 4 KiB, and blocks at
  // unaligned offsets.
  const tableSizes = [8, 4096, 4104, 65536, 3 * 65536 + 8];
  it('decodeReftable equals reftableEntryAt of every entry', async () => {
    const { initWasm } = await import('../../src/runtime.js');
    const { allocBuffer, freeBuffer } = await import('../../src/block/buffers.js');
    for (const inWasm of [false, true]) {
      if (inWasm) await initWasm();
      fc.assert(
        fc.property(
          fc.constantFrom(...tableSizes),
          fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 1, max: 2 ** 20 })), { maxLength: 6 }),
          fc.constantFrom(0, 511, 512, 513),
          (bytes, picks, edge) => {
            const raw = inWasm ? allocBuffer(bytes) : new Uint8Array(bytes);
            try {
              raw.fill(0);
              const n = bytes / 8;
              for (const [r, cluster] of picks) putReftableEntry(raw, Math.floor(r * n), cluster * 65536);
              if (edge < n) putReftableEntry(raw, edge, 0x10000);
              const want = Array.from({ length: n }, (_, i) => reftableEntryAt(raw, i));
              expect([...decodeReftable(raw)]).toEqual(want);
            } finally {
              if (inWasm) freeBuffer(raw);
            }
          },
        ),
        { numRuns: 60 },
      );
    }
  });

  it('countNonzeroRefcounts equals a count of getRefcountEntry, aligned or not', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...WIDTHS),
        fc.constantFrom(0, 1, 4, 8),
        fc.array(fc.tuple(fc.nat(1023), fc.nat(7)), { maxLength: 40 }),
        fc.nat(1024),
        (width, shift, bytes, limitPick) => {
          const backing = new Uint8Array(4096 + 8);
          const block = backing.subarray(shift, shift + 4096);
          for (const [p, bit] of bytes) block[p] = block[p]! | (1 << bit);
          const per = refcountsPerBlock(4096, width);
          const limit = Math.min(per, limitPick * 32);
          let want = 0;
          for (let i = 0; i < limit; i++) if (getRefcountEntry(block, width, i) !== 0) want++;
          expect(countNonzeroRefcounts(block, width, limit)).toBe(want);
        },
      ),
      { numRuns: 400 },
    );
  });
});
