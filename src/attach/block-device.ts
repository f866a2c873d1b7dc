/**
 * A BlockBackend as the plain disk object emulators and apps take: byte
 * length, async read/write/flush, requests applied in the order they were
 * made (a read issued after a write sees it, as a disk controller expects),
 * whatever the graph below does in parallel.
 */
import type { BlockBackend } from '../block/backend.js';
import { BlockError } from '../block/errors.js';

export interface BlockDevice {
  /** The disk's size in bytes (fixed while attached). */
  readonly byteLength: number;
  readonly readOnly: boolean;
  /** Reads `bytes` bytes at `offset` (inside the disk). */
  read(offset: number, bytes: number): Promise<Uint8Array>;
  /** Reads into `buf` at `offset` (inside the disk). */
  readInto(offset: number, buf: Uint8Array): Promise<void>;
  /** Writes `data` at `offset` (inside the disk). */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
}

/**
 * Runs requests one after another in the order they were made: each starts
 * when the previous one ended; a failure fails only its own request.
 */
export function requestQueue(): <T>(op: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(op: () => Promise<T>): Promise<T> => {
    const p = tail.then(op, op);
    tail = p.catch(() => {});
    return p;
  };
}

/** Attaches a backend: its length is read once, requests are serialised. */
export async function attachBackend(blk: BlockBackend): Promise<BlockDevice> {
  const byteLength = await blk.getLength();
  const inOrder = requestQueue();
  const check = (offset: number, bytes: number, what: string) => {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0 || offset + bytes > byteLength) {
      throw new BlockError('EINVAL', `${blk.name || 'disk'}: ${what} of ${bytes} bytes at ${offset} is outside the ${byteLength}-byte disk`);
    }
  };
  return {
    byteLength,
    readOnly: blk.readOnly,
    async read(offset, bytes) {
      check(offset, bytes, 'read');
      const buf = new Uint8Array(bytes);
      await inOrder(() => blk.read(offset, bytes, buf));
      return buf;
    },
    async readInto(offset, buf) {
      check(offset, buf.length, 'read');
      return inOrder(() => blk.read(offset, buf.length, buf));
    },
    async write(offset, data) {
      check(offset, data.length, 'write');
      // The caller may reuse its buffer once write() returns; keep our own copy.
      const copy = data.slice();
      return inOrder(() => blk.write(offset, copy.length, copy));
    },
    async flush() {
      return inOrder(() => blk.flush());
    },
  };
}
