/**
 * The image the app shows: where it lives (storage + filename, as the
 * engine's ImageRef), the engine node it is open as, and its `qemu-img info`
 * facts with the backing chain.
 *
 * Images in the library are opened read-write (snapshots, test writes,
 * overlays, commit and stream change them); files, URLs and the demo are
 * opened read-only. On OPFS a read-write open takes the file's exclusive
 * lock, so whatever else wants that file (export, the library's listing)
 * asks the app first (see main.ts).
 */
import type { BlocktabClient } from '../client/index.js';
import type { QmpImageInfo } from '../engine/query.js';

export interface ImageSession {
  /** What the user knows the image as (file name, URL). */
  label: string;
  storage: string;
  filename: string;
  /** Node name of the open image in the worker. */
  node: string;
  /** Opened read-write: the edit tools work on it. */
  writable: boolean;
  /** Why a library image is read-only anyway (another tab holds it, say). */
  readOnlyReason?: string;
  info: QmpImageInfo;
  /** The chain, top image first. */
  layers: QmpImageInfo[];
  /** Set for a web image opened under a local overlay: its URL (the overlay is `filename`). */
  remoteUrl?: string;
}

export function chainOf(info: QmpImageInfo): QmpImageInfo[] {
  const out: QmpImageInfo[] = [];
  for (let i: QmpImageInfo | undefined = info; i; i = i['backing-image']) out.push(i);
  return out;
}

/**
 * Opens an image and gathers its facts; closes it again if the facts cannot
 * be read. With `writable`, an image that is in use elsewhere (EBUSY, EROFS)
 * opens read-only instead, with the reason noted.
 */
export async function openSession(client: BlocktabClient, storage: string, filename: string, label: string, writable = false): Promise<ImageSession> {
  let node: string;
  let readOnlyReason: string | undefined;
  if (writable) {
    try {
      node = await client.open(storage, filename, { readOnly: false });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'EBUSY' && code !== 'EROFS' && code !== 'EACCES') throw e;
      readOnlyReason = (e as Error).message;
      writable = false;
      node = await client.open(storage, filename, { readOnly: true });
    }
  } else {
    node = await client.open(storage, filename, { readOnly: true });
  }
  try {
    const info = await client.info(node, { backingChain: true });
    return { label, storage, filename, node, writable, readOnlyReason, info, layers: chainOf(info) };
  } catch (e) {
    await client.close(node).catch(() => {});
    throw e;
  }
}

/**
 * Opens a web image under its local overlay (made on first use, found again
 * after a reload), read-write: the guest's and the edit tools' writes stay
 * in the overlay, the server's image is never written.
 */
export async function openRemoteSession(client: BlocktabClient, url: string, label: string): Promise<ImageSession> {
  const { node, overlay } = await client.openRemoteOverlay(url);
  rememberOverlay(overlay, url);
  try {
    const info = await client.info(node, { backingChain: true });
    return { label, storage: 'remote', filename: overlay, node, writable: true, info, layers: chainOf(info), remoteUrl: url };
  } catch (e) {
    await client.close(node).catch(() => {});
    throw e;
  }
}

/** The overlays the app made (name in the library → URL), so the library reopens them after a reload. */
const OVERLAYS_KEY = 'blocktab-overlays';
/** The library's folder of overlays over web images; they open through the worker's `remote` storage. */
export const OVERLAY_DIR = 'overlays/';

export function knownOverlays(): Record<string, string> {
  try {
    return JSON.parse(localStorage.getItem(OVERLAYS_KEY) ?? '{}') as Record<string, string>;
  } catch {
    return {};
  }
}

function rememberOverlay(overlay: string, url: string): void {
  localStorage.setItem(OVERLAYS_KEY, JSON.stringify({ ...knownOverlays(), [overlay]: url }));
}

/** Re-reads the facts of an open session (after a write, a snapshot, a commit…). */
export async function refreshSession(client: BlocktabClient, s: ImageSession): Promise<void> {
  s.info = await client.info(s.node, { backingChain: true });
  s.layers = chainOf(s.info);
}
