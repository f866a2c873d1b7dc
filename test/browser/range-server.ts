/**
 * A tiny static HTTP server with Range support (Node side), serving one
 * directory to the browser tests (through the global setup) and to the Node
 * unit tests of the http driver. CORS is open because the test page is served
 * from another port.
 *
 * Special paths exercise the driver's error handling:
 *   /norange/<name>  serves <name> but ignores Range (200, whole body)
 *   /nohead/<name>   answers HEAD with 405 (size must come from Content-Range)
 *   /error/<name>    answers 500
 * Anything that is not a file answers 404.
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

export interface RangeServer {
  baseUrl: string;
  /** Requests seen, as "METHOD path range". */
  log: string[];
  /** Bytes of response bodies sent (to check that ignored-Range bodies are not read to the end). */
  bodyBytesSent(): number;
  close(): Promise<void>;
}

export async function startRangeServer(dir: string): Promise<RangeServer> {
  const log: string[] = [];
  let sent = 0;
  const server = http.createServer((req, res) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Range');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, Accept-Ranges, ETag');
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    log.push(`${req.method} ${url.pathname} ${req.headers.range ?? ''}`.trimEnd());
    let rel = decodeURIComponent(url.pathname).replace(/^\/+/, '');
    let mode = 'normal';
    const m = /^(norange|nohead|error)\/(.*)$/.exec(rel);
    if (m) {
      mode = m[1]!;
      rel = m[2]!;
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
    const stat = fs.statSync(file);
    const size = stat.size;
    const etag = `"${stat.size}-${stat.mtimeMs}"`;
    if (req.method === 'HEAD') {
      if (mode === 'nohead') res.writeHead(405).end();
      else res.writeHead(200, { 'Content-Length': String(size), 'Accept-Ranges': 'bytes', ETag: etag }).end();
      return;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const stream = (start: number, end: number) => {
      const s = fs.createReadStream(file, { start, end });
      s.on('data', (c) => (sent += c.length));
      s.pipe(res);
      res.on('close', () => s.destroy());
    };
    if (!range || mode === 'norange') {
      res.writeHead(200, { 'Content-Length': String(size), ETag: etag });
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
      ETag: etag,
    });
    stream(start, end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/`,
    log,
    bodyBytesSent: () => sent,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
