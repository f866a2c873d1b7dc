/**
 * The one-entry cache of a decompressed chunk that the compressed read-only
 * formats keep (dmg chunks, cloop blocks), as QEMU keeps `current_chunk` /
 * `current_block`: sequential reads decompress each chunk once, and memory
 * stays bounded by the largest chunk the format's limits allow.
 *
 * Loads are serialised (QEMU holds a CoMutex around the same work), so two
 * concurrent reads of one chunk decompress it once and a read never sees a
 * buffer another load is filling.
 */
export class ChunkCache {
  private key = -1;
  private data: Uint8Array | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * Runs `use` with the decompressed bytes of chunk `key`, loading them with
   * `load` unless they are the cached chunk. `use` runs under the cache's lock,
   * so it must copy what it needs before returning.
   */
  with<T>(key: number, load: () => Promise<Uint8Array>, use: (data: Uint8Array) => T): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.key !== key || !this.data) {
        this.key = -1;
        this.data = null;
        this.data = await load();
        this.key = key;
      }
      return use(this.data);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  clear(): void {
    this.key = -1;
    this.data = null;
  }
}
