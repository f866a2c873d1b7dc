/**
 * SEEK_DATA / SEEK_HOLE for the file protocol.
 *
 * Node's fs has no lseek, so holes in host files are invisible to it. Until a
 * native helper is available these return undefined ("unknown"), and the file
 * protocol reports every byte as data, which is always correct, only less
 * precise than QEMU's file-posix.
 */

/** Offset of the next data at or after `offset`, -1 if none before EOF, undefined if unknown. */
export function seekData(_fd: number, _offset: number): number | undefined {
  return undefined;
}

/** Offset of the next hole at or after `offset` (EOF counts as a hole), undefined if unknown. */
export function seekHole(_fd: number, _offset: number): number | undefined {
  return undefined;
}
