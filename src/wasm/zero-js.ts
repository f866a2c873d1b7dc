/**
 * The plain JS zero test (QEMU's buffer_is_zero): the fallback before the
 * module loads, for short buffers outside wasm memory, and the reference the
 * SIMD kernel is tested against. block/buffers.ts uses it for its plain
 * provider, so there is one JS loop.
 */
export function bufferIsZeroJs(buf: Uint8Array): boolean {
  const n = buf.length;
  let i = 0;
  // Word-at-a-time where the view is 4-byte aligned; bytes for head and tail.
  if ((buf.byteOffset & 3) === 0 && n >= 64) {
    const words = new Uint32Array(buf.buffer, buf.byteOffset, n >>> 2);
    let acc = 0;
    for (let w = 0; w < words.length; w += 16) {
      const end = Math.min(w + 16, words.length);
      for (let k = w; k < end; k++) acc |= words[k]!;
      if (acc !== 0) return false;
    }
    i = words.length << 2;
  }
  for (; i < n; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * End of the run of `block`-byte blocks starting at `from` whose zero test
 * (bufferIsZeroJs) is `zero`: the offset of the first block of the other
 * kind, or buf.length (the last block may be shorter). The reference for the
 * wasm kernel and the fallback without it.
 */
export function blockRunEndJs(buf: Uint8Array, from: number, block: number, zero: boolean): number {
  const len = buf.length;
  let end = from;
  while (end < len) {
    const next = Math.min(len, end + block);
    // A data block whose first byte is set needs no scan.
    if (!zero && buf[end] !== 0) {
      end = next;
      continue;
    }
    if (bufferIsZeroJs(buf.subarray(end, next)) !== zero) break;
    end = next;
  }
  return end;
}
