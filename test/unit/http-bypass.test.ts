// Reads that cover whole uncached blocks go around the http protocol's block
// cache: their bytes come straight into the caller's buffer, the partial blocks
// at the edges still through the cache. Judged by bytes and counters (never by
// time), on every transport: the global fetch, the Node client for plain http
// (http-wire), and node:http.
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
const B = 4096;
const SIZE = 200 * B + 123;
const data = seededBytes(SIZE, 23);
// maxReadAhead 0: only the reads themselves send requests, so the counters below are exact.
// A 1 MiB cache: one read may hold a quarter of it (64 blocks), so the block layer does not split the reads below.
const baseOpts: HttpOptions = { blockSize: B, cacheBytes: 1024 * 1024, maxReadAhead: 0, retryDelayMs: 1 };

beforeAll(async () => {
  dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'disk.raw'), data);
  server = await startRangeServer(dir);
});
afterAll(() => server.close());

async function read(bs: BlockNode, off: number, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n).fill(0xa5);
  await bdrvPread(bs, off, n, out);
  return out;
}
const same = (a: Uint8Array, off: number) => Buffer.from(a).equals(Buffer.from(data.subarray(off, off + a.length)));

describe.each(TRANSPORTS)('http reads around the cache ($name)', ({ transport }) => {
  const opts: HttpOptions = { ...baseOpts, transport };
  const open = (o: HttpOptions = {}) => new HttpStorage(server.baseUrl, { ...opts, ...o }).openProtocol('disk.raw', { readOnly: true });

  it('reads whole uncached blocks straight into the buffer, and the partial edge blocks through the cache', async () => {
    const bs = await open();
    // Blocks 10..29 whole, plus 100 bytes of block 9 and 200 of block 30.
    const off = 10 * B - 100;
    const out = await read(bs, off, 20 * B + 300);
    expect(same(out, off)).toBe(true);
    const st = httpStats(bs);
    expect(st.blocksBypassed).toBe(20);
    expect(st.blocksFetched).toBe(22);
    // The edge blocks are cached, the bypassed ones are not: re-reading an edge sends nothing, a middle block one request.
    const r0 = st.requests;
    expect(same(await read(bs, 9 * B, B), 9 * B)).toBe(true);
    expect(same(await read(bs, 30 * B + 5, 10), 30 * B + 5)).toBe(true);
    expect(httpStats(bs).requests).toBe(r0);
    expect(same(await read(bs, 15 * B, 10), 15 * B)).toBe(true);
    expect(httpStats(bs).requests).toBe(r0 + 1);
  });

  it('straddling cached blocks, a read goes through the cache; the file end and a short read stay correct', async () => {
    const bs = await open();
    expect(same(await read(bs, 50 * B + 7, 3), 50 * B + 7)).toBe(true); // block 50 cached
    const off = 40 * B;
    expect(same(await read(bs, off, 20 * B), off)).toBe(true);
    expect(httpStats(bs).blocksBypassed).toBe(0);
    // Whole blocks up to the file's short last block: the last one through the cache, the rest around it; past the end reads zeros.
    const tailOff = 190 * B;
    const out = await read(bs, tailOff, 12 * B);
    expect(same(out.subarray(0, SIZE - tailOff), tailOff)).toBe(true);
    expect(out.subarray(SIZE - tailOff).every((x) => x === 0)).toBe(true);
    expect(httpStats(bs).blocksBypassed).toBe(10);
    // Fewer whole blocks than the bypass needs: the cache as before.
    const b0 = httpStats(bs).blocksBypassed;
    expect(same(await read(bs, 120 * B, 3 * B), 120 * B)).toBe(true);
    expect(httpStats(bs).blocksBypassed).toBe(b0);
  });

  it('retries a body cut short and a 503 on the way around the cache', async () => {
    const bs = await open();
    server.injectFaults(1, { kind: 'truncate' });
    server.injectFaults(1, { kind: 'status', status: 503 });
    const off = 60 * B;
    expect(same(await read(bs, off, 16 * B), off)).toBe(true);
    expect(httpStats(bs)).toMatchObject({ retries: 2, blocksBypassed: 16 });
  });

  it('refuses a read around the cache once the file changed on the server', async () => {
    fs.writeFileSync(path.join(dir, 'changing.raw'), data);
    const bs = await new HttpStorage(server.baseUrl, opts).openProtocol('changing.raw', { readOnly: true });
    expect(same(await read(bs, 0, 100), 0)).toBe(true);
    const v2 = data.slice();
    v2[100 * B] ^= 0xff;
    server.replace('changing.raw', v2);
    const e = await read(bs, 80 * B, 40 * B).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('EIO');
    expect((e as BlockError).message).toMatch(/changing\.raw: the image changed on the server while open \(ETag/);
  });

  it('with a persistent store every block goes through the cache (and reaches the store)', async () => {
    const blocks = new Map<string, Uint8Array>();
    const store: HttpBlockStore = {
      get: async (k, i) => blocks.get(`${k}#${i}`),
      put: async (k, i, d) => void blocks.set(`${k}#${i}`, d.slice()),
    };
    const bs = await open({ store });
    expect(same(await read(bs, 20 * B, 16 * B), 20 * B)).toBe(true);
    await bs.driver.flush!(bs);
    expect(httpStats(bs).blocksBypassed).toBe(0);
    for (let i = 20; i < 36; i++) expect([...blocks.keys()].some((k) => k.endsWith(`#${i}`))).toBe(true);
  });
});
