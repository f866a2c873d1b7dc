/**
 * The image the app shows: where it lives (storage + filename, as the
 * engine's ImageRef), the engine node it is open as (read-only, for map,
 * reads and convert), and its `qemu-img info` facts with the backing chain.
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
  info: QmpImageInfo;
  /** The chain, top image first. */
  layers: QmpImageInfo[];
}

export function chainOf(info: QmpImageInfo): QmpImageInfo[] {
  const out: QmpImageInfo[] = [];
  for (let i: QmpImageInfo | undefined = info; i; i = i['backing-image']) out.push(i);
  return out;
}

/** Opens an image read-only and gathers its facts; closes it again if the facts cannot be read. */
export async function openSession(client: BlocktabClient, storage: string, filename: string, label: string): Promise<ImageSession> {
  const node = await client.open(storage, filename, { readOnly: true });
  try {
    const info = await client.info(node, { backingChain: true });
    return { label, storage, filename, node, info, layers: chainOf(info) };
  } catch (e) {
    await client.close(node).catch(() => {});
    throw e;
  }
}
