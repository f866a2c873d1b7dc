/**
 * A remote image with local writes: a qcow2 overlay kept in local storage
 * (OPFS, IndexedDB, a file) whose backing file is an http(s) URL opened
 * read-only. The guest writes land in the overlay and survive reloads; the
 * remote image is never written. "Export changes" streams either the overlay
 * itself (small: only what the guest wrote, still naming the URL as its
 * backing file) or the full merged disk as raw bytes, chunk by chunk into a
 * sink (a File System Access writable, a download stream), never whole in
 * memory. The storage must route URLs to the web and allow the URL's origin as
 * a backing file (CompositeStorage with allowRemoteBacking).
 */
import { BlockError } from '../block/errors.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
import { bdrvPread } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { blockStatusAbove, BDRV_BLOCK_ZERO } from '../block/status.js';
import { createImage, planCreate } from './create.js';

export interface RemoteOverlayRequest {
  /** The overlay's name in `storage` (created, or truncated when it exists). */
  overlay: string;
  /** The remote image's URL (its backing file). */
  url: string;
  /** The remote image's format (probed when absent). */
  backingFormat?: string;
  /** -o options for the overlay (cluster_size, …). */
  options?: string[];
}

/** Creates the overlay over the remote image (size and format from the remote image). */
export async function createRemoteOverlay(storage: Storage, req: RemoteOverlayRequest): Promise<void> {
  if (!/^https?:\/\//i.test(req.url)) throw new BlockError('EINVAL', `${req.overlay}: the backing image '${req.url}' is not an http(s) URL`);
  let format = req.backingFormat;
  if (!format) {
    const base = await openImage(storage, req.url, { readOnly: true });
    format = base.driver.name;
    await closeNode(base);
  }
  const plan = await planCreate(storage, {
    filename: req.overlay,
    format: 'qcow2',
    options: req.options,
    backingFile: req.url,
    backingFormat: format,
  });
  await createImage(storage, plan);
}

/** Where exported bytes go, in order; a WritableStreamDefaultWriter fits. */
export interface ExportSink {
  write(chunk: Uint8Array): Promise<void>;
}

export interface ExportOptions {
  /** `overlay`: the qcow2 file as stored; `merged`: the guest's whole disk as raw. */
  mode: 'overlay' | 'merged';
  /** Bytes per chunk handed to the sink (default 4 MiB); the most held in memory at once. */
  chunkBytes?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Streams the overlay or the merged disk into `sink`; returns the bytes written. */
export async function exportChanges(storage: Storage, overlay: string, sink: ExportSink, opts: ExportOptions): Promise<number> {
  const node =
    opts.mode === 'overlay'
      ? await storage.openProtocol(overlay, { readOnly: true })
      : await openImage(storage, overlay, { readOnly: true, format: 'qcow2' });
  try {
    return await exportNode(node, sink, opts.mode === 'merged', opts);
  } finally {
    await closeNode(node);
  }
}

/**
 * Streams `node`'s bytes into `sink`: an open overlay's file node (the
 * overlay as stored; flush the format node first) or, with `merged`, its
 * format node (the guest's view, zero ranges written without reading).
 * For an overlay that is open read-write already (a guest is using it).
 */
export async function exportNode(node: BlockNode, sink: ExportSink, merged: boolean, opts: Omit<ExportOptions, 'mode'> = {}): Promise<number> {
  const chunk = opts.chunkBytes ?? 4 * 1024 * 1024;
  const total = node.totalBytes;
  for (let off = 0; off < total; ) {
    const n = Math.min(chunk, total - off);
    const buf = new Uint8Array(n);
    // Zero ranges of the merged disk (unallocated anywhere in the chain, or zero clusters) need no read.
    const st = merged ? await blockStatusAbove(node, null, true, off, n) : null;
    const len = st ? st.pnum : n;
    if (!st || !(st.status & BDRV_BLOCK_ZERO)) await bdrvPread(node, off, len, buf.subarray(0, len));
    await sink.write(len === n ? buf : buf.subarray(0, len));
    off += len;
    opts.onProgress?.(off, total);
  }
  return total;
}
