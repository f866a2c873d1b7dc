/**
 * Blocking disk access for emulators that need a synchronous read (code
 * compiled with Emscripten without Asyncify, interpreters whose device models
 * cannot yield): the emulator's thread calls readSync(), which posts the
 * request into a SharedArrayBuffer and sleeps in Atomics.wait until the
 * thread that owns the BlockBackend (see sync-server.ts) answers.
 *
 * Needs SharedArrayBuffer, so the page must be cross-origin isolated
 * (`Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy:
 * require-corp`), and Atomics.wait, so the client runs in a worker (browsers
 * refuse it on a window's main thread). This file imports nothing: it can be
 * bundled alone into the emulator's worker.
 *
 * The channel (Int32 words, then the data area):
 *   word 0  state   IDLE, REQUEST (client → server), DONE / FAILED (server → client), CLOSED
 *   word 1  op      READ, WRITE, FLUSH
 *   word 2-3 offset low / high 32 bits
 *   word 4  bytes   (at most the data area's size; larger requests are split)
 *   word 5  length of the UTF-8 error message in the data area (FAILED)
 *   word 6-7 the disk's byte length, low / high (written once by the server)
 *   byte 64…       data: read results, write payloads, error messages
 */
export const SYNC = {
  IDLE: 0,
  REQUEST: 1,
  DONE: 2,
  FAILED: 3,
  CLOSED: 4,
  READ: 1,
  WRITE: 2,
  FLUSH: 3,
  HEADER_BYTES: 64,
} as const;

export class SyncBlockClient {
  readonly byteLength: number;
  private readonly ctl: Int32Array;
  private readonly data: Uint8Array;

  constructor(readonly channel: SharedArrayBuffer) {
    this.ctl = new Int32Array(channel, 0, SYNC.HEADER_BYTES / 4);
    this.data = new Uint8Array(channel, SYNC.HEADER_BYTES);
    this.byteLength = (this.ctl[6]! >>> 0) + (this.ctl[7]! >>> 0) * 2 ** 32;
  }

  /** Reads buf.length bytes at offset, blocking this thread until they are there. */
  readSync(offset: number, buf: Uint8Array): void {
    for (let done = 0; done < buf.length; ) {
      const n = Math.min(this.data.length, buf.length - done);
      this.call(SYNC.READ, offset + done, n);
      buf.set(this.data.subarray(0, n), done);
      this.release();
      done += n;
    }
  }

  /** Writes data at offset, blocking until the write completed below. */
  writeSync(offset: number, data: Uint8Array): void {
    for (let done = 0; done < data.length; ) {
      const n = Math.min(this.data.length, data.length - done);
      this.data.set(data.subarray(done, done + n));
      this.call(SYNC.WRITE, offset + done, n);
      this.release();
      done += n;
    }
  }

  flushSync(): void {
    this.call(SYNC.FLUSH, 0, 0);
    this.release();
  }

  private call(op: number, offset: number, bytes: number): void {
    const c = this.ctl;
    if (Atomics.load(c, 0) === SYNC.CLOSED) throw new Error('blocktab: the disk was detached');
    c[1] = op;
    c[2] = offset >>> 0;
    c[3] = Math.floor(offset / 2 ** 32);
    c[4] = bytes;
    Atomics.store(c, 0, SYNC.REQUEST);
    Atomics.notify(c, 0);
    let s: number;
    while ((s = Atomics.load(c, 0)) === SYNC.REQUEST) Atomics.wait(c, 0, SYNC.REQUEST);
    if (s === SYNC.FAILED) {
      const msg = new TextDecoder().decode(this.data.slice(0, c[5]!));
      this.release();
      throw new Error(msg);
    }
    if (s === SYNC.CLOSED) throw new Error('blocktab: the disk was detached');
  }

  private release(): void {
    if (Atomics.compareExchange(this.ctl, 0, SYNC.DONE, SYNC.IDLE) === SYNC.DONE) Atomics.notify(this.ctl, 0);
    else if (Atomics.compareExchange(this.ctl, 0, SYNC.FAILED, SYNC.IDLE) === SYNC.FAILED) Atomics.notify(this.ctl, 0);
  }
}
