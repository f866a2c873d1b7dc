// In Chromium: a qcow2 overlay in IndexedDB over a qemu-img-made image served by
// HTTP. The guest view through the chain matches qemu-img's hash, writes land
// in the overlay and are there after the storage is reopened from scratch (a
// new connection, as after a reload), and "export changes" streams the
// overlay (which reads back, over its URL backing file, as the guest's view)
// and the merged disk through a WritableStream in bounded chunks.
import { describe, expect, inject, it } from 'vitest';
import '../../src/browser.js';
import { IdbStorage } from '../../src/protocols/idb.js';
import { HttpStorage, httpStats } from '../../src/protocols/http.js';
import { OpfsBlockStore } from '../../src/protocols/http-store-opfs.js';
import { CompositeStorage } from '../../src/protocols/browser-composite.js';
import { MemoryStorage, MemoryFile } from '../../src/protocols/memory.js';
import { bdrvPread, bdrvPwrite, bdrvFlush } from '../../src/block/io.js';
import { closeNode, openImage, type Storage } from '../../src/block/open.js';
import { createRemoteOverlay, exportChanges } from '../../src/img/remote-overlay.js';
import { seededBytes } from './fixtures.js';
import { sha256Hex } from './assert.js';

const info = inject('storageServer');
const image = info.images.find((i) => i.name === 'qcow2/plain.qcow2')!;
const url = info.baseUrl + image.name;
const dbName = `blocktab-overlay-${Date.now().toString(36)}`;

function storage(local: Storage): CompositeStorage {
  return new CompositeStorage(local, new HttpStorage(undefined, { blockSize: 16 * 1024 }), { allowRemoteBacking: [new URL(url).origin] });
}

async function guestView(st: Storage, name: string): Promise<Uint8Array> {
  const bs = await openImage(st, name, { readOnly: true });
  const out = new Uint8Array(bs.totalBytes);
  await bdrvPread(bs, 0, out.length, out);
  await closeNode(bs);
  return out;
}

describe('persistent overlay over HTTP (IndexedDB, Chromium)', () => {
  it('survives reopening and exports the overlay and the merged disk as streams', async () => {
    const idb1 = new IdbStorage(dbName);
    const st1 = storage(idb1);
    await createRemoteOverlay(st1, { overlay: 'disk.qcow2', url });
    const before = await guestView(st1, 'disk.qcow2');
    expect(await sha256Hex(before)).toBe(image.sha256);

    const model = before.slice();
    const writes: [number, Uint8Array][] = [
      [1000, seededBytes(5000, 1)],
      [3 * 1024 * 1024 + 7, seededBytes(200_000, 2)],
    ];
    const bs = await openImage(st1, 'disk.qcow2', { readOnly: false });
    for (const [off, d] of writes) {
      await bdrvPwrite(bs, off, d.length, d);
      model.set(d, off);
    }
    await bdrvFlush(bs);
    await closeNode(bs);
    await idb1.close();

    // A fresh connection to the same database, as a reloaded page would open.
    const st2 = storage(new IdbStorage(dbName));
    const after = await guestView(st2, 'disk.qcow2');
    expect(await sha256Hex(after)).toBe(await sha256Hex(model));

    // Merged export through a WritableStream: chunks of at most 512 KiB.
    const merged: Uint8Array[] = [];
    const stream = new WritableStream<Uint8Array>({ write: (c) => void merged.push(c.slice()) });
    const w = stream.getWriter();
    const total = await exportChanges(st2, 'disk.qcow2', w, { mode: 'merged', chunkBytes: 512 * 1024 });
    await w.close();
    expect(total).toBe(model.length);
    expect(Math.max(...merged.map((c) => c.length))).toBeLessThanOrEqual(512 * 1024);
    expect(await sha256Hex(new Uint8Array(await new Blob(merged as BlobPart[]).arrayBuffer()))).toBe(await sha256Hex(model));

    // The overlay export is small and, opened elsewhere with the same URL backing, reads as the guest's view.
    const parts: Uint8Array[] = [];
    await exportChanges(st2, 'disk.qcow2', { write: async (c) => void parts.push(c.slice()) }, { mode: 'overlay' });
    const overlayBytes = new Uint8Array(await new Blob(parts as BlobPart[]).arrayBuffer());
    expect(overlayBytes.length).toBeLessThan(model.length);
    const mem = new MemoryStorage();
    mem.files.set('copy.qcow2', new MemoryFile(overlayBytes));
    const elsewhere = await guestView(storage(mem), 'copy.qcow2');
    expect(await sha256Hex(elsewhere)).toBe(await sha256Hex(model));
  });

  it('explains a blocked cross-origin read as a possible CORS refusal', async () => {
    // A port nothing listens on: the page sees the same TypeError as for a CORS refusal.
    const st = new HttpStorage(undefined, { retries: 1, retryDelayMs: 1 });
    const e = await st.openProtocol('http://127.0.0.1:9/disk.raw', { readOnly: true }).catch((x: Error) => x);
    expect((e as Error).message).toMatch(/HEAD failed after 2 attempts: .*CORS refusal.*Access-Control-Allow-Origin/);
    // A server that hides Content-Range (no Access-Control-Expose-Headers) is named as such.
    const hidden = new HttpStorage(info.baseUrl, { retryDelayMs: 1 });
    const bs = await hidden.openProtocol(`nocors/${image.name}`, { readOnly: true });
    const e2 = await bdrvPread(bs, 0, 10, new Uint8Array(10)).catch((x: Error) => x);
    expect((e2 as Error).message).toMatch(/Content-Range header is hidden from this page by CORS/);
    expect(httpStats(bs).requests).toBeGreaterThan(0);
  });

  it('an OPFS block store serves a second session of the same image without fetching blocks', async () => {
    const store = new OpfsBlockStore({ directory: `${dbName}-cache` });
    const read = async () => {
      const bs = await new HttpStorage(undefined, { blockSize: 16 * 1024, store }).openProtocol(url, { readOnly: true });
      const out = new Uint8Array(bs.totalBytes);
      await bdrvPread(bs, 0, out.length, out);
      await bs.driver.close!(bs);
      return { out, stats: httpStats(bs) };
    };
    const first = await read();
    const second = await read();
    expect(first.stats.blocksFetched).toBeGreaterThan(0);
    expect(second.stats.blocksFetched).toBe(0);
    expect(second.stats.storeHits).toBe(first.stats.blocksFetched);
    expect(await sha256Hex(second.out)).toBe(await sha256Hex(first.out));
    await store.clear();
  });
});
