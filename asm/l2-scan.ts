// The WebAssembly twin of src/formats/qcow2/l2-scan.ts: classify big-endian
// qcow2 L2 entries and count a run of alike entries. Semantics are exactly
// the TS reference's (tested against it); see that file for the entry layout.
//
// One rule decides every entry after the first. Let M be the bits that fix
// the kind (compressed; offset and zero flag unless compressed; COPIED when
// matched). Then entry & M must equal the first entry & M, plus one cluster
// per step for the kinds with a host offset; an extended entry's bitmap must
// also equal the first one's (but a compressed cluster's bitmap holds no
// kind). For cluster sizes 512 B..2^55 B that rule is exactly the
// reference's kind + COPIED + contiguity test, so the SIMD loop and the
// scalar tail both apply it and either may end the run.
//
// The SIMD loop tests eight standard (or four extended) entries per branch:
// byte-swap each 64-bit lane with one pshufb (i8x16.swizzle with a constant
// in-range mask; V8 on x64 lowers the equivalent i8x16.shuffle to six
// instructions, enough to make the swap the bulk of the loop),
// XOR with the expected entries, OR the differences together, mask, test.
// Runs without a host offset compare raw big-endian bytes against the
// pre-swapped expected entry and need no swap at all.

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
const COPIED_BIT: u64 = 1 << 63;

// @ts-ignore: decorator
@inline function be64(p: usize): u64 {
  return bswap<u64>(load<u64>(p));
}

// @ts-ignore: decorator
@inline function be64x2(v: v128): v128 {
  return i8x16.swizzle(v, i8x16(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8));
}

// @ts-ignore: decorator
@inline function differs4(p: usize, w1: v128, w2: v128, w3: v128, w4: v128): v128 {
  // Bits where four byte-swapped vectors at p differ from the expected ones.
  return v128.or(
    v128.or(v128.xor(be64x2(v128.load(p)), w1), v128.xor(be64x2(v128.load(p, 16)), w2)),
    v128.or(v128.xor(be64x2(v128.load(p, 32)), w3), v128.xor(be64x2(v128.load(p, 48)), w4)),
  );
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
  // Offsets are multiples of 512 below 2^56: with a cluster size outside
  // that range no offset can follow another one, as in the reference.
  if (contiguous && (clusterBits < 9 || clusterBits > 55)) return 1;
  let m: u64 = kind == L2_COMPRESSED ? COMPRESSED_BIT : COMPRESSED_BIT | OFFSET_MASK | (extended ? 0 : 1);
  if (matchCopied) m |= COPIED_BIT;
  const bmMask: u64 = extended && kind != L2_COMPRESSED ? ~(<u64>0) : 0;
  const bmWant = bm0 & bmMask;
  const delta: u64 = contiguous ? (<u64>1) << clusterBits : 0;
  let x = (e0 & m) + delta; // what entry i & m must be

  let i = start + 1;
  while (i < end) {
    // Expected entries are exact only while x + k * delta stays inside the
    // offset field (XOR-then-mask would let a carry out of bit 55 vanish), so
    // the SIMD loop stops where the offset would overflow; near it the scalar
    // rule takes over and ends the run.
    let segEnd = end;
    if (contiguous) {
      const room: u64 = x & ~m ? 1 : ((OFFSET_MASK - (x & OFFSET_MASK)) >> clusterBits) + 1;
      if (<u64>(end - i) > room) segEnd = i + <i32>room;
    }
    let p = ptr + (<usize>i << shift);
    const i0 = i;
    if (!contiguous) {
      // Constant expected entry: compare the raw big-endian bytes.
      const want = extended ? i64x2(bswap<u64>(x), bswap<u64>(bmWant)) : i64x2.splat(bswap<u64>(x));
      const mask = extended ? i64x2(bswap<u64>(m), bswap<u64>(bmMask)) : i64x2.splat(bswap<u64>(m));
      const per = extended ? 4 : 8;
      while (i + per <= segEnd) {
        const d = v128.or(
          v128.or(v128.xor(v128.load(p), want), v128.xor(v128.load(p, 16), want)),
          v128.or(v128.xor(v128.load(p, 32), want), v128.xor(v128.load(p, 48), want)),
        );
        if (v128.any_true(v128.and(d, mask))) break;
        i += per;
        p += 64;
      }
    } else if (!extended) {
      // Two entries per vector; the expected entries advance by 8 clusters.
      let w1 = i64x2(x, x + delta);
      let w2 = i64x2.add(w1, i64x2.splat(2 * delta));
      let w3 = i64x2.add(w1, i64x2.splat(4 * delta));
      let w4 = i64x2.add(w1, i64x2.splat(6 * delta));
      const step = i64x2.splat(8 * delta);
      const mask = i64x2.splat(m);
      while (i + 8 <= segEnd) {
        if (v128.any_true(v128.and(differs4(p, w1, w2, w3, w4), mask))) break;
        w1 = i64x2.add(w1, step);
        w2 = i64x2.add(w2, step);
        w3 = i64x2.add(w3, step);
        w4 = i64x2.add(w4, step);
        i += 8;
        p += 64;
      }
    } else {
      // One [entry, bitmap] per vector; only the entry lane advances.
      let w1 = i64x2(x, bmWant);
      let w2 = i64x2(x + delta, bmWant);
      let w3 = i64x2(x + 2 * delta, bmWant);
      let w4 = i64x2(x + 3 * delta, bmWant);
      const step = i64x2(4 * delta, 0);
      const mask = i64x2(m, bmMask);
      while (i + 4 <= segEnd) {
        if (v128.any_true(v128.and(differs4(p, w1, w2, w3, w4), mask))) break;
        w1 = i64x2.add(w1, step);
        w2 = i64x2.add(w2, step);
        w3 = i64x2.add(w3, step);
        w4 = i64x2.add(w4, step);
        i += 4;
        p += 64;
      }
    }
    x += <u64>(i - i0) * delta;
    // The scalar rule finishes the segment: either less than one group of
    // entries is left, or the group the SIMD test rejected holds the entry
    // that ends the run.
    while (i < segEnd) {
      const q = ptr + (<usize>i << shift);
      if ((be64(q) & m) != x) return i - start;
      if (extended && (be64(q + 8) & bmMask) != bmWant) return i - start;
      x += delta;
      i++;
    }
  }
  return i - start;
}
