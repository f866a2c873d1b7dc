// The L1/L2 entry codec (src/formats/qcow2/l2-entry.ts) against an
// independent 64-bit model written with BigInt from docs/interop/qcow2.txt,
// and against compressed clusters qemu-img writes at cluster_bits 9, 16, 21.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ALL_SUBCLUSTERS,
  compressedAt,
  copiedAt,
  emptyL2Entry,
  encodeCompressedEntry,
  entryClusterIndex,
  entryHasOffset,
  entryHi,
  entryLo,
  entryOffset,
  L1E_RESERVED_HI,
  L1E_RESERVED_LO,
  L2E_RESERVED_HI,
  L2E_RESERVED_LO,
  l1EntryCopied,
  l1EntryOffset,
  l2AllocBitmap,
  l2Compressed,
  l2Copied,
  l2EntryHost,
  l2EntryIsCompressed,
  l2EntryIsCopied,
  l2EntryIsZero,
  l2HostOffset,
  l2ZeroBitmap,
  parseCompressedDescriptor,
  putEntry,
  putL1Entry,
  QCOW_OFLAG_COMPRESSED,
  QCOW_OFLAG_COPIED,
  QCOW_OFLAG_ZERO,
  readL2Entry,
  sameL2Entry,
  setCopiedAt,
  standardL2Entry,
  subclusterMask,
  withCopied,
  writeL2Entry,
} from '../../src/formats/qcow2/l2-entry.js';
import { decompressCluster } from '../../src/formats/qcow2/compressed.js';
import { parseHeader } from '../../src/formats/qcow2/header.js';
import { qemuImg, tmpDir } from '../helpers/qemu.js';

/** Bits [a, b] inclusive as a BigInt mask. */
function bits(a: number, b: number): bigint {
  return ((1n << BigInt(b - a + 1)) - 1n) << BigInt(a);
}
const OFFSET_FIELD = bits(9, 55);
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

function word(buf: Uint8Array, p: number): bigint {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getBigUint64(p);
}
function putWord(buf: Uint8Array, p: number, v: bigint): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setBigUint64(p, v);
}
function halves(v: bigint): [number, number] {
  return [Number(v >> 32n), Number(v & 0xffffffffn)];
}

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.bigInt({ min: 0n, max: (1n << 32n) - 1n });

/** Cluster-aligned offsets anywhere in the 47-bit field (exact JS numbers). */
const alignedOffset = fc.bigInt({ min: 0n, max: (1n << 47n) - 1n }).map((c) => c << 9n);

describe('L1/L2 entry codec', () => {
  it('masks are the spec bit ranges', () => {
    expect(BigInt(L1E_RESERVED_HI) << 32n | BigInt(L1E_RESERVED_LO)).toBe(bits(56, 62) | bits(0, 8));
    expect(BigInt(L2E_RESERVED_HI) << 32n | BigInt(L2E_RESERVED_LO)).toBe(bits(56, 61) | bits(1, 8));
    expect(BigInt(QCOW_OFLAG_COPIED) << 32n).toBe(COPIED);
    expect(BigInt(QCOW_OFLAG_COMPRESSED) << 32n).toBe(COMPRESSED);
    expect(BigInt(QCOW_OFLAG_ZERO)).toBe(1n);
  });

  it('decodes the offset field and flags of any 64-bit word as the spec says', () => {
    fc.assert(
      fc.property(u64, (v) => {
        const [hi, lo] = halves(v);
        expect(entryOffset(hi, lo)).toBe(Number(v & OFFSET_FIELD));
        expect(entryHasOffset(hi, lo)).toBe((v & OFFSET_FIELD) !== 0n);
        const b = new Uint8Array(24);
        putWord(b, 8, v);
        expect(entryHi(b, 8)).toBe(hi >>> 0);
        expect(entryLo(b, 8)).toBe(lo >>> 0);
        expect(copiedAt(b, 8)).toBe((v & COPIED) !== 0n);
        expect(compressedAt(b, 8)).toBe((v & COMPRESSED) !== 0n);
        expect(l1EntryOffset(b, 1)).toBe(Number(v & OFFSET_FIELD));
        expect(l1EntryCopied(b, 1)).toBe((v & COPIED) !== 0n);
        expect(l2HostOffset(b, 1, false)).toBe(Number(v & OFFSET_FIELD));
        expect(l2Copied(b, 1, false)).toBe((v & COPIED) !== 0n);
        expect(l2Compressed(b, 1, false)).toBe((v & COMPRESSED) !== 0n);
        // COPIED is set and cleared without touching any other bit.
        for (const on of [true, false]) {
          setCopiedAt(b, 8, on);
          expect(word(b, 8)).toBe(on ? v | COPIED : v & ~COPIED);
          expect(BigInt(withCopied(hi >>> 0, on)) << 32n | BigInt(lo >>> 0)).toBe(on ? v | COPIED : v & ~COPIED);
        }
        expect(word(b, 0)).toBe(0n);
        expect(word(b, 16)).toBe(0n);
      }),
      { numRuns: 2000 },
    );
  });

  it('encodes standard entries with every flag combination and round-trips them', () => {
    fc.assert(
      fc.property(alignedOffset, fc.boolean(), fc.boolean(), (off, copied, zero) => {
        const b = new Uint8Array(8);
        putEntry(b, 0, Number(off), copied, zero);
        expect(word(b, 0)).toBe(off | (copied ? COPIED : 0n) | (zero ? 1n : 0n));
        expect(entryOffset(entryHi(b, 0), entryLo(b, 0))).toBe(Number(off));
        const l1 = new Uint8Array(16);
        putL1Entry(l1, 1, Number(off), copied);
        expect(word(l1, 8)).toBe(off | (copied ? COPIED : 0n));
        expect(l1EntryOffset(l1, 1)).toBe(Number(off));
        expect(l1EntryCopied(l1, 1)).toBe(copied);
        // The cluster index fast path agrees with offset / cluster size for every cluster size.
        for (const cb of [9, 12, 16, 21]) {
          const aligned = (off >> BigInt(cb)) << BigInt(cb);
          const [hi, lo] = halves(aligned | (copied ? COPIED : 0n));
          expect(entryClusterIndex(hi, lo, cb)).toBe(Number(aligned >> BigInt(cb)));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('reads and writes whole L2 entries, standard and extended, with the bitmap halves in their places', () => {
    fc.assert(
      fc.property(u64, u32, u32, fc.integer({ min: 0, max: 3 }), (v, zero, alloc, idx) => {
        const [hi, lo] = halves(v);
        for (const ext of [false, true]) {
          const esz = ext ? 16 : 8;
          const b = new Uint8Array(4 * esz);
          const e = { hi: hi >>> 0, lo: lo >>> 0, zero: ext ? Number(zero) : 0, alloc: ext ? Number(alloc) : 0 };
          writeL2Entry(b, idx, ext, e);
          expect(word(b, idx * esz)).toBe(v);
          if (ext) {
            // Second word: zero bits are bits 63..32, allocation bits 31..0.
            expect(word(b, idx * 16 + 8)).toBe((zero << 32n) | alloc);
            expect(l2ZeroBitmap(b, idx)).toBe(Number(zero));
            expect(l2AllocBitmap(b, idx)).toBe(Number(alloc));
          }
          const back = readL2Entry(b, idx, ext);
          expect(sameL2Entry(back, e)).toBe(true);
          expect(l2EntryHost(back)).toBe(Number(v & OFFSET_FIELD));
          expect(l2EntryIsCopied(back)).toBe((v & COPIED) !== 0n);
          expect(l2EntryIsCompressed(back)).toBe((v & COMPRESSED) !== 0n);
          expect(l2EntryIsZero(back)).toBe((v & 1n) !== 0n);
          // Nothing outside the entry was written.
          for (let i = 0; i < 4; i++) if (i !== idx) expect(readL2Entry(b, i, ext)).toEqual(emptyL2Entry());
        }
      }),
      { numRuns: 500 },
    );
  });

  it('makes standard entries: host with COPIED, empty bitmaps', () => {
    const e = standardL2Entry(0x123456789a00 * 0x10);
    expect(BigInt(e.hi) << 32n | BigInt(e.lo)).toBe(COPIED | BigInt(0x123456789a00 * 0x10));
    expect(e.zero).toBe(0);
    expect(e.alloc).toBe(0);
    expect(standardL2Entry(65536, false).hi).toBe(0);
    expect(sameL2Entry(standardL2Entry(65536), standardL2Entry(65536 * 2))).toBe(false);
  });

  it('subcluster masks are bits [a, b) for every range', () => {
    for (let a = 0; a <= 32; a++) {
      for (let b = 0; b <= 32; b++) {
        const want = b <= a ? 0n : bits(a, b - 1);
        expect(BigInt(subclusterMask(a, b)), `[${a}, ${b})`).toBe(want);
      }
    }
    expect(subclusterMask(0, 32)).toBe(ALL_SUBCLUSTERS);
  });
});

describe('compressed cluster descriptor', () => {
  for (const cb of [9, 16, 21]) {
    const x = 62 - (cb - 8);
    const maxOffset = Math.min(2 ** x, 2 ** 52); // coffset + bytes stays an exact JS number
    it(`cluster_bits ${cb}: offset in bits 0..${x - 1}, extra sectors in bits ${x}..61`, () => {
      fc.assert(
        fc.property(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 2 ** cb }), (r, bytes) => {
          const coffset = Math.min(maxOffset - 1, Math.floor(r * maxOffset));
          const extra = Math.floor((coffset + bytes - 1) / 512) - Math.floor(coffset / 512);
          if (extra >= 2 ** (cb - 8)) {
            expect(() => encodeCompressedEntry(coffset, bytes, cb)).toThrow(RangeError);
            return;
          }
          const { hi, lo } = encodeCompressedEntry(coffset, bytes, cb);
          const v = (BigInt(hi) << 32n) | BigInt(lo);
          expect(v).toBe(COMPRESSED | (BigInt(extra) << BigInt(x)) | BigInt(coffset));
          const d = parseCompressedDescriptor(hi, lo, cb);
          expect(d.coffset).toBe(coffset);
          // csize runs from coffset to the end of the last sector, and covers the data.
          expect(d.csize).toBe((extra + 1) * 512 - (coffset % 512));
          expect(d.csize).toBeGreaterThanOrEqual(bytes);
          expect((d.coffset + d.csize) % 512).toBe(0);
          // COPIED (never set on compressed entries) does not disturb the decode.
          expect(parseCompressedDescriptor(withCopied(hi, true), lo, cb)).toEqual(d);
        }),
        { numRuns: 1000 },
      );
    });

    it(`cluster_bits ${cb}: the largest sector count fits, one more does not, offsets past 2^${x} are refused`, () => {
      const decode = (e: { hi: number; lo: number }) => parseCompressedDescriptor(e.hi, e.lo, cb);
      const full = 2 ** cb; // a whole cluster at a sector boundary uses 2^(cb-9) sectors
      expect(decode(encodeCompressedEntry(512, full, cb))).toEqual({ coffset: 512, csize: full });
      // Starting one byte into a sector, a whole cluster spans one more sector.
      expect(decode(encodeCompressedEntry(513, full, cb)).csize).toBe(full + 511);
      // The field is cb-8 bits: at most 2^(cb-8) sectors in all, i.e. two clusters' worth.
      const most = 2 ** (cb - 8) * 512;
      expect(decode(encodeCompressedEntry(1024, most, cb))).toEqual({ coffset: 1024, csize: most });
      expect(() => encodeCompressedEntry(1024, most + 1, cb)).toThrow(RangeError);
      expect(() => encodeCompressedEntry(1025, most, cb)).toThrow(RangeError);
      if (x < 53) expect(() => encodeCompressedEntry(2 ** x, 100, cb)).toThrow(RangeError);
      expect(() => encodeCompressedEntry(0, 0, cb)).toThrow(RangeError);
    });
  }

  it('decodes the compressed clusters qemu-img writes (cluster_bits 9, 16, 21) to streams that inflate', () => {
    const dir = tmpDir('qcow2-l2-entry-');
    const raw = path.join(dir, 'src.raw');
    // Compressible, not all zero, different per cluster.
    const data = new Uint8Array(4 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i >> 10) % 7 === 0 ? 0 : (i * 31 + (i >> 12)) & 0x3f;
    fs.writeFileSync(raw, data);
    for (const cb of [9, 16, 21]) {
      const cs = 2 ** cb;
      const img = path.join(dir, `c${cb}.qcow2`);
      qemuImg(['convert', '-q', '-c', '-O', 'qcow2', '-o', `cluster_size=${cs}`, raw, img]);
      const file = new Uint8Array(fs.readFileSync(img));
      const h = parseHeader(file.subarray(0, Math.min(file.length, cs)), img);
      const l1 = file.subarray(h.l1TableOffset, h.l1TableOffset + h.l1Size * 8);
      let seen = 0;
      const out = new Uint8Array(cs);
      for (let i = 0; i < h.l1Size; i++) {
        const l2 = l1EntryOffset(l1, i);
        if (!l2) continue;
        for (let j = 0; j < cs / 8; j++) {
          const guest = (i * (cs / 8) + j) * cs;
          if (guest >= data.length) break;
          const p = l2 + j * 8;
          if (!compressedAt(file, p)) continue;
          expect(copiedAt(file, p)).toBe(false);
          const d = parseCompressedDescriptor(entryHi(file, p), entryLo(file, p), cb);
          expect(d.coffset + d.csize).toBeLessThanOrEqual(Math.ceil(file.length / 512) * 512);
          const input = new Uint8Array(d.csize);
          input.set(file.subarray(d.coffset, Math.min(file.length, d.coffset + d.csize)));
          expect(decompressCluster(0, input, out), `cluster_bits ${cb}, guest ${guest}`).toBe(true);
          expect(Buffer.compare(Buffer.from(out), Buffer.from(data.subarray(guest, guest + cs)))).toBe(0);
          seen++;
        }
      }
      // Sampled clusters hold data (a few are all zero and stay unallocated).
      expect(seen, `cluster_bits ${cb}`).toBeGreaterThan(Math.min(8, data.length / cs / 2));
    }
  });
});
