// The Node client for plain http (src/protocols/http-wire.ts) against a raw
// TCP server that writes answers byte by byte as scripted: heads split over
// reads, interim 1xx answers, chunked bodies, bodies ended by the connection's
// close, keep-alive reuse, bodies longer than the parts, bad answers, and
// timeouts. What the Range server of the other http tests never sends.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { wireRequest } from '../../src/protocols/http-wire.js';

type Script = (sock: net.Socket, request: string) => void;
let server: net.Server;
let base: string;
let script: Script;
let connections = 0;
const seen: string[] = [];
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  server = net.createServer((sock) => {
    connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 4);
        seen.push(req);
        script(sock, req);
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(
  () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy(); // the client's idle keep-alive connections
      server.close(() => r());
    }),
);

const GET = { method: 'GET' as const, headers: {}, timeoutMs: 2000 };
const body = (n: number, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255));

async function readAll(url: string, size: number, parts = 3): Promise<{ status: number; n: number; bytes: Buffer }> {
  const res = await wireRequest(url, GET);
  const each = Math.ceil(size / parts);
  const ps = Array.from({ length: parts }, (_, i) => new Uint8Array(Math.max(0, Math.min(each, size - i * each))));
  const n = await res.readInto(ps);
  return { status: res.status, n, bytes: Buffer.concat(ps) };
}

describe('http-wire', () => {
  it('sends the request line, Host and the caller\'s headers; reuses the connection', async () => {
    const data = body(300_000);
    script = (sock) => {
      sock.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${data.length}\r\nETag: "x"\r\n\r\n`);
      sock.write(data);
    };
    const c0 = connections;
    for (let i = 0; i < 3; i++) {
      const res = await wireRequest(`${base}/a/b.raw?sig=1`, { method: 'GET', headers: { Range: 'bytes=0-299999' }, timeoutMs: 2000 });
      expect(res.status).toBe(206);
      expect(res.header('etag')).toBe('"x"');
      const out = new Uint8Array(data.length);
      expect(await res.readInto([out.subarray(0, 70_000), out.subarray(70_000)])).toBe(data.length);
      expect(Buffer.from(out).equals(data)).toBe(true);
    }
    expect(connections - c0).toBe(1);
    expect(seen.at(-1)).toMatch(/^GET \/a\/b\.raw\?sig=1 HTTP\/1\.1\r\nRange: bytes=0-299999\r\nHost: 127\.0\.0\.1:\d+$/);
  });

  it('reads a head split over many writes, after an interim 100 answer, and a chunked body', async () => {
    const data = body(5000, 7);
    script = (sock) => {
      const head = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n';
      const chunks = `1000;ext=1\r\n${data.subarray(0, 4096).toString('latin1')}\r\n388\r\n${data.subarray(4096).toString('latin1')}\r\n0\r\nTrailer: t\r\n\r\n`;
      const all = Buffer.from(head + chunks, 'latin1');
      let i = 0;
      const drip = () => {
        if (i >= all.length) return;
        sock.write(all.subarray(i, i + 7));
        i += 7;
        setImmediate(drip);
      };
      drip();
    };
    const res = await wireRequest(`${base}/c`, GET);
    expect(res.status).toBe(206);
    expect(res.header('x-a')).toBe('1, 2');
    const out = new Uint8Array(5000);
    expect(await res.readInto([out])).toBe(5000);
    expect(Buffer.from(out).equals(data)).toBe(true);
  });

  it('reads a body ended by the connection\'s close, and never reuses that connection', async () => {
    const data = body(10_000, 3);
    script = (sock) => {
      sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n'), data]));
    };
    const r1 = await readAll(`${base}/d`, 10_000);
    const c1 = connections;
    const r2 = await readAll(`${base}/d`, 10_000);
    expect([r1.n, r2.n]).toEqual([10_000, 10_000]);
    expect(r1.bytes.equals(data) && r2.bytes.equals(data)).toBe(true);
    expect(connections - c1).toBe(1);
  });

  it('says -1 for a body longer than the parts, and fails a body cut short, a bad answer and a timeout', async () => {
    const data = body(9000);
    script = (sock) => void sock.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: 9000\r\n\r\n`, () => sock.write(data));
    expect((await readAll(`${base}/e`, 8000)).n).toBe(-1);
    script = (sock) => sock.end(`HTTP/1.1 206 Partial Content\r\nContent-Length: 9000\r\n\r\n${data.subarray(0, 100).toString('latin1')}`);
    await expect(readAll(`${base}/f`, 9000)).rejects.toThrow(/closed before the end/);
    script = (sock) => void sock.end('SSH-2.0-OpenSSH\r\n\r\n');
    await expect(wireRequest(`${base}/g`, GET)).rejects.toThrow(/not HTTP\/1\.x: 'SSH-2\.0-OpenSSH'/);
    script = () => {};
    await expect(wireRequest(`${base}/h`, { ...GET, timeoutMs: 50 })).rejects.toMatchObject({ name: 'TimeoutError' });
    await expect(wireRequest(`${base}/i`, { ...GET, headers: { 'X-Bad': 'a\r\nInjected: 1' } })).rejects.toThrow(/invalid HTTP header/);
  });

  it('drops a small unread body by draining it (the connection is kept), a large one by closing', async () => {
    const small = body(1000);
    script = (sock) => void sock.write(Buffer.concat([Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 1000\r\n\r\n'), small]));
    let c1 = 0;
    for (let i = 0; i < 3; i++) {
      const res = await wireRequest(`${base}/j`, GET);
      expect(res.status).toBe(404);
      res.cancel();
      if (i === 0) c1 = connections;
    }
    expect(connections).toBe(c1);
    const big = body(1 << 20);
    script = (sock) => void sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big]));
    const res = await wireRequest(`${base}/k`, GET);
    const c2 = connections;
    res.cancel();
    expect((await readAll(`${base}/k`, big.length)).bytes.equals(big)).toBe(true);
    expect(connections - c2).toBe(1);
  });
});
