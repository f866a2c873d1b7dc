/**
 * A BlockDevice in the shape v86 takes for a disk (`hda`, `cdrom`, `fda`):
 * the async buffer interface of v86's AsyncXHRBuffer and friends —
 * `byteLength`, `load()` then `onload`, `get(start, len, cb)`,
 * `set(start, data, cb)`, `get_buffer(cb)`, `get_state()`/`set_state()`.
 * Pass it as `new V86({ hda: { buffer: new V86Buffer(device) } , … })`.
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

  set(start: number, data: Uint8Array, fn: () => void): void {
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
