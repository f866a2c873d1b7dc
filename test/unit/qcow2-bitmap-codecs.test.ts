/** The qcow2 bitmap directory entry and bitmap table entry codecs, and QEMU's entry constraints. */
import { describe, expect, it } from 'vitest';
import { dirEntryProblem, dirEntrySize, serializeBitmapDirectory, bitmapTableSizeFor, type Qcow2BitmapEntry } from '../../src/formats/qcow2/bitmap-directory.js';
import { bitmapTableEntryProblem, parseBitmapTableEntry, serializeBitmapTable } from '../../src/formats/qcow2/bitmap-table.js';

const cs = 65536;
const entry = (over: Partial<Qcow2BitmapEntry> = {}): Qcow2BitmapEntry => ({
  bitmapTableOffset: 5 * cs,
  bitmapTableSize: 1,
  flags: 2,
  type: 1,
  granularityBits: 16,
  name: 'b1',
  extraData: new Uint8Array(0),
  ...over,
});

describe('bitmap directory entries', () => {
  it('serializes with the spec layout, padded to 8 bytes', () => {
    const b = serializeBitmapDirectory([entry(), entry({ name: 'bitmap-two', bitmapTableOffset: 2 ** 40, flags: 3, granularityBits: 9 })]);
    expect(b.length).toBe(dirEntrySize(2) + dirEntrySize(10));
    expect(dirEntrySize(2)).toBe(32);
    const v = new DataView(b.buffer);
    expect(v.getUint32(0) * 2 ** 32 + v.getUint32(4)).toBe(5 * cs);
    expect([v.getUint32(8), v.getUint32(12), b[16], b[17], v.getUint16(18), v.getUint32(20)]).toEqual([1, 2, 1, 16, 2, 0]);
    expect(new TextDecoder().decode(b.subarray(24, 26))).toBe('b1');
    expect(v.getUint32(32)).toBe(256);
    expect(v.getUint32(44)).toBe(3);
    expect(b[49]).toBe(9);
  });

  it("applies QEMU's constraints", () => {
    const size = 100 * 1024 * 1024;
    expect(dirEntryProblem(entry(), cs, size)).toBeNull();
    expect(dirEntryProblem(entry({ granularityBits: 8 }), cs, size)).toMatch(/granularity_bits 8/);
    expect(dirEntryProblem(entry({ granularityBits: 32 }), cs, size)).toMatch(/granularity_bits 32/);
    expect(dirEntryProblem(entry({ bitmapTableOffset: cs + 512 }), cs, size)).toMatch(/not cluster aligned/);
    expect(dirEntryProblem(entry({ name: 'x'.repeat(1024) }), cs, size)).toMatch(/name_size/);
    expect(dirEntryProblem(entry({ flags: 4 }), cs, size)).toMatch(/reserved flags/);
    expect(dirEntryProblem(entry({ type: 2 }), cs, size)).toMatch(/type 2/);
    // One table entry at 64 KiB granularity covers 64 KiB * 8 * 64 KiB = 32 GiB; at 512 bytes, 256 MiB.
    expect(dirEntryProblem(entry({ granularityBits: 9 }), cs, 300 * 1024 * 1024)).toMatch(/too small/);
    expect(dirEntryProblem(entry({ granularityBits: 9, flags: 1 }), cs, 300 * 1024 * 1024)).toBeNull();
    expect(bitmapTableSizeFor(300 * 1024 * 1024, 512, cs)).toBe(2);
  });
});

describe('bitmap table entries', () => {
  it('round-trips offsets and reads the all-ones flag', () => {
    const t = serializeBitmapTable([0, 3 * cs, 2 ** 45]);
    expect([0, 1, 2].map((i) => parseBitmapTableEntry(t, i))).toEqual([
      { offset: 0, allOnes: false },
      { offset: 3 * cs, allOnes: false },
      { offset: 2 ** 45, allOnes: false },
    ]);
    t[7] = 1;
    expect(parseBitmapTableEntry(t, 0)).toEqual({ offset: 0, allOnes: true });
    expect(bitmapTableEntryProblem(t, 0, cs)).toBeNull();
  });

  it('names what is wrong with an entry', () => {
    const t = serializeBitmapTable([3 * cs, cs + 512, 0, 0]);
    t[15] |= 1; // all-ones with an offset
    expect(bitmapTableEntryProblem(t, 0, cs)).toBeNull();
    expect(bitmapTableEntryProblem(t, 1, cs)).toMatch(/all-ones flag/);
    t[15] &= ~1;
    expect(bitmapTableEntryProblem(t, 1, cs)).toMatch(/not cluster aligned/);
    t[16] = 0x80;
    expect(bitmapTableEntryProblem(t, 2, cs)).toMatch(/reserved bits/);
    t[31] = 2;
    expect(bitmapTableEntryProblem(t, 3, cs)).toMatch(/reserved bits/);
  });
});
