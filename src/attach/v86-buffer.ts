/**
 * A BlockDevice in the shape v86 takes for a disk (`hda`, `cdrom`, `fda`):
 * the async buffer interface of v86's AsyncXHRBuffer and friends —
 * `byteLength`, `load()` then `onload`, `get(start, len, cb)`,
 * `set(start, data, cb)`, `get_buffer(cb)`, `get_state()`/`set_state()`, and
 * the two cache calls v86 0.5 makes before it boots: `get_and_cache` (it reads
 * sector 0 that way) and the synchronous `get_from_cache` (the IDE reads the
 * partition table from it to choose a disk geometry).
 * Pass it as the disk itself: `new V86({ hda: new V86Buffer(device), … })` —
 * v86 takes any object with `get`, `set` and `load` as a ready buffer (wrapped
 * in `{ buffer }` it would be mistaken for a file to download).
 *
 * v86's callbacks have no error argument, so a failed request goes to
 * `onerror` and its callback is never called: the guest sees a disk that
 * stopped answering rather than silently wrong data.
 * Writes go to the device (a qcow2 overlay in OPFS keeps them across reloads),
 * so v86's own in-memory block map stays empty and its save states do not
 * carry the disk: `get_state` returns nothing to restore.
 */
import type { BlockDevice } from './block-device.js';

/** Largest image get_buffer hands over whole (it builds one ArrayBuffer). */
const GET_BUFFER_LIMIT = 1 << 30;

export class V86Buffer {
  readonly byteLength: number;
  onload: ((e: object) => void) | undefined = undefined;
  onprogress: ((e: object) => void) | undefined = undefined;
  onerror: (e: unknown) => void = (e) => console.error('blocktab: disk request failed:', e);

  /** Ranges read with get_and_cache, by start offset (v86 caches only sector 0). */
  private readonly cached = new Map<number, Uint8Array>();

  constructor(readonly device: BlockDevice) {
    this.byteLength = device.byteLength;
  }

  /** v86 calls this first and waits for onload; the device is ready already. */
  load(): void {
    queueMicrotask(() => this.onload?.({}));
  }

  get(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.device.read(start, len).then(fn, this.onerror);
  }

  /** A read whose bytes get_from_cache answers later (v86 reads sector 0 so before booting). */
  get_and_cache(start: number, len: number, fn: (data: Uint8Array) => void): void {
    this.device.read(start, len).then((d) => {
      this.cached.set(start, d.slice());
      fn(d);
    }, this.onerror);
  }

  /** Bytes read earlier with get_and_cache, with the writes since applied; undefined when not cached. */
  get_from_cache(start: number, len: number): Uint8Array | undefined {
    const d = this.cached.get(start);
    return d && d.length >= len ? d.slice(0, len) : undefined;
  }

  set(start: number, data: Uint8Array, fn: () => void): void {
    // Cached ranges follow the writes, so get_from_cache never answers stale bytes.
    for (const [at, d] of this.cached) {
      const lo = Math.max(at, start);
      const hi = Math.min(at + d.length, start + data.length);
      if (lo < hi) d.set(data.subarray(lo - start, hi - start), lo - at);
    }
    this.device.write(start, data).then(fn, this.onerror);
  }

  /** The whole disk as one ArrayBuffer (v86's "download disk"); refused above 1 GiB — export changes instead. */
  get_buffer(fn: (buffer: ArrayBuffer | undefined) => void): void {
    if (this.byteLength > GET_BUFFER_LIMIT) {
      this.onerror(new Error(`get_buffer: the ${this.byteLength}-byte disk is too large to hold whole in memory; export it as a stream`));
      fn(undefined);
      return;
    }
    this.device.read(0, this.byteLength).then((b) => fn(b.buffer as ArrayBuffer), this.onerror);
  }

  get_state(): unknown[] {
    return [];
  }

  set_state(_state: unknown[]): void {}
}
