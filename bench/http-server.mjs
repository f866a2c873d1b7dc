#!/usr/bin/env node
// The HTTP server of bench/http.bench.mjs, in a child process of its own so it
// shares neither the event loop nor the CPU-time figure with the client:
// node bench/http-server.mjs FILE LATENCY_MS. Serves FILE with Range support on
// loopback (any path), each answer after LATENCY_MS; sends its port to the parent.
import * as http from 'node:http';
import * as fs from 'node:fs';

const [file, latency] = [process.argv[2], Number(process.argv[3] ?? 0)];
const size = fs.statSync(file).size;
// One file descriptor for every request: the protocol's many ranged GETs and the bare fetch's one GET
// then cost the server the same per byte (no open/close per request that the bare fetch never pays).
const fd = fs.openSync(file, 'r');
const server = http.createServer((req, res) => {
  setTimeout(() => {
    if (req.method === 'HEAD') return res.writeHead(200, { 'Content-Length': size, ETag: '"v1"' }).end();
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const [s, e] = m ? [Number(m[1]), Math.min(size - 1, m[2] ? Number(m[2]) : size - 1)] : [0, size - 1];
    res.writeHead(m ? 206 : 200, { 'Content-Length': e - s + 1, ETag: '"v1"', ...(m ? { 'Content-Range': `bytes ${s}-${e}/${size}` } : {}) });
    fs.createReadStream('', { fd, start: s, end: e, highWaterMark: 1 << 20, autoClose: false }).pipe(res);
  }, latency);
});
server.listen(0, '127.0.0.1', () => process.send?.(server.address().port));
process.on('disconnect', () => process.exit(0));
