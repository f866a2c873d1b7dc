// Reference counting kernels for image checks (src/wasm/refcount.ts wraps
// them; src/formats/qcow2/check-kernel.ts says what the masks mean). They
// know bytes, not formats: a table of big-endian 64-bit entries whose
// common case is decided by masks the caller passes, a counter array of
// 8, 16 or 32-bit cells, and two mark bitmaps. Each kernel handles the
// common case and stops at the first entry it does not, returning its
// index, so the caller's general code reports it and resumes after it.
//
// State that lives across calls (the fragmentation walk, the highest used
// cluster, the mark verdict) sits in a small block at `st`:
//   st+0  u64  next expected offset (0: none yet)
//   st+8  u64  allocated entries
//   st+16 u64  fragmented entries
//   st+24 u64  highest cluster whose count or stored refcount is nonzero
//   st+32 u32  nonzero once a marked cluster's stored refcount disagrees

// @ts-ignore: decorator
@inline function be64(p: usize): u64 {
  return bswap<u64>(load<u64>(p));
}

// @ts-ignore: decorator
@inline function getCount(counts: usize, width: i32, k: u64): u32 {
  if (width == 2) return <u32>load<u16>(counts + (<usize>k << 1));
  if (width == 1) return <u32>load<u8>(counts + <usize>k);
  return load<u32>(counts + (<usize>k << 2));
}

// @ts-ignore: decorator
@inline function putCount(counts: usize, width: i32, k: u64, v: u32): void {
  if (width == 2) store<u16>(counts + (<usize>k << 1), <u16>v);
  else if (width == 1) store<u8>(counts + <usize>k, <u8>v);
  else store<u32>(counts + (<usize>k << 2), v);
}

// @ts-ignore: decorator
@inline function setBit(map: usize, k: u64): void {
  const p = map + <usize>(k >> 3);
  store<u8>(p, load<u8>(p) | (<u8>1 << <u8>(k & 7)));
}

// @ts-ignore: decorator
@inline function getBit(map: usize, k: u64): u32 {
  return (<u32>load<u8>(map + <usize>(k >> 3)) >> <u32>(k & 7)) & 1;
}

/**
 * Counts entries [from, n) of the table at `ptr` (entries `stride` bytes
 * apart; with stride 16 the second word is a subcluster bitmap, zero half
 * high, allocation half low). Per entry e:
 *  - skip when (e & ~skipMask) == 0 and (stride 8 or the allocation half is 0);
 *  - common when (e & rejectMask) == 0, (e & offsetMask) != 0, the bitmap
 *    halves share no bit, k = offset >> clusterBits < limit and counts[k] <
 *    max: counts[k]++, the fragmentation walk when `frag`, and when `marks`
 *    is not 0 bit k is set in the map at `marks` (entry & flagBit) or in
 *    the one at `marks + markBytes` (not);
 *  - anything else: returns its index (the caller handles it).
 * Returns n when every entry was handled.
 */
export function refCountTable(
  ptr: usize,
  from: i32,
  n: i32,
  stride: i32,
  skipMask: u64,
  rejectMask: u64,
  offsetMask: u64,
  flagBit: u64,
  clusterBits: i32,
  counts: usize,
  width: i32,
  max: u32,
  limit: u64,
  frag: bool,
  marks: usize,
  markBytes: usize,
  st: usize,
): i32 {
  const cs: u64 = (<u64>1) << clusterBits;
  let next = load<u64>(st);
  let allocated = load<u64>(st, 8);
  let fragmented = load<u64>(st, 16);
  const notSkip = ~skipMask;
  // Eight entries per step where they are plain, with one set of flags and
  // contiguous clusters (a preallocated image): one vector compare against
  // the expected entries, one vector add on the counters. Standard tables
  // with 16-bit counters only; after a group that does not qualify, eight
  // entries go through the scalar rules before the next try.
  const grouped = stride == 8 && width == 2 && max <= 0xffff;
  const maxV = i16x8.splat(<i16>max);
  const sw = i8x16(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  let scalarUntil = from;
  let i = from;
  for (; i < n; i++) {
    if (grouped && i >= scalarUntil && i + 8 <= n) {
      const p = ptr + (<usize>i << 3);
      const x = be64(p);
      const off = x & offsetMask;
      const k = off >> clusterBits;
      if ((x & rejectMask) == 0 && off != 0 && k + 8 <= limit) {
        const w1 = i64x2(x, x + cs);
        const step = i64x2.splat(2 * cs);
        const w2 = i64x2.add(w1, step);
        const w3 = i64x2.add(w2, step);
        const w4 = i64x2.add(w3, step);
        const d = v128.or(
          v128.or(v128.xor(i8x16.swizzle(v128.load(p), sw), w1), v128.xor(i8x16.swizzle(v128.load(p, 16), sw), w2)),
          v128.or(v128.xor(i8x16.swizzle(v128.load(p, 32), sw), w3), v128.xor(i8x16.swizzle(v128.load(p, 48), sw), w4)),
        );
        const cp = counts + (<usize>k << 1);
        const c = v128.load(cp);
        if (!v128.any_true(d) && i16x8.all_true(i16x8.lt_u(c, maxV))) {
          v128.store(cp, i16x8.add(c, i16x8.splat(1)));
          if (frag) {
            allocated += 8;
            if (next != 0 && off != next) fragmented++;
            next = off + 8 * cs;
          }
          if (marks != 0) {
            const mp = (x & flagBit ? marks : marks + markBytes) + <usize>(k >> 3);
            const b = <u32>(k & 7);
            const bits = <u32>0xff << b;
            store<u8>(mp, load<u8>(mp) | <u8>bits);
            if (b) store<u8>(mp, load<u8>(mp, 1) | <u8>(bits >> 8), 1);
          }
          i += 7;
          continue;
        }
      }
      scalarUntil = i + 8;
    }
    const p = ptr + <usize>i * <usize>stride;
    const e = be64(p);
    let bm: u64 = 0;
    if (stride == 16) bm = be64(p + 8);
    if ((e & notSkip) == 0 && <u32>bm == 0) continue;
    if (e & rejectMask) break;
    const off = e & offsetMask;
    if (off == 0) break;
    if (((<u32>(bm >> 32)) & <u32>bm) != 0) break;
    const k = off >> clusterBits;
    if (k >= limit) break;
    const v = getCount(counts, width, k);
    if (v >= max) break;
    putCount(counts, width, k, v + 1);
    if (frag) {
      allocated++;
      if (next != 0 && off != next) fragmented++;
      next = off + cs;
    }
    if (marks != 0) setBit(e & flagBit ? marks : marks + markBytes, k);
  }
  store<u64>(st, next);
  store<u64>(st, allocated, 8);
  store<u64>(st, fragmented, 16);
  return i;
}

/**
 * Compares stored refcounts (big-endian, `bits` 8, 16 or 32 wide, at `blk`;
 * entry j is cluster base + j) with counts[base + j] for j in [from, n).
 * Returns the first j where they differ (n when none does). Along the way
 * st+24 becomes the highest cluster with a nonzero refcount, and when
 * `marks` is not 0 a cluster marked in the first map (flagged) with a
 * stored refcount other than 1, or in the second (not flagged) with
 * refcount 1, makes st+32 nonzero.
 */
export function refCompareBlock(
  blk: usize,
  from: i32,
  n: i32,
  bits: i32,
  counts: usize,
  width: i32,
  base: u64,
  marks: usize,
  markBytes: usize,
  st: usize,
): i32 {
  let j = from;
  if (bits == 16 && width == 2) {
    // The default layout: scalar up to a cluster that starts a mark byte,
    // then eight entries per vector, then scalar again.
    const head = min<i32>(n, j + <i32>((8 - ((base + <u64>j) & 7)) & 7));
    j = compareScalar(blk, j, head, bits, counts, width, base, marks, markBytes, st);
    if (j < head) return j;
    j = compare16x8(blk, j, n, counts, base, marks, markBytes, st);
  }
  return compareScalar(blk, j, n, bits, counts, width, base, marks, markBytes, st);
}

function compare16x8(blk: usize, j: i32, n: i32, counts: usize, base: u64, marks: usize, markBytes: usize, st: usize): i32 {
  let highest = load<u64>(st, 24);
  let bad = load<u32>(st, 32);
  const sw = i8x16(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  const one = i16x8.splat(1);
  const zero = i16x8.splat(0);
  const c0 = counts + (<usize>base << 1);
  while (j + 8 <= n) {
    const s = i8x16.swizzle(v128.load(blk + (<usize>j << 1)), sw);
    if (v128.any_true(v128.xor(s, v128.load(c0 + (<usize>j << 1))))) break;
    const nz = i16x8.bitmask(i16x8.ne(s, zero));
    if (nz) highest = base + <u64>j + <u64>(31 - clz<u32>(nz));
    if (marks != 0) {
      const ones = i16x8.bitmask(i16x8.eq(s, one));
      const byte = <usize>((base + <u64>j) >> 3);
      const flagged = <u32>load<u8>(marks + byte);
      const plain = <u32>load<u8>(marks + markBytes + byte);
      bad |= (ones & plain) | (~ones & flagged & 0xff);
    }
    j += 8;
  }
  store<u64>(st, highest, 24);
  store<u32>(st, bad, 32);
  return j;
}

function compareScalar(
  blk: usize,
  j: i32,
  n: i32,
  bits: i32,
  counts: usize,
  width: i32,
  base: u64,
  marks: usize,
  markBytes: usize,
  st: usize,
): i32 {
  let highest = load<u64>(st, 24);
  let bad = load<u32>(st, 32);
  for (; j < n; j++) {
    let stored: u32;
    if (bits == 16) stored = <u32>bswap<u16>(load<u16>(blk + (<usize>j << 1)));
    else if (bits == 8) stored = <u32>load<u8>(blk + <usize>j);
    else stored = bswap<u32>(load<u32>(blk + (<usize>j << 2)));
    const k = base + <u64>j;
    if (stored != getCount(counts, width, k)) break;
    if (stored != 0) highest = k;
    if (marks != 0) {
      if (stored == 1) bad |= getBit(marks + markBytes, k);
      else bad |= getBit(marks, k);
    }
  }
  store<u64>(st, highest, 24);
  store<u32>(st, bad, 32);
  return j;
}
