/**
 * The worker's side of the app's remote disks: a URL opened with a qcow2
 * overlay in local storage (the guest's writes stay in the tab and survive
 * reloads: the same URL finds the same overlay again), the status the app
 * shows (the HTTP block cache and the overlay's size), and "export changes"
 * streamed into a file handle the page chose (a File System Access file, or
 * an OPFS file the page then offers as a download) — chunk by chunk, never
 * the whole disk in memory.
 */
import type { Engine } from '../engine/engine.js';
import type { Storage } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { BlockError } from '../block/errors.js';
import { isAllocated } from '../block/status.js';
import { httpStats, type HttpStatsNow } from '../protocols/http.js';
import { createRemoteOverlay, exportNode } from '../img/remote-overlay.js';

export interface RemoteOverlayOpened {
  /** Node name of the overlay, open read-write. */
  node: string;
  /** The overlay's name in the local storage. */
  overlay: string;
  /** false: an overlay made earlier for this URL was found and reused (a reload). */
  created: boolean;
}

export interface DiskStatus {
  /** The HTTP image's block cache and requests (null when no layer is on the web). */
  http: (HttpStatsNow & { url: string; blockSize?: number }) | null;
  /** The top layer when it is an overlay over the web image: its file's length and the guest bytes it holds. */
  overlay: { fileBytes: number; allocatedBytes: number; virtualBytes: number } | null;
}

export type ExportMode = 'overlay' | 'merged';

/** A short, stable name part for a URL (FNV-1a, 32 bits), so the same URL finds its overlay again. */
function urlTag(url: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < url.length; i++) h = Math.imul(h ^ url.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** Where the app keeps the overlay of `url` in local storage. */
export function overlayNameFor(url: string): string {
  const base = (new URL(url).pathname.split('/').pop() || 'disk').replace(/[^\w.-]+/g, '_').replace(/\.(qcow2|raw|img|vmdk|vhdx|vdi|vpc)$/i, '');
  return `overlays/${base}-${urlTag(url)}.qcow2`;
}

/**
 * Opens `url` under a qcow2 overlay in `storageName` (a CompositeStorage over
 * local storage and the web); `allowOrigin` lets that storage follow the
 * overlay's backing reference to the URL's origin.
 */
export async function openRemoteOverlay(engine: Engine, storageName: string, url: string, allowOrigin: (origin: string) => void): Promise<RemoteOverlayOpened> {
  let origin: string;
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
    origin = u.origin;
  } catch (e) {
    throw new BlockError('EINVAL', `'${url}' is not an http(s) URL`, { cause: e });
  }
  const storage = engine.storages.get(storageName);
  if (!storage) throw new BlockError('ENOENT', `No storage named '${storageName}'`);
  allowOrigin(origin);
  const overlay = overlayNameFor(url);
  const created = !(await exists(storage, overlay));
  if (created) await createRemoteOverlay(storage, { overlay, url });
  const node = await engine.open(storageName, overlay, { readOnly: false });
  return { node, overlay, created };
}

async function exists(storage: Storage, name: string): Promise<boolean> {
  try {
    const bs = await storage.openProtocol(name, { readOnly: true });
    await bs.driver.close?.(bs);
    return true;
  } catch (e) {
    if ((e as BlockError).code === 'ENOENT') return false;
    throw e;
  }
}

const isHttp = (bs: BlockNode | null | undefined): boolean => !!bs && bs.driver.kind === 'protocol' && bs.driver.name.startsWith('http');

/** The HTTP protocol node of the first layer of `top`'s chain that is on the web. */
function webNode(top: BlockNode): { layer: BlockNode; http: BlockNode } | null {
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    if (isHttp(n)) return { layer: n, http: n };
    const f = n.fileNode();
    if (f && isHttp(f)) return { layer: n, http: f };
  }
  return null;
}

/** The status panel's figures for the open image `top`. */
export async function diskStatus(top: BlockNode): Promise<DiskStatus> {
  const web = webNode(top);
  const http = web ? { ...httpStats(web.http), url: web.http.filename } : null;
  let overlay: DiskStatus['overlay'] = null;
  const file = top.fileNode();
  if (web && web.layer !== top && file && !isHttp(file)) {
    overlay = { fileBytes: file.totalBytes, allocatedBytes: await allocatedIn(top, file.totalBytes), virtualBytes: top.totalBytes };
  }
  return { http, overlay };
}

/** Last count per overlay: the app asks every second, and a walk over a large sparse disk is not free. */
const allocatedCache = new WeakMap<BlockNode, { fileBytes: number; at: number; bytes: number }>();
/** How long a count stands while the overlay's file keeps its length (discards and rewrites do not grow it). */
const ALLOCATED_TTL_MS = 5000;

/** Guest bytes allocated in `top` itself; counted again when its file grew (new clusters) or the count is old. */
async function allocatedIn(top: BlockNode, fileBytes: number): Promise<number> {
  const c = allocatedCache.get(top);
  if (c && c.fileBytes === fileBytes && Date.now() - c.at < ALLOCATED_TTL_MS) return c.bytes;
  let bytes = 0;
  for (let off = 0; off < top.totalBytes; ) {
    const r = await isAllocated(top, off, top.totalBytes - off);
    if (r.pnum <= 0) break;
    if (r.allocated) bytes += r.pnum;
    off += r.pnum;
  }
  allocatedCache.set(top, { fileBytes, at: Date.now(), bytes });
  return bytes;
}

/** What the worker needs of a FileSystemFileHandle (File System Access, or OPFS). */
export interface WritableHandle {
  createWritable(): Promise<{ write(data: Uint8Array<ArrayBuffer>): Promise<void>; close(): Promise<void>; abort(): Promise<void> }>;
}

/**
 * Exports the open image `top`: `overlay` its top layer's file as stored (the
 * small qcow2 that still names the URL as its backing file), `merged` the
 * guest's whole disk as raw. Flushed first, so the file is consistent.
 */
export async function exportTo(top: BlockNode, flush: () => Promise<void>, mode: ExportMode, handle: WritableHandle, onProgress?: (done: number, total: number) => void): Promise<number> {
  const src = mode === 'overlay' ? top.fileNode() : top;
  if (!src || (mode === 'overlay' && top.driver.kind !== 'format')) {
    throw new BlockError('EINVAL', `${top.filename}: only an image with a file below it exports as an overlay`);
  }
  await flush();
  const out = await handle.createWritable();
  try {
    const total = await exportNode(src, { write: (c) => out.write(c as Uint8Array<ArrayBuffer>) }, mode === 'merged', { onProgress });
    await out.close();
    return total;
  } catch (e) {
    await out.abort().catch(() => {});
    throw e;
  }
}
