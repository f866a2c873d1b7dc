// The http protocol in Node 20 against a local Range server, over both
// transports (the global fetch, as browsers use, and node:http with keep-alive,
// as the CLI uses): size discovery, ranged reads through the block cache,
// read-ahead, errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tmpDir, seededBytes } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';
import { HttpStorage, httpRequestCount } from '../../src/protocols/http.js';
import { HTTP_TRANSPORTS as TRANSPORTS } from '../helpers/http-transports.js';
import { bdrvPread, bdrvPwrite, openImage, BlockError } from '../../src/index.js';

let server: RangeServer;
let dir: string;
const SIZE = 1_000_003; // not a multiple of any block size
const data = seededBytes(SIZE, 7);

beforeAll(async () => {
  dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'disk.raw'), data);
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'small.raw'), data.subarray(0, 100));
  fs.writeFileSync(path.join(dir, 'empty.raw'), new Uint8Array(0));
  server = await startRangeServer(dir);
});
afterAll(() => server.close());

const baseOpts = { blockSize: 4096, cacheBytes: 64 * 1024, maxReadAhead: 32 * 1024, retryDelayMs: 1 };

async function expectCode(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BlockError);
  expect((e as BlockError).code).toBe(code);
  expect((e as BlockError).message).toMatch(re);
}

describe.each(TRANSPORTS)('http protocol ($name)', ({ transport }) => {
  const opts = { ...baseOpts, transport };
  it('learns the size from HEAD and reads aligned and unaligned ranges, including the short tail', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    const bs = await st.openProtocol('disk.raw', { readOnly: true });
    expect(bs.totalBytes).toBe(SIZE);
    for (const [off, n] of [
      [0, 4096],
      [1, 3],
      [4095, 2],
      [123_457, 70_001],
      [SIZE - 5, 5],
      [SIZE - 10, 30], // past the end reads zeros
    ] as const) {
      const out = new Uint8Array(n).fill(0xee);
      await bdrvPread(bs, off, n, out);
      const want = new Uint8Array(n);
      want.set(data.subarray(off, Math.min(off + n, SIZE)));
      expect(Buffer.from(out).equals(Buffer.from(want)), `read ${off}+${n}`).toBe(true);
    }
  });

  it('serves repeated reads from the cache and batches sequential reads with growing read-ahead', async () => {
    // Read-ahead is capped at a third of the cache: 1 MiB of cache lets the 32 KiB cap apply.
    const st = new HttpStorage(server.baseUrl, { ...opts, cacheBytes: 1024 * 1024 });
    const bs = await st.openProtocol('disk.raw', { readOnly: true });
    const before = httpRequestCount(bs);
    const out = new Uint8Array(512);
    await bdrvPread(bs, 8192, 512, out);
    await bdrvPread(bs, 8192 + 100, 300, out);
    expect(httpRequestCount(bs) - before).toBe(1);
    // 40 sequential 4 KiB reads: the window doubles to 32 KiB, so far fewer than 40 requests.
    const seqStart = 200 * 4096;
    const big = new Uint8Array(4096);
    const r0 = httpRequestCount(bs);
    for (let i = 0; i < 40; i++) {
      await bdrvPread(bs, seqStart + i * 4096, 4096, big);
      expect(Buffer.from(big).equals(Buffer.from(data.subarray(seqStart + i * 4096, seqStart + (i + 1) * 4096)))).toBe(true);
    }
    const seqRequests = httpRequestCount(bs) - r0;
    expect(seqRequests).toBeLessThanOrEqual(10);
    expect(seqRequests).toBeGreaterThan(1);
  });

  it('keeps the cache bounded: reading the whole image through a 64 KiB cache is still correct', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    const bs = await st.openProtocol('disk.raw', { readOnly: true });
    const out = new Uint8Array(SIZE);
    // Scattered then whole reads exercise eviction.
    await Promise.all([bdrvPread(bs, 0, 1000, out.subarray(0, 1000)), bdrvPread(bs, 500_000, 1000, out.subarray(500_000))]);
    await bdrvPread(bs, 0, SIZE, out);
    expect(Buffer.from(out).equals(Buffer.from(data))).toBe(true);
    expect(bs.limits.maxTransfer).toBeLessThanOrEqual(32 * 1024);
  });

  it('learns the size from Content-Range when HEAD is refused', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    const bs = await st.openProtocol('nohead/disk.raw', { readOnly: true });
    expect(bs.totalBytes).toBe(SIZE);
    const out = new Uint8Array(10);
    await bdrvPread(bs, 4090, 10, out);
    expect([...out]).toEqual([...data.subarray(4090, 4100)]);
    const e = await new HttpStorage(server.baseUrl, opts).openProtocol('nohead/empty.raw', { readOnly: true });
    expect(e.totalBytes).toBe(0);
  });

  it('ENOTSUP when the server ignores Range, without reading the whole body', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    const bs = await st.openProtocol('norange/disk.raw', { readOnly: true });
    const sent0 = server.bodyBytesSent();
    await expectCode(bdrvPread(bs, 0, 512, new Uint8Array(512)), 'ENOTSUP', /norange\/disk\.raw: the server ignores Range/);
    // Once the server is done with the response (read to its end, or its connection closed), count what it sent.
    await server.idle();
    expect(server.bodyBytesSent() - sent0).toBeLessThan(SIZE);
  });

  it('ENOENT for 404, EIO with the status for other HTTP errors, EROFS for writes', async () => {
    const st = new HttpStorage(server.baseUrl, opts);
    await expectCode(st.openProtocol('nope.raw', { readOnly: true }), 'ENOENT', /nope\.raw.*404/);
    await expectCode(openImage(st, 'nope.raw', { readOnly: true }), 'ENOENT', /nope\.raw/);
    await expectCode(st.openProtocol('error/disk.raw', { readOnly: true }), 'EIO', /error\/disk\.raw.*HTTP 500/);
    await expectCode(st.openProtocol('disk.raw', { readOnly: false }), 'EROFS', /disk\.raw: HTTP images are read-only/);
    const ro = await openImage(st, 'disk.raw', { readOnly: true, format: 'raw' });
    await expectCode(bdrvPwrite(ro, 0, 1, new Uint8Array(1)), 'EPERM', /read-only/);
  });

  it('resolves backing names against the image URL and never to another origin', () => {
    const st = new HttpStorage(server.baseUrl, { transport });
    const top = st.url('sub/top.qcow2');
    expect(st.resolve(top, 'base.raw')).toBe(server.baseUrl + 'sub/base.raw');
    expect(st.resolve(top, '../base.raw')).toBe(server.baseUrl + 'base.raw');
    expect(st.resolve(top, '/x/base.raw')).toBe(server.baseUrl + 'x/base.raw');
    expect(() => st.resolve(top, 'http://evil.example/base.raw')).toThrow(/another origin/);
    expect(() => st.resolve(top, '//evil.example/base.raw')).toThrow(/another origin/);
    expect(() => st.resolve(top, 'file:///etc/passwd')).toThrow(/another origin/);
    expect(() => st.url('file:///etc/passwd')).toThrow(/only http and https/);
  });

  it('opens a raw image by probing over HTTP (relative name in a subdirectory)', async () => {
    const st = new HttpStorage(server.baseUrl, { transport });
    const warnings: string[] = [];
    const bs = await openImage(st, 'sub/small.raw', { readOnly: true, warn: (w) => warnings.push(w) });
    expect(bs.totalBytes).toBe(100);
    const out = new Uint8Array(100);
    await bdrvPread(bs, 0, 100, out);
    expect([...out]).toEqual([...data.subarray(0, 100)]);
    // A guessed raw image, read-only: no warning (QEMU warns only when the guess restricts writes).
    expect(bs.probedAsRaw).toBe(true);
    expect(warnings).toEqual([]);
  });
});
