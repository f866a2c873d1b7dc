// Zero detection with QEMU's buffer_is_zero semantics (util/bufferiszero.c):
// true when every byte of [ptr, ptr + len) is zero, for any length and any
// alignment. Same shape as QEMU's vector path: an unaligned first vector,
// aligned vectors OR-ed together in an unrolled loop with one test per
// 256 bytes, and an unaligned last vector that may overlap what was already
// read (re-reading bytes is harmless for an OR).

export function bufferIsZero(ptr: usize, len: usize): bool {
  const end = ptr + len;
  if (len < 32) {
    // Too short for the vector path: words, then bytes.
    let acc: u64 = 0;
    let p = ptr;
    for (; p + 8 <= end; p += 8) acc |= load<u64>(p);
    for (; p < end; p++) acc |= <u64>load<u8>(p);
    return acc == 0;
  }
  // Head: the first 16 bytes wherever they lie; then continue aligned.
  let acc = v128.load(ptr);
  let p = (ptr + 16) & ~(<usize>15);
  // Most non-zero buffers fail in the first vector: test it before the loop.
  if (v128.any_true(acc)) return false;
  while (p + 256 <= end) {
    const a = v128.or(v128.or(v128.load(p), v128.load(p, 16)), v128.or(v128.load(p, 32), v128.load(p, 48)));
    const b = v128.or(v128.or(v128.load(p, 64), v128.load(p, 80)), v128.or(v128.load(p, 96), v128.load(p, 112)));
    const c = v128.or(v128.or(v128.load(p, 128), v128.load(p, 144)), v128.or(v128.load(p, 160), v128.load(p, 176)));
    const d = v128.or(v128.or(v128.load(p, 192), v128.load(p, 208)), v128.or(v128.load(p, 224), v128.load(p, 240)));
    acc = v128.or(v128.or(a, b), v128.or(c, d));
    if (v128.any_true(acc)) return false;
    p += 256;
  }
  for (; p + 16 <= end; p += 16) acc = v128.or(acc, v128.load(p));
  // Tail: the last 16 bytes, overlapping the loop's last vector if needed.
  acc = v128.or(acc, v128.load(end - 16));
  return !v128.any_true(acc);
}

// End of the run of `block`-byte blocks that starts at byte `from` of
// [ptr, ptr + len) and whose blocks are all zero (`zero`) or all not: the
// offset of the first block of the other kind, or len (the last block may be
// shorter). One call per convert step instead of one per block; a data block
// whose first byte is set is decided without a scan.
export function blockRunEnd(ptr: usize, len: usize, from: usize, block: usize, zero: bool): usize {
  let end = from;
  while (end < len) {
    const next = min(len, end + block);
    if (!zero && load<u8>(ptr + end) != 0) {
      end = next;
      continue;
    }
    if (bufferIsZero(ptr + end, next - end) != zero) break;
    end = next;
  }
  return end;
}
