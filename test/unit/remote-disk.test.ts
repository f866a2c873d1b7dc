// The worker's remote-disk service (src/worker/remote-disk.ts) in Node, over
// the loopback range server: a URL under a local overlay that a second open
// finds again, the status figures against what the test did, and exportTo
// streaming the overlay and the merged disk into a writable handle in chunks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Engine } from '../../src/engine/engine.js';
import { MemoryStorage, MemoryFile } from '../../src/protocols/memory.js';
import { HttpStorage } from '../../src/protocols/http.js';
import { CompositeStorage } from '../../src/protocols/browser-composite.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvPread } from '../../src/block/io.js';
import { diskStatus, exportTo, openRemoteOverlay, overlayNameFor } from '../../src/worker/remote-disk.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';
import { seededBytes } from '../helpers/random.js';
import { tmpDir } from '../helpers/qemu.js';

const MiB = 1 << 20;
let server: RangeServer;
let dir: string;
const base = seededBytes(6 * MiB, 41);

beforeAll(async () => {
  dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'disk.raw'), base);
  server = await startRangeServer(dir);
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function setup() {
  const local = new MemoryStorage();
  const origins: string[] = [];
  const http = new HttpStorage(undefined, { retryDelayMs: 1, blockSize: 64 * 1024 });
  const engine = new Engine({ storages: { local, remote: new CompositeStorage(local, http, { allowRemoteBacking: origins }) } });
  const allow = (o: string) => void (origins.includes(o) || origins.push(o));
  return { engine, local, allow, origins };
}

/** A WritableHandle that keeps the chunks it got. */
function collector() {
  const chunks: Uint8Array[] = [];
  let closed = false;
  return {
    chunks,
    closed: () => closed,
    bytes: () => Buffer.concat(chunks),
    handle: {
      createWritable: async () => ({
        write: async (c: Uint8Array) => void chunks.push(c.slice()),
        close: async () => void (closed = true),
        abort: async () => {},
      }),
    },
  };
}

describe('remote disk service (worker side)', () => {
  it('opens a URL under a local overlay, finds it again, reports the cache and the overlay, and exports both ways', async () => {
    const { engine, local, allow, origins } = setup();
    const url = `${server.baseUrl}disk.raw`;
    const first = await openRemoteOverlay(engine, 'remote', url, allow);
    expect(first).toMatchObject({ created: true, overlay: overlayNameFor(url) });
    expect(origins).toEqual([new URL(url).origin]);

    // Reads of the web image: fetched once, then from the block cache.
    const a = await engine.read(first.node, MiB, 128 * 1024);
    expect(Buffer.from(a).equals(Buffer.from(base.subarray(MiB, MiB + 128 * 1024)))).toBe(true);
    await engine.read(first.node, MiB, 128 * 1024);
    let st = await diskStatus(engine.lookup(first.node));
    expect(st.http).toMatchObject({ url, blocksFetched: 2, bytesFetched: 128 * 1024, inflight: 0 });
    expect(st.http!.cacheHits).toBeGreaterThanOrEqual(2);
    expect(st.overlay).toMatchObject({ allocatedBytes: 0, virtualBytes: base.length });

    // A write lands in the overlay: 70 000 bytes from 3 MiB + 100 touch two 64 KiB clusters.
    const w = seededBytes(70_000, 42);
    await engine.write(first.node, 3 * MiB + 100, w.slice());
    st = await diskStatus(engine.lookup(first.node));
    expect(st.overlay!.allocatedBytes).toBe(2 * 65536);
    expect(st.overlay!.fileBytes).toBe(local.files.get(first.overlay)!.size);
    await engine.close(first.node);

    // Opened again (a reload): the same overlay, the write still there.
    const again = await openRemoteOverlay(engine, 'remote', url, allow);
    expect(again).toMatchObject({ created: false, overlay: first.overlay });
    const view = base.slice();
    view.set(w, 3 * MiB + 100);
    // And one more write, exported without closing first (exportTo flushes).
    const w2 = seededBytes(5000, 43);
    await engine.write(again.node, 5 * MiB + 7, w2.slice());
    view.set(w2, 5 * MiB + 7);

    const merged = collector();
    expect(await exportTo(engine.lookup(again.node), () => engine.flush(again.node), 'merged', merged.handle)).toBe(base.length);
    expect(merged.closed()).toBe(true);
    expect(Math.max(...merged.chunks.map((c) => c.length))).toBeLessThanOrEqual(4 * MiB);
    expect(merged.bytes().equals(Buffer.from(view))).toBe(true);

    // The overlay export is the stored qcow2: small, and over the same URL it reads as the guest's view.
    const small = collector();
    await exportTo(engine.lookup(again.node), () => engine.flush(again.node), 'overlay', small.handle);
    expect(small.bytes().length).toBeLessThan(MiB);
    const elsewhere = new MemoryStorage();
    elsewhere.files.set('copy.qcow2', new MemoryFile(new Uint8Array(small.bytes())));
    const bs = await openImage(new CompositeStorage(elsewhere, new HttpStorage(), { allowRemoteBacking: true }), 'copy.qcow2', { readOnly: true });
    const got = new Uint8Array(bs.totalBytes);
    await bdrvPread(bs, 0, got.length, got);
    await closeNode(bs);
    expect(Buffer.from(got).equals(Buffer.from(view))).toBe(true);
    await engine.close(again.node);
  });

  it('refuses what is not an http(s) URL, and a read-only web image has no overlay figures', async () => {
    const { engine, allow, origins } = setup();
    await expect(openRemoteOverlay(engine, 'remote', 'file:///etc/passwd', allow)).rejects.toThrow(/not an http\(s\) URL/);
    expect(origins).toEqual([]);
    const node = await engine.open('remote', `${server.baseUrl}disk.raw`, { readOnly: true, format: 'raw' });
    const st = await diskStatus(engine.lookup(node));
    expect(st.http).not.toBeNull();
    expect(st.overlay).toBeNull();
    await engine.close(node);
  });
});
