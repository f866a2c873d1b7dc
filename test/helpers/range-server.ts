/**
 * A static HTTP server with Range support on loopback (Node side), serving one
 * directory to the browser tests, the e2e tests and the Node tests of the http
 * protocol. CORS is open because the test page is served from another port.
 *
 * Faults are injected so the protocol's failure handling can be tested by
 * counting requests (never by timing):
 *   /norange/<name>   serves <name> but ignores Range (200, whole body)
 *   /nohead/<name>    answers HEAD with 405 (size must come from Content-Range)
 *   /error/<name>     answers 500 always
 *   /nocors/<name>    CORS without Access-Control-Expose-Headers (Content-Range hidden from pages)
 *   /noetag/<name>    no ETag, only Last-Modified
 *   /presigned/<name> like S3's presigned GET URLs: a query with X-Amz-Signature
 *                     is required, HEAD answers 403 (the signature covers GET only)
 * and, for any path, through the returned controls: latency, the next N
 * requests failing with a status, dropped connections, bodies cut short, and
 * a file replaced mid-session (new ETag and Last-Modified).
 * Anything that is not a file answers 404.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

export type Fault = { kind: 'status'; status: number } | { kind: 'drop' } | { kind: 'truncate' };

export interface RangeServer {
  baseUrl: string;
  /** Requests seen, as "METHOD path range". */
  log: string[];
  /** Bytes of response bodies sent (to check that ignored-Range bodies are not read to the end). */
  bodyBytesSent(): number;
  /** Most requests being answered at once. */
  peakInflight(): number;
  /** Resolves once no request is being answered (every response finished or its connection closed). */
  idle(): Promise<void>;
  /** Delay before each answer, in ms (0 by default). */
  setLatency(ms: number): void;
  /** The next `count` requests (HEAD or GET) meet `fault`. */
  injectFaults(count: number, fault: Fault): void;
  /** Replaces a served file (a new version: new ETag and Last-Modified). */
  replace(name: string, data: Uint8Array): void;
  close(): Promise<void>;
}

const MODES = /^(norange|nohead|error|nocors|noetag|presigned)\/(.*)$/;

/** `tls`: serve https:// with this key and certificate (PEM) instead of http://. */
export async function startRangeServer(dir: string, tls?: { key: string; cert: string }): Promise<RangeServer> {
  const log: string[] = [];
  let sent = 0;
  let latency = 0;
  let inflight = 0;
  let peak = 0;
  const idleWaiters: (() => void)[] = [];
  const faults: Fault[] = [];
  /** Version per file, bumped by replace(): part of the ETag and the Last-Modified. */
  const versions = new Map<string, number>();
  const epoch = Date.UTC(2024, 0, 1);

  const answer = (req: http.IncomingMessage, res: http.ServerResponse) => {
    // A request whose client gave up during the injected latency (a timeout test) must not take a fault meant for a later one.
    if (req.socket.destroyed) return void res.destroy();
    const url = new URL(req.url ?? '/', 'http://x');
    let rel = decodeURIComponent(url.pathname).replace(/^\/+/, '');
    let mode = 'normal';
    const m = MODES.exec(rel);
    if (m) {
      mode = m[1]!;
      rel = m[2]!;
    }
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Range');
    if (mode !== 'nocors') {
      res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified');
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    log.push(`${req.method} ${url.pathname} ${req.headers.range ?? ''}`.trimEnd());
    const fault = faults.shift();
    if (fault?.kind === 'status') {
      res.writeHead(fault.status).end('injected');
      return;
    }
    if (fault?.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    const file = path.resolve(dir, rel);
    if (!file.startsWith(path.resolve(dir) + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    if (mode === 'error') {
      res.writeHead(500).end('boom');
      return;
    }
    if (mode === 'presigned') {
      if (!url.searchParams.get('X-Amz-Signature')) {
        res.writeHead(403).end('<Error><Code>AccessDenied</Code></Error>');
        return;
      }
      if (req.method === 'HEAD') {
        res.writeHead(403).end();
        return;
      }
    }
    const size = fs.statSync(file).size;
    const version = versions.get(file) ?? 0;
    const meta: Record<string, string> = { 'Last-Modified': new Date(epoch + version * 1000).toUTCString() };
    if (mode !== 'noetag') meta.ETag = `"${size}-v${version}"`;
    if (req.method === 'HEAD') {
      if (mode === 'nohead') res.writeHead(405).end();
      else res.writeHead(200, { 'Content-Length': String(size), 'Accept-Ranges': 'bytes', ...meta }).end();
      return;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const stream = (start: number, end: number) => {
      // A truncated answer sends half the body, then breaks the connection.
      const last = fault?.kind === 'truncate' ? start + Math.floor((end - start) / 2) : end;
      const s = fs.createReadStream(file, { start, end: last });
      s.on('data', (c) => (sent += c.length));
      if (last !== end) s.on('end', () => res.destroy());
      s.pipe(res, { end: last === end });
      res.on('close', () => s.destroy());
    };
    if (!range || mode === 'norange') {
      res.writeHead(200, { 'Content-Length': String(size), ...meta });
      if (size === 0) res.end();
      else stream(0, size - 1);
      return;
    }
    const start = Number(range[1]);
    const end = Math.min(range[2] ? Number(range[2]) : size - 1, size - 1);
    if (start >= size || start > end) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end();
      return;
    }
    res.writeHead(206, {
      'Content-Range': `bytes ${start}-${end}/${size}`,
      'Content-Length': String(end - start + 1),
      'Accept-Ranges': 'bytes',
      ...meta,
    });
    stream(start, end);
  };

  const server = (tls ? https.createServer.bind(null, tls) : http.createServer)((req: http.IncomingMessage, res: http.ServerResponse) => {
    inflight++;
    peak = Math.max(peak, inflight);
    res.on('close', () => {
      if (--inflight === 0) for (const w of idleWaiters.splice(0)) w();
    });
    if (latency > 0) setTimeout(() => answer(req, res), latency);
    else answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `${tls ? 'https' : 'http'}://127.0.0.1:${port}/`,
    log,
    bodyBytesSent: () => sent,
    peakInflight: () => peak,
    idle: () => (inflight === 0 ? Promise.resolve() : new Promise<void>((r) => idleWaiters.push(r))),
    setLatency: (ms) => (latency = ms),
    injectFaults: (count, fault) => {
      for (let i = 0; i < count; i++) faults.push(fault);
    },
    replace: (name, data) => {
      const file = path.resolve(dir, name);
      fs.writeFileSync(file, data);
      versions.set(file, (versions.get(file) ?? 0) + 1);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
