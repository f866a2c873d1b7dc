/**
 * A persistent block store for the http protocol in the origin private file
 * system: one directory per image version (a hash of the store key: URL
 * without query, size, validator), one file per cached block. Uses OPFS's
 * async API (getFileHandle / createWritable), so it works in windows and
 * workers alike. Bounded: past `maxBytes`, the oldest version directories are
 * dropped whole (a coarse LRU; a dropped block is only a re-fetch).
 * Failures are swallowed by the protocol: the store is an optimisation.
 */
import type { HttpBlockStore } from './http.js';

async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export interface OpfsBlockStoreOptions {
  /** Directory under the OPFS root (default `blocktab-http-cache`). */
  directory?: string;
  /** Bytes kept at most (default 1 GiB). */
  maxBytes?: number;
}

export class OpfsBlockStore implements HttpBlockStore {
  private readonly dirName: string;
  private readonly maxBytes: number;
  private root: Promise<FileSystemDirectoryHandle> | undefined;
  private readonly dirs = new Map<string, Promise<FileSystemDirectoryHandle>>();
  /** Bytes written by this instance per version directory, in first-use order (for the bound). */
  private readonly written = new Map<string, number>();

  constructor(options: OpfsBlockStoreOptions = {}) {
    this.dirName = options.directory ?? 'blocktab-http-cache';
    this.maxBytes = options.maxBytes ?? 1024 ** 3;
  }

  private base(): Promise<FileSystemDirectoryHandle> {
    this.root ??= navigator.storage.getDirectory().then((r) => r.getDirectoryHandle(this.dirName, { create: true }));
    return this.root;
  }

  private dir(key: string): Promise<FileSystemDirectoryHandle> {
    let d = this.dirs.get(key);
    if (!d) {
      d = (async () => (await this.base()).getDirectoryHandle(await sha256Hex(key), { create: true }))();
      this.dirs.set(key, d);
    }
    return d;
  }

  async get(key: string, index: number, blockSize: number): Promise<Uint8Array | undefined> {
    try {
      const f = await (await (await this.dir(key)).getFileHandle(String(index))).getFile();
      if (f.size !== blockSize) return undefined;
      return new Uint8Array(await f.arrayBuffer());
    } catch {
      return undefined;
    }
  }

  async put(key: string, index: number, data: Uint8Array): Promise<void> {
    const w = await (await (await this.dir(key)).getFileHandle(String(index), { create: true })).createWritable();
    await w.write(data as Uint8Array<ArrayBuffer>);
    await w.close();
    this.written.set(key, (this.written.get(key) ?? 0) + data.length);
    await this.trim(key);
  }

  /** Drops whole version directories, oldest first, while this instance has written more than maxBytes. */
  private async trim(current: string): Promise<void> {
    let total = [...this.written.values()].reduce((a, b) => a + b, 0);
    for (const [k, n] of this.written) {
      if (total <= this.maxBytes || k === current) break;
      this.written.delete(k);
      this.dirs.delete(k);
      total -= n;
      await (await this.base()).removeEntry(await sha256Hex(k), { recursive: true }).catch(() => {});
    }
  }

  /** Removes every stored block. */
  async clear(): Promise<void> {
    this.dirs.clear();
    this.written.clear();
    this.root = undefined;
    await (await navigator.storage.getDirectory()).removeEntry(this.dirName, { recursive: true }).catch(() => {});
  }
}
