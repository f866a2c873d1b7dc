/**
 * Compression off the calling thread: the one small interface a pool of
 * workers offers the formats (qcow2's compressed clusters now), with one
 * implementation per environment — worker_threads running Node's C zlib
 * (deflate-pool-node.ts, installed by src/node.ts) and Web Workers running
 * pako in a page. A caller that keeps several requests in flight (convert
 * -c, several clusters at once) then compresses on every core; the streams
 * are the ones the in-thread codec makes (same library, same settings), so
 * images do not depend on whether a pool is installed.
 *
 * A leaf: this module knows bytes, not formats, and imports nothing from src/.
 */

export interface DeflatePool {
  /**
   * Raw deflate with a 4 KiB window, level 6, memLevel 9 (QEMU's settings
   * for qcow2 clusters). `input` is copied before the call returns, so the
   * caller may reuse its buffer at once.
   */
  deflateRaw4k(input: Uint8Array): Promise<Uint8Array>;
  /** Ends the workers (a later call starts them again). */
  close(): void;
}

let installed: DeflatePool | null = null;

/** Installs (or, with null, removes) the pool compressed writes use. */
export function installDeflatePool(pool: DeflatePool | null): void {
  installed?.close();
  installed = pool;
}

/** The installed pool, or null: compress on the calling thread. */
export function deflatePool(): DeflatePool | null {
  return installed;
}
