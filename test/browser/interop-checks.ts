/**
 * Images made by qemu-img (global-setup.ts), copied into a storage and read
 * through openImage: the raw bytes' SHA-256 must equal qemu-img convert's.
 * Worker-safe (the OPFS worker runs them too); the page passes the server info.
 */
import type { Storage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { bdrvPread } from '../../src/block/io.js';
import { CompositeStorage } from '../../src/protocols/browser-composite.js';
import { HttpStorage } from '../../src/protocols/http.js';
import { equal, rejects, sha256Hex } from './assert.js';
import type { StorageFactory } from './conformance.js';
import type { InteropImage, StorageServerInfo } from './fixtures.js';

export interface InteropCase {
  name: string;
  /** Only with the qcow2 driver registered. */
  needsQcow2: boolean;
  run(info: StorageServerInfo): Promise<void>;
}

async function fetchFiles(base: string, names: string[]): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const n of names) {
    const res = await fetch(base + n);
    if (!res.ok) throw new Error(`fetch ${n}: HTTP ${res.status}`);
    out[n] = new Uint8Array(await res.arrayBuffer());
  }
  return out;
}

export async function rawSha(bs: BlockNode): Promise<string> {
  const out = new Uint8Array(bs.totalBytes);
  await bdrvPread(bs, 0, out.length, out);
  return sha256Hex(out);
}

async function checkImage(st: Storage, img: InteropImage, what: string): Promise<void> {
  const bs = await openImage(st, img.name, { readOnly: true, format: img.format });
  try {
    equal(bs.totalBytes, img.virtualSize, `${what} ${img.name}: virtual size`);
    equal(await rawSha(bs), img.sha256, `${what} ${img.name}: SHA-256 of the raw content (qemu-img convert -O raw)`);
  } finally {
    await closeNode(bs);
  }
}

/**
 * `f.make(files)` gets the image files (fetched from the server) and returns a
 * storage holding them; `local` (writable local storages only) enables the
 * overlay-over-HTTP case.
 */
export function interopChecks(f: StorageFactory, local = f.writable): InteropCase[] {
  const group = (needsQcow2: boolean) => async (info: StorageServerInfo) => {
    const imgs = info.images.filter((i) => (i.format === 'qcow2') === needsQcow2);
    if (imgs.length === 0) throw new Error('no images');
    for (const img of imgs) {
      const st = await f.make(await fetchFiles(info.baseUrl, [img.name, ...img.needs]));
      await checkImage(st, img, f.name);
    }
  };
  const cases: InteropCase[] = [
    { name: 'interop: raw images made by qemu-img read back with qemu-img convert -O raw SHA-256', needsQcow2: false, run: group(false) },
    { name: 'interop: qcow2 images (compressed, zero clusters, backing chain) match qemu-img', needsQcow2: true, run: group(true) },
  ];
  if (local) {
    cases.push({
      name: 'interop: a local qcow2 overlay over an HTTP base (only with allowRemoteBacking)',
      needsQcow2: true,
      async run(info) {
        const ov = info.remoteOverlay;
        const files = await fetchFiles(info.baseUrl, [ov.name]);
        const local = await f.make(files);
        const http = new HttpStorage(info.baseUrl);
        const origin = new URL(info.baseUrl).origin;
        // Without permission the local image may not reach the network.
        await rejects(openImage(new CompositeStorage(local, http), ov.name, { readOnly: true }), 'EPERM', /overlay\.qcow2.*allowRemoteBacking/, 'remote backing without permission');
        await rejects(
          openImage(new CompositeStorage(local, http, { allowRemoteBacking: ['https://example.org'] }), ov.name, { readOnly: true }),
          'EPERM',
          /refusing/,
          'remote backing on an origin not allowed',
        );
        const st = new CompositeStorage(local, http, { allowRemoteBacking: [origin] });
        await checkImage(st, ov, `${f.name}+http`);
      },
    });
  }
  return cases;
}
