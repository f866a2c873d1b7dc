// The WebAssembly twin of src/formats/qcow2/l2-scan.ts: classify big-endian
// qcow2 L2 entries and count a run of alike entries. Semantics are exactly
// the TS reference's (tested against it); see that file for the entry layout.
//
// Fast path: a run is mostly entries that equal the previous entry plus one
// cluster (allocated runs) or equal it outright (unallocated/zero/compressed
// runs). Whole-entry equality with that prediction implies same kind, same
// COPIED flag and contiguity, so SIMD compares predicted and actual entries
// two at a time (one at a time for 16-byte extended entries). The first entry
// that is not predicted exactly is judged by the scalar rules, which may still
// accept it (e.g. different reserved bits), and the fast path resumes from it.

const L2_UNALLOCATED: i32 = 0;
const L2_ZERO_PLAIN: i32 = 1;
const L2_ZERO_ALLOC: i32 = 2;
const L2_NORMAL: i32 = 3;
const L2_COMPRESSED: i32 = 4;
const L2_UNALLOCATED_ALLOC: i32 = 5;
const L2_MIXED: i32 = 6;

/** Bits 9-55: host cluster offset of a standard cluster. */
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED_BIT: u64 = 1 << 62;

// @ts-ignore: decorator
@inline function be64(p: usize): u64 {
  return bswap<u64>(load<u64>(p));
}

// @ts-ignore: decorator
@inline function be64x2(p: usize): v128 {
  // Byte-swap each 64-bit lane of an unaligned 16-byte load.
  const v = v128.load(p);
  return i8x16.shuffle(v, v, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
}

function entryKind(e: u64, bitmap: u64, extended: bool): i32 {
  if (e & COMPRESSED_BIT) return L2_COMPRESSED;
  const hasOffset = (e & OFFSET_MASK) != 0;
  if (!extended) {
    if (e & 1) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
    return hasOffset ? L2_NORMAL : L2_UNALLOCATED;
  }
  const zeroBits = <u32>(bitmap >> 32);
  const allocBits = <u32>bitmap;
  if (allocBits == 0 && zeroBits == 0) return hasOffset ? L2_UNALLOCATED_ALLOC : L2_UNALLOCATED;
  if (allocBits == 0xffffffff && zeroBits == 0 && hasOffset) return L2_NORMAL;
  if (zeroBits == 0xffffffff && allocBits == 0) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
  return L2_MIXED;
}

/** Kind of entry `index` of the slice at `ptr`. */
export function l2EntryKind(ptr: usize, index: i32, extended: bool): i32 {
  const p = ptr + (<usize>index << (extended ? 4 : 3));
  return entryKind(be64(p), extended ? be64(p + 8) : 0, extended);
}

/** See l2ScanRun in src/formats/qcow2/l2-scan.ts. */
export function l2ScanRun(ptr: usize, start: i32, end: i32, extended: bool, clusterBits: i32, matchCopied: bool): i32 {
  if (start >= end) return 0;
  const shift: usize = extended ? 4 : 3;
  const p0 = ptr + (<usize>start << shift);
  const e0 = be64(p0);
  const bm0: u64 = extended ? be64(p0 + 8) : 0;
  const kind = entryKind(e0, bm0, extended);
  if (kind == L2_MIXED) return 1;
  const contiguous = kind == L2_NORMAL || kind == L2_ZERO_ALLOC || kind == L2_UNALLOCATED_ALLOC;
  const clusterSize: u64 = (<u64>1) << clusterBits;
  const delta: u64 = contiguous ? clusterSize : 0;
  const copied = e0 >> 63;
  // Predicting "previous + one cluster" on whole entries is only exact while
  // the offset cannot carry out of bits 9-55; near that limit use the rules alone.
  const fast = !contiguous || (e0 & OFFSET_MASK) + <u64>(end - start) * clusterSize <= OFFSET_MASK;

  let prev = e0; // last accepted entry
  let i = start + 1;
  while (i < end) {
    if (fast) {
      if (!extended) {
        let want = i64x2(prev + delta, prev + 2 * delta);
        const step = i64x2.splat(2 * delta);
        const step2 = i64x2.splat(4 * delta);
        const step3 = i64x2.splat(6 * delta);
        const step4 = i64x2.splat(8 * delta);
        let p = ptr + (<usize>i << 3);
        // Eight entries per test while they last, then two.
        while (i + 8 <= end) {
          const h0 = v128.and(i64x2.eq(be64x2(p), want), i64x2.eq(be64x2(p + 16), i64x2.add(want, step)));
          const h1 = v128.and(i64x2.eq(be64x2(p + 32), i64x2.add(want, step2)), i64x2.eq(be64x2(p + 48), i64x2.add(want, step3)));
          if (v128.any_true(v128.not(v128.and(h0, h1)))) break;
          want = i64x2.add(want, step4);
          i += 8;
          p += 64;
        }
        while (i + 2 <= end && i64x2.all_true(i64x2.eq(be64x2(p), want))) {
          want = i64x2.add(want, step);
          i += 2;
          p += 16;
        }
        prev = i64x2.extract_lane(want, 0) - delta;
      } else {
        let want = i64x2(prev + delta, bm0);
        const step = i64x2(delta, 0);
        let p = ptr + (<usize>i << 4);
        while (i < end && i64x2.all_true(i64x2.eq(be64x2(p), want))) {
          want = i64x2.add(want, step);
          i++;
          p += 16;
        }
        prev = i64x2.extract_lane(want, 0) - delta;
      }
      if (i >= end) break;
    }
    // Scalar rules for the entry the prediction missed.
    const p = ptr + (<usize>i << shift);
    const e = be64(p);
    if (entryKind(e, extended ? be64(p + 8) : 0, extended) != kind) break;
    if (matchCopied && e >> 63 != copied) break;
    if (contiguous && (e & OFFSET_MASK) != (prev & OFFSET_MASK) + clusterSize) break;
    prev = e;
    i++;
  }
  return i - start;
}
