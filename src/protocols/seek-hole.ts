/**
 * SEEK_DATA / SEEK_HOLE for the file protocol.
 *
 * Node's fs has no lseek, so holes in host files are invisible to it. A tiny
 * optional N-API addon (native/seek.c, built by node-gyp into
 * native/build/Release/seek.node) provides the two calls, fallocate's
 * hole punching and zeroing for discards and write-zeroes, its allocation
 * before large writes (src/protocols/file.ts), and the huge-page advice for convert's buffer
 * memory (src/cli/buffer-memory.ts). When it is absent or
 * the host file system does not support them, these return undefined
 * ("unknown") and the file protocol reports every byte as data, which is
 * always correct, only less precise than QEMU's file-posix.
 */
import { createRequire } from 'node:module';

interface SeekAddon {
  seekData(fd: number, offset: number): number;
  seekHole(fd: number, offset: number): number;
  /** Absent from addons built before it was added. */
  punchHole?(fd: number, offset: number, length: number): number;
  zeroRange?(fd: number, offset: number, length: number): number;
  allocate?(fd: number, offset: number, length: number): number;
  adviseHugePages?(buffer: ArrayBuffer): number;
}

function loadAddon(): SeekAddon | undefined {
  if (process.env.BLOCKTAB_NO_NATIVE) return undefined;
  try {
    // Same relative path from src/protocols (tests) and dist/protocols (the build).
    return createRequire(import.meta.url)('../../native/build/Release/seek.node') as SeekAddon;
  } catch {
    return undefined;
  }
}

// Loaded on the first question, not at import: a dlopen is start-up time every command would pay
// (`info` of a qcow2 image never asks the host file about holes).
let addon: SeekAddon | undefined | null = null;
const getAddon = (): SeekAddon | undefined => (addon === null ? (addon = loadAddon()) : addon);

/** Offset of the next data at or after `offset`, -1 if none before EOF, undefined if unknown. */
export function seekData(fd: number, offset: number): number | undefined {
  const addon = getAddon();
  if (!addon) return undefined;
  const r = addon.seekData(fd, offset);
  return r === -2 ? undefined : r;
}

/** Offset of the next hole at or after `offset` (EOF counts as a hole), undefined if unknown. */
export function seekHole(fd: number, offset: number): number | undefined {
  const addon = getAddon();
  if (!addon) return undefined;
  const r = addon.seekHole(fd, offset);
  return r < 0 ? undefined : r;
}

/** The addon's fallocate calls; an addon built before one was added lacks it. */
type FallocateCall = 'punchHole' | 'zeroRange' | 'allocate';

/** Runs one of the addon's fallocate calls: true when done, false when the addon or the file system cannot. */
function fallocateRange(call: FallocateCall, fd: number, offset: number, length: number): boolean {
  const fallocate = getAddon()?.[call];
  return fallocate !== undefined && fallocate(fd, offset, length) === 0;
}

/**
 * Deallocates [offset, offset + length) of the host file, keeping its size
 * (fallocate PUNCH_HOLE): true when done, false when the addon or the file
 * system cannot (a discard is a hint, so the caller carries on).
 */
export function punchHole(fd: number, offset: number, length: number): boolean {
  return fallocateRange('punchHole', fd, offset, length);
}

/**
 * Makes [offset, offset + length) of the host file read as zeros, keeping
 * its blocks and its size (fallocate ZERO_RANGE): true when done, false
 * when the addon or the file system cannot (the caller then writes zeros).
 */
export function zeroRange(fd: number, offset: number, length: number): boolean {
  return fallocateRange('zeroRange', fd, offset, length);
}

/**
 * Gives [offset, offset + length) of the host file blocks without changing
 * its bytes or its size (fallocate KEEP_SIZE): true when done, false when
 * the addon or the file system cannot (the caller carries on without).
 */
export function allocateRange(fd: number, offset: number, length: number): boolean {
  return fallocateRange('allocate', fd, offset, length);
}

/** Whether hole detection is available (for tests and `--version` style reports). */
export function seekHoleSupported(): boolean {
  return getAddon() !== undefined;
}

/**
 * Asks the host to back `buffer` with transparent huge pages (madvise
 * MADV_HUGEPAGE on the 2 MiB-aligned part inside it): the bytes advised, 0
 * when the addon or the host cannot (advice only: memory works the same).
 */
export function adviseHugePages(buffer: ArrayBuffer): number {
  const addon = getAddon();
  if (!addon?.adviseHugePages) return 0;
  return Math.max(0, addon.adviseHugePages(buffer));
}
