// Hierarchical bitmap, the bit-level core of QEMU's util/hbitmap.c idea.
//
// Level 0 holds the bits themselves; bit j of level k+1 is set exactly when
// word j of level k is non-zero. Searching for the next set bit climbs while
// words are empty and descends on the first non-empty word, so "next dirty"
// over an empty 2^24-bit map reads a handful of words instead of 2^18.
// This module only knows bit indices; src/wasm/hbitmap.ts maps bytes and
// granularity onto bits, as QEMU's hbitmap does with items.
//
// Header (in wasm memory, 8-byte aligned, HEADER bytes), then the levels:
//
//   hdr +0   u32 nbits          bits at level 0
//       +4   u32 nlevels        1..MAX_LEVELS; the top level is one word
//       +8   u32 count          set bits at level 0
//       +16  u32 ptr[8]         address of each level's first word
//       +48  u32 words[8]       words (u64) in each level
//   hdr+HEADER  level 0 words | level 1 words | ... | top word
//
// Bits at or past nbits in the last level-0 word are always zero.

const HEADER: usize = 96;
const MAX_LEVELS: u32 = 8;

// @ts-ignore: decorator
@inline function levelPtr(hdr: usize, level: u32): usize {
  return <usize>load<u32>(hdr + 16 + (<usize>level << 2));
}
// @ts-ignore: decorator
@inline function levelWords(hdr: usize, level: u32): u32 {
  return load<u32>(hdr + 48 + (<usize>level << 2));
}
// @ts-ignore: decorator
@inline function nlevels(hdr: usize): u32 {
  return load<u32>(hdr, 4);
}

/** Bytes needed for a bitmap of `nbits` bits (header included). */
export function hbBytes(nbits: u32): u32 {
  let total: u32 = <u32>HEADER;
  let words: u32 = max<u32>(1, (nbits + 63) >> 6);
  for (;;) {
    total += words << 3;
    if (words == 1) break;
    words = (words + 63) >> 6;
  }
  return total;
}

/** Lays out and zeroes a bitmap of `nbits` bits at `hdr` (hbBytes(nbits) bytes). */
export function hbInit(hdr: usize, nbits: u32): void {
  memory.fill(hdr, 0, hbBytes(nbits));
  store<u32>(hdr, nbits, 0);
  let p = hdr + HEADER;
  let words: u32 = max<u32>(1, (nbits + 63) >> 6);
  let level: u32 = 0;
  for (;;) {
    store<u32>(hdr + 16 + (<usize>level << 2), <u32>p);
    store<u32>(hdr + 48 + (<usize>level << 2), words);
    p += <usize>words << 3;
    level++;
    if (words == 1 || level == MAX_LEVELS) break;
    words = (words + 63) >> 6;
  }
  store<u32>(hdr, level, 4);
}

export function hbCount(hdr: usize): u32 {
  return load<u32>(hdr, 8);
}

export function hbGet(hdr: usize, bit: u32): bool {
  const w = load<u64>(levelPtr(hdr, 0) + (<usize>(bit >> 6) << 3));
  return ((w >> (<u64>bit & 63)) & 1) != 0;
}

// Recomputes the summary bits above level-0 words [wa, wb] (inclusive).
function updateParents(hdr: usize, wa: u32, wb: u32): void {
  const n = nlevels(hdr);
  for (let level: u32 = 0; level + 1 < n; level++) {
    const child = levelPtr(hdr, level);
    const parent = levelPtr(hdr, level + 1);
    // One parent word at a time: gather "child non-zero" for its children in range.
    for (let pw = wa >> 6; pw <= wb >> 6; pw++) {
      const lo = max<u32>(wa, pw << 6);
      const hi = min<u32>(wb, (pw << 6) + 63);
      let nz: u64 = 0;
      for (let j = lo; j <= hi; j++) {
        nz |= <u64>(load<u64>(child + (<usize>j << 3)) != 0) << (<u64>j & 63);
      }
      const span: u64 = hi - lo == 63 ? <u64>-1 : ((<u64>1 << (<u64>(hi - lo) + 1)) - 1) << (<u64>lo & 63);
      const pp = parent + (<usize>pw << 3);
      store<u64>(pp, (load<u64>(pp) & ~span) | nz);
    }
    wa >>= 6;
    wb >>= 6;
  }
}

// Mask of bits lo..hi (0..63) in one word.
// @ts-ignore: decorator
@inline function spanMask(lo: u32, hi: u32): u64 {
  return (<u64>-1 >> (<u64>63 - <u64>hi)) & (<u64>-1 << <u64>lo);
}

/** Sets bits first..last (inclusive, last < nbits). */
export function hbSet(hdr: usize, first: u32, last: u32): void {
  const base = levelPtr(hdr, 0);
  const wa = first >> 6;
  const wb = last >> 6;
  let delta: i64 = 0;
  for (let w = wa; w <= wb; w++) {
    const p = base + (<usize>w << 3);
    const old = load<u64>(p);
    const mask = spanMask(w == wa ? first & 63 : 0, w == wb ? last & 63 : 63);
    const val = old | mask;
    delta += <i64>popcnt<u64>(val) - <i64>popcnt<u64>(old);
    store<u64>(p, val);
  }
  store<u32>(hdr, <u32>(<i64>load<u32>(hdr, 8) + delta), 8);
  updateParents(hdr, wa, wb);
}

/** Clears bits first..last (inclusive, last < nbits). */
export function hbReset(hdr: usize, first: u32, last: u32): void {
  const base = levelPtr(hdr, 0);
  const wa = first >> 6;
  const wb = last >> 6;
  let delta: i64 = 0;
  for (let w = wa; w <= wb; w++) {
    const p = base + (<usize>w << 3);
    const old = load<u64>(p);
    const mask = spanMask(w == wa ? first & 63 : 0, w == wb ? last & 63 : 63);
    const val = old & ~mask;
    delta += <i64>popcnt<u64>(val) - <i64>popcnt<u64>(old);
    store<u64>(p, val);
  }
  store<u32>(hdr, <u32>(<i64>load<u32>(hdr, 8) + delta), 8);
  updateParents(hdr, wa, wb);
}

/** Clears every bit. */
export function hbResetAll(hdr: usize): void {
  const n = nlevels(hdr);
  for (let level: u32 = 0; level < n; level++) memory.fill(levelPtr(hdr, level), 0, <usize>levelWords(hdr, level) << 3);
  store<u32>(hdr, 0, 8);
}

/** First set bit in [start, end) or -1 (end <= nbits). */
export function hbNextDirty(hdr: usize, start: u32, end: u32): i32 {
  if (start >= end) return -1;
  const n = nlevels(hdr);
  let level: u32 = 0;
  let pos: u64 = start; // bit index within `level`
  for (;;) {
    const widx = pos >> 6;
    const w = load<u64>(levelPtr(hdr, level) + (<usize>widx << 3)) & (<u64>-1 << (pos & 63));
    if (w != 0) {
      let bit: u64 = (widx << 6) + ctz<u64>(w);
      while (level > 0) {
        level--;
        bit = (bit << 6) + ctz<u64>(load<u64>(levelPtr(hdr, level) + (<usize>bit << 3)));
      }
      return bit < <u64>end ? <i32>bit : -1;
    }
    if (level + 1 >= n) return -1;
    // Next word of this level = next bit of the level above.
    pos = widx + 1;
    if (pos >= <u64>levelWords(hdr, level)) return -1;
    level++;
    if (pos << (<u64>6 * level) >= <u64>end) return -1;
  }
  return -1; // not reached
}

/** First clear bit in [start, end) or -1 (end <= nbits). A flat scan, as QEMU's. */
export function hbNextZero(hdr: usize, start: u32, end: u32): i32 {
  if (start >= end) return -1;
  const base = levelPtr(hdr, 0);
  let widx = start >> 6;
  const lastWord = (end - 1) >> 6;
  let w = ~load<u64>(base + (<usize>widx << 3)) & (<u64>-1 << (<u64>start & 63));
  while (w == 0) {
    widx++;
    if (widx > lastWord) return -1;
    // Skip full words two at a time.
    while (widx + 1 <= lastWord && i64x2.all_true(i64x2.eq(v128.load(base + (<usize>widx << 3)), i64x2.splat(-1)))) widx += 2;
    w = ~load<u64>(base + (<usize>widx << 3));
  }
  const bit = (widx << 6) + <u32>ctz<u64>(w);
  return bit < end ? <i32>bit : -1;
}

/**
 * Writes up to `max` set bits from [start, end) as u32 at `out`; returns how
 * many. Lets JS walk a dense bitmap without one call per bit (HBitmapIter).
 */
export function hbCollect(hdr: usize, start: u32, end: u32, out: usize, max: u32): u32 {
  let n: u32 = 0;
  let pos = start;
  const base = levelPtr(hdr, 0);
  while (n < max && pos < end) {
    const next = hbNextDirty(hdr, pos, end);
    if (next < 0) break;
    // Drain the word the next bit lies in without climbing the levels again.
    let widx = <u32>next >> 6;
    let w = load<u64>(base + (<usize>widx << 3)) & (<u64>-1 << (<u64>next & 63));
    while (w != 0 && n < max) {
      const bit = (widx << 6) + <u32>ctz<u64>(w);
      if (bit >= end) return n;
      store<u32>(out + (<usize>n << 2), bit);
      n++;
      w &= w - 1;
      pos = bit + 1;
    }
  }
  return n;
}

/** dst |= src (same nbits). */
export function hbMerge(dst: usize, src: usize): void {
  const words = levelWords(dst, 0);
  const d = levelPtr(dst, 0);
  const s = levelPtr(src, 0);
  let delta: i64 = 0;
  for (let w: u32 = 0; w < words; w++) {
    const old = load<u64>(d + (<usize>w << 3));
    const val = old | load<u64>(s + (<usize>w << 3));
    delta += <i64>popcnt<u64>(val) - <i64>popcnt<u64>(old);
    store<u64>(d + (<usize>w << 3), val);
  }
  store<u32>(dst, <u32>(<i64>load<u32>(dst, 8) + delta), 8);
  updateParents(dst, 0, words - 1);
}

/** Copies the first min(nbits of both) bits of src into the freshly initialised dst (resize). */
export function hbCopyPrefix(dst: usize, src: usize): void {
  const nbits = min<u32>(load<u32>(dst), load<u32>(src));
  if (nbits == 0) return;
  const words = (nbits + 63) >> 6;
  const d = levelPtr(dst, 0);
  memory.copy(d, levelPtr(src, 0), <usize>words << 3);
  // Bits past the new end of a shrunk map are dropped.
  if (nbits & 63) {
    const p = d + (<usize>(words - 1) << 3);
    store<u64>(p, load<u64>(p) & ((<u64>1 << (<u64>nbits & 63)) - 1));
  }
  let count: u32 = 0;
  for (let w: u32 = 0; w < words; w++) count += <u32>popcnt<u64>(load<u64>(d + (<usize>w << 3)));
  store<u32>(dst, count, 8);
  updateParents(dst, 0, words - 1);
}

/**
 * Replaces level-0 words [firstWord, firstWord + nwords) with the u64 words at
 * `src` (little-endian: bit i of the data is bit firstWord*64 + i), dropping
 * bits past nbits, and updates count and summaries.
 */
export function hbDeserialize(hdr: usize, src: usize, firstWord: u32, nwords: u32): void {
  if (nwords == 0) return;
  const nbits = load<u32>(hdr);
  const base = levelPtr(hdr, 0);
  let delta: i64 = 0;
  for (let k: u32 = 0; k < nwords; k++) {
    const w = firstWord + k;
    const p = base + (<usize>w << 3);
    let val = load<u64>(src + (<usize>k << 3));
    const lo = w << 6;
    if (lo + 64 > nbits) val = nbits > lo ? val & ((<u64>1 << <u64>(nbits - lo)) - 1) : 0;
    const old = load<u64>(p);
    delta += <i64>popcnt<u64>(val) - <i64>popcnt<u64>(old);
    store<u64>(p, val);
  }
  store<u32>(hdr, <u32>(<i64>load<u32>(hdr, 8) + delta), 8);
  updateParents(hdr, firstWord, firstWord + nwords - 1);
}

/** Address of level 0 (serialization reads it directly). */
export function hbLevel0(hdr: usize): usize {
  return levelPtr(hdr, 0);
}
