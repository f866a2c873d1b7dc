/**
 * The `idb` protocol: images stored in IndexedDB as fixed-size chunks (works
 * in a window and in a worker, unlike OPFS's synchronous handles).
 *
 * Layout: a `files` store of {name, size, chunkSize} and a `chunks` store of
 * {name, index, data} keyed [name, index]. Chunks are sparse: an absent chunk
 * reads as zeros, and a chunk that would hold only zeros is deleted rather
 * than stored. Bytes of the last chunk past the file's size are always zero
 * (truncate zeroes them), so growing a file needs no writes.
 *
 * Chunk size, 64 KiB: it is qcow2's default cluster size, so the chunks an
 * image allocates line up with the clusters the format allocates and sparse
 * regions stay sparse. Formats write metadata in 512 B–64 KiB pieces (header,
 * 4 KiB L2 slices, refcount blocks); each small write is a read-modify-write
 * of its chunk, which costs one chunk. With 1 MiB chunks every L2 update
 * would rewrite 1 MiB. Large sequential requests still cost one transaction
 * and one getAll per request, since a request spans many chunks. The size is
 * stored per file, so a future default can differ without breaking old files.
 *
 * Each request is one transaction: reads use getAll over the key range;
 * writes read the (at most two) partial chunks and put the rest in one
 * readwrite transaction, so a failed write (quota) leaves nothing half done:
 * IndexedDB rolls the whole transaction back. Flush commits a transaction
 * with `durability: 'strict'`, which makes every earlier commit stable.
 */
import { openDB, type DBSchema, type IDBPDatabase, type IDBPTransaction } from 'idb';
import { BlockError, hex } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';
import { bufferIsZero } from '../block/buffers.js';
import { namespaceName, namespaceResolve } from './browser-names.js';
import { requestPersistence } from './browser-persist.js';

export const IDB_DEFAULT_CHUNK_SIZE = 64 * 1024;

interface FileRecord {
  name: string;
  size: number;
  chunkSize: number;
}

interface ChunkRecord {
  name: string;
  index: number;
  /** Always chunkSize bytes. */
  data: Uint8Array;
}

interface BlocktabDB extends DBSchema {
  files: { key: string; value: FileRecord };
  chunks: { key: [string, number]; value: ChunkRecord };
}

type Db = IDBPDatabase<BlocktabDB>;
type RwTx = IDBPTransaction<BlocktabDB, ('files' | 'chunks')[], 'readwrite'>;

export interface IdbOptions {
  /** Chunk size for new files (a power of two >= 512). */
  chunkSize?: number;
  /**
   * Test hook: runs inside every write/truncate transaction after its changes
   * are queued and before it commits; throwing aborts the transaction (as a
   * QuotaExceededError at commit would).
   */
  faultHook?: (op: 'write' | 'truncate', name: string) => void;
}

interface IdbState {
  db: Db;
  name: string;
  chunkSize: number;
  size: number;
  hook: IdbOptions['faultHook'];
}

function chunkRange(name: string, first: number, last: number): IDBKeyRange {
  return IDBKeyRange.bound([name, first], [name, last]);
}

/** Marks a request promise as handled: after an abort every queued request rejects, and only the first error matters. */
function queued(ops: Promise<unknown>[], p: Promise<unknown>): void {
  p.catch(() => {});
  ops.push(p);
}

function mapError(e: unknown, what: string): BlockError {
  if (e instanceof BlockError) return e;
  const n = (e as { name?: string })?.name;
  if (n === 'QuotaExceededError') {
    return new BlockError('ENOSPC', `${what}: No space left on device (storage quota exceeded)`, { cause: e });
  }
  return new BlockError('EIO', `${what}: ${(e as Error)?.message ?? e}`, { cause: e });
}

/**
 * Runs `body` in a readwrite transaction over both stores and commits it. If
 * `body` or the commit fails, the transaction is aborted and nothing changes.
 */
async function readwrite<T>(
  db: Db,
  durability: 'default' | 'strict',
  what: string,
  body: (tx: RwTx) => Promise<T>,
): Promise<T> {
  const tx = db.transaction(['files', 'chunks'], 'readwrite', { durability });
  const done = tx.done;
  done.catch(() => {});
  try {
    const out = await body(tx);
    await done;
    return out;
  } catch (e) {
    try {
      tx.abort();
    } catch {
      // Already finished or aborted.
    }
    throw mapError(e, what);
  }
}

export const idbDriver: BlockDriver = {
  name: 'idb',
  kind: 'protocol',
  protocolName: 'idb',
  async open(bs) {
    const o = bs.options.idb as { db: Db; record: FileRecord; hook: IdbOptions['faultHook'] } | undefined;
    if (!o) throw new BlockError('ENOENT', `Could not open '${bs.filename}': No such file or directory`);
    bs.opaque = { db: o.db, name: o.record.name, chunkSize: o.record.chunkSize, size: o.record.size, hook: o.hook } satisfies IdbState;
    bs.totalBytes = o.record.size;
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<IdbState>();
    const have = Math.max(0, Math.min(bytes, s.size - offset));
    if (have < bytes) buf.fill(0, have, bytes);
    if (have === 0) return;
    const cs = s.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + have - 1) / cs);
    let recs: ChunkRecord[];
    try {
      recs = await s.db.getAll('chunks', chunkRange(s.name, first, last));
    } catch (e) {
      throw mapError(e, `${s.name}: read at ${hex(offset)} failed`);
    }
    // getAll answers in key order; absent chunks (holes) read as zeros.
    let j = 0;
    for (let i = first; i <= last; i++) {
      const cStart = i * cs;
      const from = Math.max(offset, cStart);
      const to = Math.min(offset + have, cStart + cs);
      const rec = recs[j];
      if (rec && rec.index === i) {
        buf.set(rec.data.subarray(from - cStart, to - cStart), from - offset);
        j++;
      } else {
        buf.fill(0, from - offset, to - offset);
      }
    }
  },

  async pwritev(bs, offset, bytes, buf, flags) {
    const s = bs.state<IdbState>();
    const cs = s.chunkSize;
    const end = offset + bytes;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    const what = `${s.name}: write of ${bytes} bytes at ${hex(offset)} failed`;
    const size = await readwrite(s.db, flags.fua ? 'strict' : 'default', what, async (tx) => {
      const chunks = tx.objectStore('chunks');
      const files = tx.objectStore('files');
      const partial = (i: number) => i * cs < offset || (i + 1) * cs > end;
      // The (at most two) partially covered chunks need their old contents; read them together.
      const partials = [...new Set([first, last])].filter(partial);
      const old = new Map<number, ChunkRecord | undefined>();
      const rec = files.get(s.name);
      rec.catch(() => {});
      await Promise.all(partials.map(async (i) => old.set(i, await chunks.get([s.name, i]))));
      const ops: Promise<unknown>[] = [];
      for (let i = first; i <= last; i++) {
        const cStart = i * cs;
        const from = Math.max(offset, cStart);
        const to = Math.min(end, cStart + cs);
        let data: Uint8Array;
        if (partial(i)) {
          // A structured-clone result is ours to modify.
          data = old.get(i)?.data ?? new Uint8Array(cs);
          data.set(buf.subarray(from - offset, to - offset), from - cStart);
        } else {
          data = buf.subarray(from - offset, to - offset);
        }
        if (bufferIsZero(data)) queued(ops, chunks.delete([s.name, i]));
        // slice(): storing a view would clone its whole underlying buffer.
        else queued(ops, chunks.put({ name: s.name, index: i, data: partial(i) ? data : data.slice() }));
      }
      const r = await rec;
      if (!r) throw new BlockError('ENOENT', `${s.name}: the file was removed while open`);
      const newSize = Math.max(r.size, end);
      if (newSize !== r.size) queued(ops, files.put({ ...r, size: newSize }));
      s.hook?.('write', s.name);
      await Promise.all(ops);
      return newSize;
    });
    s.size = size;
    bs.totalBytes = size;
  },

  async truncate(bs, size) {
    const s = bs.state<IdbState>();
    const cs = s.chunkSize;
    await readwrite(s.db, 'default', `${s.name}: truncate to ${size} bytes failed`, async (tx) => {
      const chunks = tx.objectStore('chunks');
      const files = tx.objectStore('files');
      const r = await files.get(s.name);
      if (!r) throw new BlockError('ENOENT', `${s.name}: the file was removed while open`);
      const ops: Promise<unknown>[] = [];
      if (size < r.size) {
        queued(ops, chunks.delete(chunkRange(s.name, Math.ceil(size / cs), Infinity)));
        // Bytes past the end of the last chunk must read as zeros if the file grows again.
        if (size % cs !== 0) {
          const i = Math.floor(size / cs);
          const c = await chunks.get([s.name, i]);
          if (c) {
            c.data.fill(0, size % cs);
            queued(ops, bufferIsZero(c.data) ? chunks.delete([s.name, i]) : chunks.put(c));
          }
        }
      }
      queued(ops, files.put({ ...r, size }));
      s.hook?.('truncate', s.name);
      await Promise.all(ops);
    });
    s.size = size;
    bs.totalBytes = size;
  },

  async flush(bs) {
    const s = bs.state<IdbState>();
    try {
      const tx = s.db.transaction('files', 'readwrite', { durability: 'strict' });
      await tx.done;
    } catch (e) {
      throw mapError(e, `${s.name}: flush failed`);
    }
  },

  async getLength(bs) {
    return bs.state<IdbState>().size;
  },

  async getAllocatedFileSize(bs) {
    const s = bs.state<IdbState>();
    return (await s.db.count('chunks', chunkRange(s.name, 0, Infinity))) * s.chunkSize;
  },
};

registerDriver(idbDriver);

/**
 * A namespace of images in one IndexedDB database. Names are slash-separated
 * paths that never leave the database (see browser-names.ts).
 */
export class IdbStorage implements Storage {
  readonly name = 'idb';
  private db: Promise<Db> | undefined;

  constructor(
    readonly dbName = 'blocktab',
    readonly options: IdbOptions = {},
  ) {
    const cs = options.chunkSize ?? IDB_DEFAULT_CHUNK_SIZE;
    if (!(cs >= 512 && (cs & (cs - 1)) === 0)) throw new BlockError('EINVAL', `idb: chunk size ${cs} is not a power of two of at least 512`);
  }

  private open(): Promise<Db> {
    this.db ??= openDB<BlocktabDB>(this.dbName, 1, {
      upgrade(db) {
        db.createObjectStore('files', { keyPath: 'name' });
        db.createObjectStore('chunks', { keyPath: ['name', 'index'] });
      },
    }).catch((e) => {
      this.db = undefined;
      throw mapError(e, `Could not open IndexedDB database '${this.dbName}'`);
    });
    return this.db;
  }

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    const name = namespaceName('idb', filename, filename);
    const db = await this.open();
    let record = await db.get('files', name);
    if (!record && options.create && !options.readOnly) {
      await this.createFile(name);
      record = await db.get('files', name);
    }
    if (!record) throw new BlockError('ENOENT', `Could not open '${name}': No such file or directory`);
    if (!options.readOnly) void requestPersistence();
    const bs = new BlockNode(idbDriver, name, { readOnly: options.readOnly, idb: { db, record, hook: this.options.faultHook } });
    await idbDriver.open(bs, bs.options);
    return bs;
  }

  async createFile(filename: string): Promise<void> {
    const name = namespaceName('idb', filename, filename);
    const db = await this.open();
    void requestPersistence();
    const chunkSize = this.options.chunkSize ?? IDB_DEFAULT_CHUNK_SIZE;
    await readwrite(db, 'default', `Could not create '${name}'`, async (tx) => {
      const ops: Promise<unknown>[] = [];
      queued(ops, tx.objectStore('chunks').delete(chunkRange(name, 0, Infinity)));
      queued(ops, tx.objectStore('files').put({ name, size: 0, chunkSize }));
      await Promise.all(ops);
    });
  }

  async removeFile(filename: string): Promise<void> {
    const name = namespaceName('idb', filename, filename);
    const db = await this.open();
    await readwrite(db, 'default', `Could not remove '${name}'`, async (tx) => {
      const ops: Promise<unknown>[] = [];
      queued(ops, tx.objectStore('chunks').delete(chunkRange(name, 0, Infinity)));
      queued(ops, tx.objectStore('files').delete(name));
      await Promise.all(ops);
    });
  }

  resolve(from: string, reference: string): string {
    return namespaceResolve('idb', from, reference);
  }

  /** Names of every stored image. */
  async list(): Promise<string[]> {
    return (await this.open()).getAllKeys('files');
  }

  /** Closes the database connection (open nodes stop working). */
  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db) (await db.catch(() => undefined))?.close();
  }
}
