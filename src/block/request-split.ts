/**
 * How discard requests are cut into the pieces a driver is
 * handed (QEMU's rules in bdrv_co_pdiscard;
 * write-zeroes uses the same head / middle / tail shape, in io.ts).
 *
 * The preferred alignment need not be a power of two (a device may want
 * 15 MiB), so nothing here masks: everything is `%` and multiplication.
 * Pieces: while the start is off the alignment, small pieces reach the next
 * boundary (cut where they can to the request alignment, so that the driver
 * below can still act on the aligned part of them); then whole aligned
 * chunks of at most the maximum; then the unaligned tail, cut the same way.
 * No piece that is not aligned crosses an alignment boundary, so a driver
 * may ignore such a piece without losing any aligned part of the range.
 */

/** One piece of a split request: [offset, offset + bytes). */
export interface RequestPiece {
  offset: number;
  bytes: number;
}

export function alignDown(n: number, align: number): number {
  return n - (n % align);
}

/**
 * The pieces of a discard of [offset, offset + bytes) for a node whose
 * discards want `align` (a multiple of `requestAlignment`) and take at most
 * `maxBytes` (0: no limit) at once.
 */
export function* discardPieces(
  offset: number,
  bytes: number,
  align: number,
  requestAlignment: number,
  maxBytes: number,
): Generator<RequestPiece> {
  const max = Math.max(align, alignDown(maxBytes || Number.MAX_SAFE_INTEGER, align));
  let head = offset % align;
  let tail = (offset + bytes) % align;
  while (bytes > 0) {
    let num = bytes;
    if (head) {
      num = Math.min(bytes, align - head);
      if (num % requestAlignment !== 0) num %= requestAlignment;
      head = (head + num) % align;
    } else if (tail) {
      if (num > align) {
        num -= tail;
      } else if (tail % requestAlignment !== 0 && tail > requestAlignment) {
        tail %= requestAlignment;
        num -= tail;
      }
    }
    num = Math.min(num, max);
    yield { offset, bytes: num };
    offset += num;
    bytes -= num;
  }
}
