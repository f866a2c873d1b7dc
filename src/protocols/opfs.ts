/**
 * The `opfs` protocol: images in the Origin Private File System, read and
 * written through `FileSystemSyncAccessHandle` — the fastest storage a page
 * has (in-place positional I/O, no copies through a stream, no transactions).
 *
 * Browser quirks this file deals with, and why:
 * - Sync access handles exist only in dedicated workers, so this driver runs
 *   where the engine runs (src/worker/). In a window it fails with ENOTSUP.
 *   The handle never leaves this file; every method is still async, as the
 *   BlockDriver contract wants.
 * - Who may open an image is decided by Web Locks (web-locks.ts), with
 *   QEMU's rules: one writer and no reader, or any number of readers; a
 *   read-only open with `forceShare` (qemu-img's -U) takes no lock. A refused
 *   open is EBUSY "image in use". The browser drops a dead worker's or a
 *   closed tab's locks. Because the locks decide, every access handle is
 *   opened in `readwrite-unsafe` mode, the one mode whose handles coexist
 *   (a `read-only` handle conflicts with any writer's, so a -U reader could
 *   not open next to a writer); read-only nodes never write through theirs.
 *   Without Web Locks, handles are `readwrite`/`read-only` and OPFS's own
 *   exclusivity (NoModificationAllowedError, also EBUSY) keeps writers apart.
 * - Over quota, Chromium's sync handle does not always throw
 *   QuotaExceededError: write() may extend the file partly and return an
 *   error number instead of a byte count (0xfffffff8, -8 as unsigned), and
 *   truncate() may leave the file shorter without a word. Both are ENOSPC
 *   here: a short write or a length that did not change as asked. We put the
 *   length back and keep our cached size, so the image reads exactly as
 *   before the failure.
 * - A write past the end zero-fills the gap (File System standard).
 * - `navigator.storage.persist()` is asked once when images are written
 *   (best effort; only windows have it).
 */
import { BlockError, describeCode, hex } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';
import { namespaceComponents, namespaceResolve } from './browser-names.js';
import { requestPersistence } from './browser-persist.js';
import { hasWebLocks, tryLockImage, type ImageLock } from './web-locks.js';

/** The part of FileSystemSyncAccessHandle we use (the DOM typings only have it in the worker lib). */
export interface SyncAccessHandle {
  read(buffer: ArrayBufferView, options?: { at?: number }): number;
  write(buffer: ArrayBufferView, options?: { at?: number }): number;
  truncate(newSize: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

type SyncCapableHandle = FileSystemFileHandle & {
  createSyncAccessHandle?: (options?: { mode?: 'readwrite' | 'read-only' | 'readwrite-unsafe' }) => Promise<SyncAccessHandle>;
};

export interface OpfsOptions {
  /** Test hook: wraps every handle the storage opens (fault injection: throw QuotaExceededError from write). */
  wrapHandle?: (h: SyncAccessHandle, name: string) => SyncAccessHandle;
}

interface OpfsState {
  h: SyncAccessHandle;
  size: number;
  lock?: ImageLock;
  /** The Web Locks name of the image; absent when the open took no lock (force-share, or no Web Locks here). */
  lockKey?: string;
}

/** QEMU's lock-failure wording, naming the image; `shared` for a reader's lock. */
function lockBusy(name: string, shared: boolean): BlockError {
  return new BlockError(
    'EBUSY',
    `${name}: Failed to get ${shared ? 'shared ' : ''}"write" lock: image in use (another tab or worker has it open; open it read-only with force-share to look anyway)`,
  );
}

/** The Web Locks name of an OPFS image. */
function lockKeyOf(name: string): string {
  return `blocktab:opfs:${name}`;
}

/** Maps a DOMException from OPFS to a BlockError that names the image and says what was refused. */
function mapError(e: unknown, image: string, what: string): BlockError {
  if (e instanceof BlockError) return e;
  const n = (e as { name?: string })?.name;
  switch (n) {
    case 'QuotaExceededError':
      return new BlockError('ENOSPC', `${image}: ${what}: ${describeCode('ENOSPC')} (storage quota exceeded)`, { cause: e });
    case 'NoModificationAllowedError':
      return new BlockError('EBUSY', `${image}: ${what}: image in use (another worker or tab has it open)`, { cause: e });
    case 'NotFoundError':
      return new BlockError('ENOENT', `Could not open '${image}': ${describeCode('ENOENT')}`, { cause: e });
    case 'TypeMismatchError':
      return new BlockError('EINVAL', `Could not open '${image}': a directory is in the way`, { cause: e });
    case 'NotAllowedError':
    case 'SecurityError':
      return new BlockError('EACCES', `${image}: ${what}: ${describeCode('EACCES')}`, { cause: e });
    default:
      return new BlockError('EIO', `${image}: ${what}: ${(e as Error)?.message ?? e}`, { cause: e });
  }
}

/** Puts the file back to `size` after a failed size-changing call (best effort: the call may have changed nothing). */
function restoreLength(h: SyncAccessHandle, size: number): void {
  try {
    if (h.getSize() !== size) h.truncate(size);
  } catch {
    // Nothing more we can do; the error already reported says what failed.
  }
}

export const opfsDriver: BlockDriver = {
  name: 'opfs',
  kind: 'protocol',
  protocolName: 'opfs',
  async open(bs) {
    const h = bs.options.opfsHandle as SyncAccessHandle | undefined;
    if (!h) throw new BlockError('ENOENT', `Could not open '${bs.filename}': No such file or directory`);
    const size = h.getSize();
    bs.opaque = { h, size, lock: bs.options.opfsLock as ImageLock | undefined, lockKey: bs.options.opfsLockKey as string | undefined } satisfies OpfsState;
    bs.totalBytes = size;
  },
  async close(bs) {
    const s = bs.state<OpfsState>();
    try {
      s.h.close();
    } finally {
      await s.lock?.release();
    }
  },
  /**
   * Read-only <-> read-write in place (QEMU's reopen of an image it already
   * has open): the handle is shared-mode already, so only the lock changes,
   * shared -> exclusive or back. A refused upgrade takes the shared lock again.
   */
  async reopen(bs, readOnly) {
    const s = bs.state<OpfsState>();
    if (!s.lockKey) {
      if (!readOnly) throw new BlockError('EINVAL', `${bs.filename}: opened without an image lock (force-share=on, or a browser without Web Locks), so it cannot be reopened read-write`);
      return;
    }
    await s.lock?.release();
    s.lock = (await tryLockImage(s.lockKey, !readOnly)) ?? undefined;
    if (s.lock || readOnly) return;
    s.lock = (await tryLockImage(s.lockKey, false)) ?? undefined;
    throw lockBusy(bs.filename, false);
  },
  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<OpfsState>();
    let n: number;
    try {
      n = bytes > 0 && offset < s.size ? s.h.read(buf.subarray(0, bytes), { at: offset }) : 0;
    } catch (e) {
      throw mapError(e, bs.filename, `read of ${bytes} bytes at ${hex(offset)} failed`);
    }
    if (n < bytes) buf.fill(0, n, bytes);
  },
  async pwritev(bs, offset, bytes, buf) {
    const s = bs.state<OpfsState>();
    const what = `write of ${bytes} bytes at ${hex(offset)} failed`;
    try {
      const n = s.h.write(buf.subarray(0, bytes), { at: offset });
      if (n !== bytes) throw new DOMException(`short write (${n} of ${bytes} bytes)`, 'QuotaExceededError');
    } catch (e) {
      restoreLength(s.h, s.size);
      throw mapError(e, bs.filename, what);
    }
    if (offset + bytes > s.size) bs.totalBytes = s.size = offset + bytes;
  },
  async truncate(bs, size) {
    const s = bs.state<OpfsState>();
    try {
      s.h.truncate(size);
      const now = s.h.getSize();
      if (now !== size) throw new DOMException(`truncate left the file at ${now} bytes`, 'QuotaExceededError');
    } catch (e) {
      restoreLength(s.h, s.size);
      throw mapError(e, bs.filename, `truncate to ${size} bytes failed`);
    }
    bs.totalBytes = s.size = size;
  },
  async flush(bs) {
    try {
      bs.state<OpfsState>().h.flush();
    } catch (e) {
      throw mapError(e, bs.filename, 'flush failed');
    }
  },
  async getLength(bs) {
    return bs.state<OpfsState>().size;
  },
  async getAllocatedFileSize(bs) {
    // OPFS does not say how much of a file is allocated; its length is the honest upper bound.
    return bs.state<OpfsState>().size;
  },
};

registerDriver(opfsDriver);

/**
 * A namespace of images under one OPFS directory (the origin's root by
 * default). Names are slash-separated paths below it; `/` in a name makes
 * nested directories. Names never leave the directory (browser-names.ts).
 */
export class OpfsStorage implements Storage {
  readonly name = 'opfs';
  private rootDir: Promise<FileSystemDirectoryHandle> | undefined;

  constructor(
    root?: FileSystemDirectoryHandle,
    readonly options: OpfsOptions = {},
  ) {
    if (root) this.rootDir = Promise.resolve(root);
  }

  private root(): Promise<FileSystemDirectoryHandle> {
    this.rootDir ??= navigator.storage.getDirectory();
    return this.rootDir;
  }

  /** The directory holding `components`' last element, and that element's name. */
  private async parent(image: string, components: string[], create: boolean): Promise<FileSystemDirectoryHandle> {
    let dir = await this.root();
    for (const c of components.slice(0, -1)) {
      try {
        dir = await dir.getDirectoryHandle(c, { create });
      } catch (e) {
        throw mapError(e, image, `directory '${c}' is not usable`);
      }
    }
    return dir;
  }

  private async fileHandle(filename: string, create: boolean): Promise<{ name: string; fh: SyncCapableHandle }> {
    const comps = namespaceComponents('opfs', filename, filename);
    const name = comps.join('/');
    const dir = await this.parent(name, comps, create);
    try {
      return { name, fh: (await dir.getFileHandle(comps[comps.length - 1]!, { create })) as SyncCapableHandle };
    } catch (e) {
      throw mapError(e, name, 'open failed');
    }
  }

  private async syncHandle(name: string, fh: SyncCapableHandle, readOnly: boolean): Promise<SyncAccessHandle> {
    if (typeof fh.createSyncAccessHandle !== 'function') {
      throw new BlockError('ENOTSUP', `${name}: OPFS images need a dedicated worker (synchronous access handles exist only there)`);
    }
    let h: SyncAccessHandle;
    try {
      h = await fh.createSyncAccessHandle({ mode: hasWebLocks() ? 'readwrite-unsafe' : readOnly ? 'read-only' : 'readwrite' });
    } catch (e) {
      throw mapError(e, name, `cannot open ${readOnly ? 'read-only' : 'for writing'}`);
    }
    return this.options.wrapHandle ? this.options.wrapHandle(h, name) : h;
  }

  /**
   * The image lock for `name` (web-locks.ts): exclusive to write, shared to
   * read, none with `forceShare`; EBUSY when another open holds it.
   */
  private async lock(name: string, readOnly: boolean, forceShare: boolean): Promise<ImageLock | undefined> {
    if (forceShare) {
      if (!readOnly) throw new BlockError('EINVAL', `${name}: force-share=on can only be used with read-only images`);
      return undefined;
    }
    const lock = await tryLockImage(lockKeyOf(name), !readOnly);
    if (!lock) throw lockBusy(name, readOnly);
    return lock;
  }

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean; forceShare?: boolean }): Promise<BlockNode> {
    const { name, fh } = await this.fileHandle(filename, !!options.create && !options.readOnly);
    const lock = await this.lock(name, options.readOnly, !!options.forceShare);
    let h: SyncAccessHandle | undefined;
    try {
      h = await this.syncHandle(name, fh, options.readOnly);
      if (!options.readOnly) void requestPersistence();
      const opfsLockKey = lock && hasWebLocks() ? lockKeyOf(name) : undefined;
      const bs = new BlockNode(opfsDriver, name, { readOnly: options.readOnly, opfsHandle: h, opfsLock: lock, opfsLockKey });
      await opfsDriver.open(bs, bs.options);
      return bs;
    } catch (e) {
      h?.close();
      await lock?.release();
      throw mapError(e, name, 'open failed');
    }
  }

  async createFile(filename: string): Promise<void> {
    const { name, fh } = await this.fileHandle(filename, true);
    void requestPersistence();
    // Never truncate an image someone has open.
    const lock = await this.lock(name, false, false);
    try {
      const h = await this.syncHandle(name, fh, false);
      try {
        h.truncate(0);
        h.flush();
      } catch (e) {
        throw mapError(e, name, 'create failed');
      } finally {
        h.close();
      }
    } finally {
      await lock?.release();
    }
  }

  async removeFile(filename: string): Promise<void> {
    const comps = namespaceComponents('opfs', filename, filename);
    const name = comps.join('/');
    const dir = await this.parent(name, comps, false);
    try {
      await dir.removeEntry(comps[comps.length - 1]!);
    } catch (e) {
      throw mapError(e, name, 'remove failed');
    }
  }

  resolve(from: string, reference: string): string {
    return namespaceResolve('opfs', from, reference);
  }
}
