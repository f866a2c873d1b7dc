// The http protocol's failure handling against the loopback Range server with
// injected faults: retries with backoff, a changed remote image refused, S3-style
// presigned URLs, bounded parallel requests, the persistent block store, CORS
// explanations. Everything is judged by counting requests, never by time. Both
// transports (the global fetch, node:http with keep-alive) meet every fault.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tmpDir, seededBytes } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';
import { HttpStorage, httpStats, type HttpBlockStore, type HttpOptions } from '../../src/protocols/http.js';
import { HTTP_TRANSPORTS as TRANSPORTS } from '../helpers/http-transports.js';
import { bdrvPread, BlockError, type BlockNode } from '../../src/index.js';

let server: RangeServer;
let dir: string;
const SIZE = 300_001;
const data = seededBytes(SIZE, 11);
const baseOpts: HttpOptions = { blockSize: 4096, cacheBytes: 256 * 1024, maxReadAhead: 16 * 1024, retryDelayMs: 1 };

beforeAll(async () => {
  dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'disk.raw'), data);
  server = await startRangeServer(dir);
});
afterAll(() => server.close());

async function read(bs: BlockNode, off: number, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  await bdrvPread(bs, off, n, out);
  return out;
}
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}
async function failure(p: Promise<unknown>): Promise<BlockError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BlockError);
  return e as BlockError;
}

describe.each(TRANSPORTS)('http protocol under faults ($name)', ({ transport }) => {
  const opts: HttpOptions = { ...baseOpts, transport };
  it('retries 5xx, dropped connections and bodies cut short, then gives up with the status', async () => {
    const bs = await new HttpStorage(server.baseUrl, opts).openProtocol('disk.raw', { readOnly: true });
    server.injectFaults(2, { kind: 'status', status: 503 });
    server.injectFaults(1, { kind: 'drop' });
    server.injectFaults(1, { kind: 'truncate' });
    expect(same(await read(bs, 8192, 5000), data.subarray(8192, 13192))).toBe(true);
    expect(httpStats(bs).retries).toBe(4);
    const few = await new HttpStorage(server.baseUrl, { ...opts, retries: 2 }).openProtocol('disk.raw', { readOnly: true });
    server.injectFaults(3, { kind: 'status', status: 502 });
    const e = await failure(read(few, 100_000, 10));
    expect(e.code).toBe('EIO');
    expect(e.message).toMatch(/disk\.raw: read of bytes 98304-102399 failed: HTTP 502/);
    expect(httpStats(few).retries).toBe(2);
    // A 404 is final: no retry.
    const n0 = server.log.length;
    await failure(new HttpStorage(server.baseUrl, opts).openProtocol('gone.raw', { readOnly: true }));
    expect(server.log.length - n0).toBe(1);
  });

  it('refuses to mix versions: a file replaced mid-session is detected by ETag, or by Last-Modified without one', async () => {
    for (const prefix of ['', 'noetag/']) {
      fs.writeFileSync(path.join(dir, 'changing.raw'), data);
      const bs = await new HttpStorage(server.baseUrl, opts).openProtocol(`${prefix}changing.raw`, { readOnly: true });
      expect(same(await read(bs, 0, 100), data.subarray(0, 100))).toBe(true);
      const v2 = data.slice();
      v2[200_000] ^= 0xff;
      server.replace('changing.raw', v2);
      // Cached blocks are still the old version; a block fetched now would be the new one.
      expect(same(await read(bs, 0, 100), data.subarray(0, 100))).toBe(true);
      const e = await failure(read(bs, 199_000, 2000));
      expect(e.code).toBe('EIO');
      expect(e.message).toMatch(prefix ? /changed on the server while open \(Last-Modified/ : /changed on the server while open \(ETag/);
    }
  });

  it('reads S3-style presigned URLs: the query is kept, HEAD refused for GET-only signatures', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    const q = '?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=60&X-Amz-Signature=abc123';
    const bs = await st.openProtocol(`presigned/disk.raw${q}`, { readOnly: true });
    expect(bs.totalBytes).toBe(SIZE);
    expect(same(await read(bs, 250_000, 50_001), data.subarray(250_000))).toBe(true);
    const e = await failure(st.openProtocol('presigned/disk.raw', { readOnly: true }));
    expect(e.code).toBe('EACCES');
    expect(e.message).toMatch(/HTTP 403.*presigned URL may have expired/);
  });

  it('keeps requests in flight bounded, and uses the bound for scattered reads', async () => {
    server.setLatency(15);
    try {
      for (const maxInflight of [2, 6]) {
        const bs = await new HttpStorage(server.baseUrl, { ...opts, maxInflight }).openProtocol('disk.raw', { readOnly: true });
        const offs = [0, 40_000, 80_000, 120_000, 160_000, 200_000, 240_000, 280_000];
        const outs = await Promise.all(offs.map((o) => read(bs, o, 100)));
        offs.forEach((o, i) => expect(same(outs[i]!, data.subarray(o, o + 100))).toBe(true));
        expect(httpStats(bs).peakInflight).toBe(maxInflight);
        // Random reads trigger no read-ahead: one block each.
        expect(httpStats(bs).blocksFetched).toBe(offs.length);
      }
    } finally {
      server.setLatency(0);
    }
  });

  it('a timeout is a retried failure, then an error that says so', async () => {
    server.setLatency(400);
    try {
      const e = await failure(new HttpStorage(server.baseUrl, { ...opts, timeoutMs: 20, retries: 1 }).openProtocol('disk.raw', { readOnly: true }));
      expect(e.message).toMatch(/disk\.raw: HEAD failed after 2 attempts: timed out after 20 ms/);
    } finally {
      server.setLatency(0);
    }
  });

  it('a persistent store serves a second session without requests, and never across versions', async () => {
    const blocks = new Map<string, Uint8Array>();
    const store: HttpBlockStore = {
      get: async (k, i) => blocks.get(`${k}#${i}`),
      put: async (k, i, d) => void blocks.set(`${k}#${i}`, d.slice()),
    };
    fs.writeFileSync(path.join(dir, 'stored.raw'), data);
    const st = new HttpStorage(server.baseUrl, { ...opts, store });
    const a = await st.openProtocol('stored.raw', { readOnly: true });
    expect(same(await read(a, 0, SIZE), data)).toBe(true);
    await a.driver.close!(a);
    const b = await st.openProtocol('stored.raw', { readOnly: true });
    const fetched0 = httpStats(b).blocksFetched;
    expect(same(await read(b, 0, SIZE), data)).toBe(true);
    expect(httpStats(b).blocksFetched - fetched0).toBe(0);
    expect(httpStats(b).storeHits).toBeGreaterThan(0);
    const v2 = data.slice().fill(7, 0, 4096);
    server.replace('stored.raw', v2);
    const c = await st.openProtocol('stored.raw', { readOnly: true });
    expect(same(await read(c, 0, 4096), v2.subarray(0, 4096))).toBe(true);
    expect(httpStats(c), JSON.stringify(server.log.slice(-4))).toMatchObject({ storeHits: 0 });
  });

  it('explains that a page cannot tell a CORS refusal from a network failure', async () => {
    const failing = (async () => {
      throw new TypeError('Failed to fetch');
    }) as typeof fetch;
    const st = new HttpStorage(server.baseUrl, { ...opts, transport: undefined, retries: 1, fetch: failing, pageOrigin: 'https://app.example' });
    const e = await failure(st.openProtocol('disk.raw', { readOnly: true }));
    expect(e.message).toMatch(/Failed to fetch.*CORS.*Access-Control-Allow-Origin.*Range.*Content-Range/);
    // Hidden Content-Range (no Access-Control-Expose-Headers) is named as a CORS problem too.
    const hiding = (async (u: string, init?: RequestInit) => {
      const r = await fetch(u, init);
      const h = new Headers(r.headers);
      h.delete('content-range');
      return new Response(r.body, { status: r.status, headers: h });
    }) as typeof fetch;
    const st2 = new HttpStorage(server.baseUrl, { ...opts, transport: undefined, fetch: hiding, pageOrigin: 'https://app.example' });
    const bs = await st2.openProtocol('disk.raw', { readOnly: true });
    const e2 = await failure(read(bs, 0, 10));
    expect(e2.message).toMatch(/Content-Range header is hidden from this page by CORS/);
  });
});
