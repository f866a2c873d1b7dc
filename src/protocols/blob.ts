/**
 * The `blob` protocol: an image the user handed to the page — a File from a
 * picker or drag-and-drop (read-only), or a FileSystemFileHandle from the File
 * System Access API (writable once the user granted permission).
 *
 * Reads slice the Blob (`blob.slice(a, b).arrayBuffer()`), so nothing is read
 * that was not asked for: a 50 GiB dropped disk costs nothing to open.
 *
 * Writes through a handle go to a `createWritable({keepExistingData: true})`
 * stream. Chromium writes such a stream into a copy of the file (a swap file)
 * and only replaces the file when the stream closes, and a File obtained
 * before that close does not see the writes. So written data is committed
 * (stream closed, File re-read from the handle) before any read that follows a
 * write, on flush and on close. This keeps reads correct; a workload that
 * alternates reads and writes pays a commit each time — copy the image into
 * OPFS for that.
 *
 * A BlobStorage maps names to what the user supplied, so an overlay's backing
 * file can be another dropped file. Dropped files have no directories: a
 * backing reference that names a path the user did not supply falls back to
 * its last component (an overlay made on another machine stores
 * "/home/me/base.qcow2", the user drops "base.qcow2"). That lookup only ever
 * picks among files the user gave us.
 */
import { BlockError, hex } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';
import { namespaceName, namespaceResolve } from './browser-names.js';

type Permissioned = FileSystemFileHandle & {
  queryPermission?: (d: { mode: 'read' | 'readwrite' }) => Promise<PermissionState>;
};

interface BlobState {
  blob: Blob;
  handle: FileSystemFileHandle | null;
  writable: FileSystemWritableFileStream | null;
  size: number;
  dirty: boolean;
  /** Serialises the stream's lifecycle (create, write, commit). */
  lock: Promise<void>;
}

function readOnlyError(bs: BlockNode, what: string): BlockError {
  return new BlockError(
    'EROFS',
    `${bs.filename}: ${what} refused: read-only (a dropped or picked File cannot be written; open it through a file handle with write permission)`,
  );
}

function mapError(e: unknown, image: string, what: string): BlockError {
  if (e instanceof BlockError) return e;
  const n = (e as { name?: string })?.name;
  if (n === 'QuotaExceededError') return new BlockError('ENOSPC', `${image}: ${what}: No space left on device (storage quota exceeded)`, { cause: e });
  if (n === 'NotAllowedError' || n === 'SecurityError') return new BlockError('EACCES', `${image}: ${what}: Permission denied`, { cause: e });
  if (n === 'NotFoundError') return new BlockError('ENOENT', `${image}: ${what}: the file no longer exists`, { cause: e });
  if (n === 'NoModificationAllowedError') return new BlockError('EBUSY', `${image}: ${what}: image in use`, { cause: e });
  if (n === 'NotReadableError') return new BlockError('EIO', `${image}: ${what}: the file changed or became unreadable since it was picked`, { cause: e });
  return new BlockError('EIO', `${image}: ${what}: ${(e as Error)?.message ?? e}`, { cause: e });
}

/** Runs `fn` after every earlier locked operation of the node. */
function locked<T>(s: BlobState, fn: () => Promise<T>): Promise<T> {
  const run = s.lock.then(fn);
  s.lock = run.then(
    () => {},
    () => {},
  );
  return run;
}

/** Closes the write stream (making the writes the file's content) and re-reads the File. */
async function commit(bs: BlockNode, s: BlobState): Promise<void> {
  if (!s.dirty || !s.writable) return;
  const w = s.writable;
  s.writable = null;
  s.dirty = false;
  try {
    await w.close();
    s.blob = await s.handle!.getFile();
  } catch (e) {
    throw mapError(e, bs.filename, 'committing writes failed');
  }
}

async function stream(bs: BlockNode, s: BlobState): Promise<FileSystemWritableFileStream> {
  if (!s.writable) {
    try {
      s.writable = await s.handle!.createWritable({ keepExistingData: true });
    } catch (e) {
      throw mapError(e, bs.filename, 'opening for writing failed');
    }
  }
  return s.writable;
}

export const blobDriver: BlockDriver = {
  name: 'blob',
  kind: 'protocol',
  protocolName: 'blob',
  async open(bs) {
    const src = bs.options.blobSource as Blob | FileSystemFileHandle | undefined;
    if (!src) throw new BlockError('ENOENT', `Could not open '${bs.filename}': No such file or directory`);
    let blob: Blob;
    let handle: FileSystemFileHandle | null = null;
    if (src instanceof Blob) {
      blob = src;
    } else {
      handle = src;
      if (!bs.readOnly) {
        const perm = await (handle as Permissioned).queryPermission?.({ mode: 'readwrite' });
        if (perm !== undefined && perm !== 'granted') {
          throw new BlockError('EACCES', `${bs.filename}: cannot open for writing: the user has not granted write permission`);
        }
      }
      try {
        blob = await handle.getFile();
      } catch (e) {
        throw mapError(e, bs.filename, 'open failed');
      }
    }
    bs.opaque = { blob, handle, writable: null, size: blob.size, dirty: false, lock: Promise.resolve() } satisfies BlobState;
    bs.totalBytes = blob.size;
  },
  async close(bs) {
    const s = bs.state<BlobState>();
    await locked(s, async () => {
      if (s.dirty) await commit(bs, s);
      else if (s.writable) await s.writable.abort().catch(() => {});
      s.writable = null;
    });
  },
  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<BlobState>();
    const have = Math.max(0, Math.min(bytes, s.size - offset));
    if (have < bytes) buf.fill(0, have, bytes);
    if (have === 0) return;
    const data = await locked(s, async () => {
      await commit(bs, s);
      try {
        return new Uint8Array(await s.blob.slice(offset, offset + have).arrayBuffer());
      } catch (e) {
        throw mapError(e, bs.filename, `read of ${have} bytes at ${hex(offset)} failed`);
      }
    });
    if (data.length !== have) throw new BlockError('EIO', `${bs.filename}: short read at ${hex(offset)}: ${data.length} of ${have} bytes`);
    buf.set(data);
  },
  async pwritev(bs, offset, bytes, buf) {
    const s = bs.state<BlobState>();
    if (!s.handle) throw readOnlyError(bs, `write at ${hex(offset)}`);
    await locked(s, async () => {
      const w = await stream(bs, s);
      try {
        await w.write({ type: 'write', position: offset, data: buf.subarray(0, bytes) as Uint8Array<ArrayBuffer> });
      } catch (e) {
        // A failed stream is unusable; drop it with its uncommitted writes and report.
        s.writable = null;
        s.dirty = false;
        await w.abort().catch(() => {});
        throw mapError(e, bs.filename, `write of ${bytes} bytes at ${hex(offset)} failed`);
      }
      s.dirty = true;
      if (offset + bytes > s.size) bs.totalBytes = s.size = offset + bytes;
    });
  },
  async truncate(bs, size) {
    const s = bs.state<BlobState>();
    if (!s.handle) throw readOnlyError(bs, `truncate to ${size} bytes`);
    await locked(s, async () => {
      const w = await stream(bs, s);
      try {
        await w.truncate(size);
      } catch (e) {
        s.writable = null;
        s.dirty = false;
        await w.abort().catch(() => {});
        throw mapError(e, bs.filename, `truncate to ${size} bytes failed`);
      }
      s.dirty = true;
      bs.totalBytes = s.size = size;
    });
  },
  async flush(bs) {
    const s = bs.state<BlobState>();
    await locked(s, () => commit(bs, s));
  },
  async getLength(bs) {
    return bs.state<BlobState>().size;
  },
  async getAllocatedFileSize(bs) {
    return bs.state<BlobState>().size;
  },
};

registerDriver(blobDriver);

/** Images the user supplied, by name: Files/Blobs (read-only) or file handles (writable with permission). */
export class BlobStorage implements Storage {
  readonly name = 'blob';
  readonly files = new Map<string, Blob | FileSystemFileHandle>();

  /** Adds a user-supplied file under `name` (a File's own name by default). */
  add(source: Blob | FileSystemFileHandle, name?: string): string {
    const n = namespaceName('blob', name ?? (source as { name?: string }).name ?? '', name ?? (source as { name?: string }).name ?? '');
    this.files.set(n, source);
    return n;
  }

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    const name = namespaceName('blob', filename, filename);
    const src = this.files.get(name);
    if (!src) throw new BlockError('ENOENT', `Could not open '${name}': No such file or directory (not among the files given to the page)`);
    const bs = new BlockNode(blobDriver, name, { readOnly: options.readOnly, blobSource: src });
    await blobDriver.open(bs, bs.options);
    return bs;
  }

  resolve(from: string, reference: string): string {
    const resolved = namespaceResolve('blob', from, reference);
    if (this.files.has(resolved)) return resolved;
    const base = resolved.slice(resolved.lastIndexOf('/') + 1);
    return this.files.has(base) ? base : resolved;
  }
}
