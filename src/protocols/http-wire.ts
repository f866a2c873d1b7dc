/**
 * A small HTTP/1.1 client over node:net for the http protocol's plain-http
 * requests in Node (https keeps node:https, see http-node.ts).
 *
 * Why: node:http's client hands every socket read to its parser, which copies
 * the body bytes into a new Buffer, pushes it through a Readable stream and
 * emits it; those Buffers then cost the garbage collector. On a fast link
 * that machinery, not the bytes, was most of a sequential read's CPU. Here
 * the socket reads with net's `onread`: while a body framed by Content-Length
 * is being read into the caller's parts, each socket read lands straight in
 * the part (Node 20 asks the buffer function before every read; where a
 * runtime asks once, the bytes go through the connection's reusable buffer
 * and are copied once). Heads, chunked bodies and bytes nobody asked for yet
 * go through that reusable buffer.
 *
 * What it speaks: one request at a time per connection (no pipelining),
 * keep-alive connections kept per origin (unref'd while idle, so a CLI run
 * ends without closing them), bodies framed by Content-Length, chunked
 * transfer coding, or the connection's close; 1xx answers skipped. Nothing is
 * buffered without bound: body bytes that arrive before the caller asks for
 * them stay in the read buffer, and the socket stops reading until the caller
 * reads or drops the body.
 */
import { createRequire } from 'node:module';
import type * as Net from 'node:net';
import { BodySink, type HttpReply, type HttpRequestInit } from './http.js';

/** Bytes one socket read can bring (one buffer per connection, reused). */
const READ_BUFFER = 256 * 1024;
/** Longest response head accepted. */
const MAX_HEAD = 64 * 1024;
/** Bodies with at most this much left are read to their end when dropped, so the connection can be reused; larger ones close it. */
export const DRAIN_LIMIT = 64 * 1024;
/** Idle connections kept per origin. */
const MAX_IDLE = 16;

let net: typeof Net | undefined;
const idle = new Map<string, Conn[]>();

type Framing = { kind: 'none' } | { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' };

/** The error a timed-out request fails with (named as fetch's AbortSignal.timeout names it). */
export function timeoutError(ms: number): Error {
  const e = new Error(`The operation was aborted due to timeout (${ms} ms)`);
  e.name = 'TimeoutError';
  return e;
}

/** One request and its response on a connection. */
class Exchange implements HttpReply {
  status = 0;
  statusText = '';
  headers = new Map<string, string>();
  /** 'head': waiting for the response head; 'body': receiving it; 'done': complete, failed or dropped. */
  phase: 'head' | 'body' | 'done' = 'head';
  framing: Framing = { kind: 'none' };
  reusable = false;
  /**
   * Body bytes received before readInto was called: views of the read buffer
   * while the socket is paused (`paused`), copies once the exchange is over.
   */
  held: Uint8Array[] = [];
  paused = false;
  sink: BodySink | null = null;
  discarding = false;
  failure: Error | null = null;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Chunked decoding state. */
  chunk: { state: 'size' | 'data' | 'crlf' | 'trailer'; left: number; line: string } = { state: 'size', left: 0, line: '' };
  private headParts: Buffer[] = [];
  private headBytes = 0;
  private onHead: { resolve: (r: HttpReply) => void; reject: (e: Error) => void } | null;
  private onBody: { resolve: (n: number) => void; reject: (e: Error) => void } | null = null;

  constructor(
    readonly conn: Conn,
    readonly method: string,
    resolve: (r: HttpReply) => void,
    reject: (e: Error) => void,
  ) {
    this.onHead = { resolve, reject };
  }

  header(name: string): string | null {
    return this.headers.get(name) ?? null;
  }

  /** A view to read the next socket bytes into: the free room of the caller's current part, capped at the body's end; null for the read buffer. */
  room(): Uint8Array | null {
    const f = this.framing;
    if (this.phase !== 'body' || !this.sink || this.paused || f.kind !== 'length') return null;
    return this.sink.room(f.left);
  }

  /** `n` body bytes were read straight into the view room() gave. */
  landed(n: number): void {
    const f = this.framing as { kind: 'length'; left: number };
    this.sink!.advance(n);
    f.left -= n;
    if (f.left === 0) this.finish();
  }

  /** Bytes from the socket, in the reused read buffer (valid during this call only). */
  data(c: Buffer): void {
    if (this.phase === 'head') {
      // Only the head's own bytes are copied (a head split over reads is gathered).
      const prior = this.headBytes;
      const look = prior ? Buffer.concat([...this.headParts, c.subarray(0, MAX_HEAD)]) : c;
      const end = look.indexOf('\r\n\r\n', 0, 'latin1');
      if (end < 0) {
        this.headParts.push(Buffer.from(c));
        this.headBytes += c.length;
        if (this.headBytes > MAX_HEAD) this.conn.fail(new Error(`the response head is longer than ${MAX_HEAD} bytes`));
        return;
      }
      const text = look.toString('latin1', 0, end);
      const rest = c.subarray(end + 4 - prior);
      this.headParts = [];
      this.headBytes = 0;
      if (!this.parseHead(text)) {
        if (rest.length > 0 && this.phase === 'head') this.data(rest); // a 1xx answer: the real head follows
        return;
      }
      this.phase = 'body';
      const h = this.onHead!;
      this.onHead = null;
      if (this.framing.kind === 'none' || (this.framing.kind === 'length' && this.framing.left === 0)) this.finish();
      h.resolve(this);
      if (rest.length > 0) this.body(rest);
      return;
    }
    this.body(c);
  }

  /** Parses a head; false for an interim (1xx) answer. */
  private parseHead(text: string): boolean {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
    if (!m) {
      this.conn.fail(new Error(`the server's answer is not HTTP/1.x: '${(lines[0] ?? '').slice(0, 80)}'`));
      return false;
    }
    const status = Number(m[2]);
    if (status >= 100 && status < 200 && status !== 101) return false;
    this.status = status;
    this.statusText = m[3] ?? '';
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      const old = this.headers.get(name);
      this.headers.set(name, old === undefined ? value : `${old}, ${value}`);
    }
    const connection = (this.headers.get('connection') ?? '').toLowerCase();
    this.reusable = m[1] === '1' ? !connection.includes('close') : connection.includes('keep-alive');
    const te = (this.headers.get('transfer-encoding') ?? '').toLowerCase();
    const len = this.headers.get('content-length');
    if (this.method === 'HEAD' || status === 204 || status === 304) this.framing = { kind: 'none' };
    else if (te.endsWith('chunked')) this.framing = { kind: 'chunked' };
    else if (len !== undefined && /^\d+$/.test(len)) this.framing = { kind: 'length', left: Number(len) };
    else {
      this.framing = { kind: 'close' };
      this.reusable = false;
    }
    return true;
  }

  /** Body bytes (or, after the body, bytes that should not be there). */
  private body(c: Uint8Array): void {
    const f = this.framing;
    if (this.phase !== 'body') {
      // Bytes after a complete response on a connection we did not pipeline on: the connection is not sound.
      if (c.length > 0) this.conn.destroy();
      return;
    }
    if (f.kind === 'length') {
      const n = Math.min(f.left, c.length);
      f.left -= n;
      this.deliver(n === c.length ? c : c.subarray(0, n));
      if (f.left === 0 && this.phase === 'body') {
        this.finish();
        if (c.length > n) this.conn.destroy();
      }
    } else if (f.kind === 'chunked') this.chunked(c);
    else if (f.kind === 'close') this.deliver(c);
    else if (c.length > 0) this.conn.destroy();
  }

  private chunked(c: Uint8Array): void {
    const st = this.chunk;
    let i = 0;
    while (i < c.length && this.phase === 'body') {
      if (st.state === 'data') {
        const n = Math.min(st.left, c.length - i);
        this.deliver(c.subarray(i, i + n));
        i += n;
        st.left -= n;
        if (st.left === 0) st.state = 'crlf';
        continue;
      }
      const nl = c.indexOf(10, i);
      const end = nl < 0 ? c.length : nl;
      st.line += Buffer.from(c.buffer, c.byteOffset + i, end - i).toString('latin1');
      if (st.line.length > 4096) return this.conn.fail(new Error('a chunked body has a line longer than 4096 bytes'));
      i = end;
      if (nl < 0) break;
      i++;
      const line = st.line.endsWith('\r') ? st.line.slice(0, -1) : st.line;
      st.line = '';
      if (st.state === 'size') {
        const m = /^([0-9a-fA-F]{1,12})(?:[ \t;].*)?$/.exec(line);
        if (!m) return this.conn.fail(new Error(`a chunked body has a bad chunk size line '${line.slice(0, 40)}'`));
        st.left = parseInt(m[1]!, 16);
        st.state = st.left === 0 ? 'trailer' : 'data';
      } else if (st.state === 'crlf') {
        if (line !== '') return this.conn.fail(new Error('a chunk of a chunked body is longer than its size says'));
        st.state = 'size';
      } else if (line === '') {
        this.finish();
        if (i < c.length) this.conn.destroy();
        return;
      }
    }
  }

  private deliver(c: Uint8Array): void {
    if (c.length === 0 || this.discarding) return;
    if (this.sink) {
      if (!this.sink.push(c)) {
        // More than the parts hold: the rest is dropped with the connection.
        const b = this.onBody;
        this.onBody = null;
        this.sink = null;
        this.conn.destroy();
        b?.resolve(-1);
      }
      return;
    }
    // Nobody reads yet: keep a view and stop the socket, so the read buffer is not overwritten.
    this.held.push(c);
    this.paused = true;
  }

  /** The body is complete: the connection goes back to the pool (or closes). */
  finish(): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    this.stopTimer();
    // The connection may serve another request before the body is read: views of its read buffer become copies.
    if (this.held.length > 0) this.held = this.held.map((h) => new Uint8Array(h));
    this.paused = false;
    this.conn.release(this);
    if (this.sink) {
      const b = this.onBody;
      this.onBody = null;
      b?.resolve(this.sink.length);
    }
  }

  /** The connection failed or closed: whoever waits learns it. */
  fail(e: Error): void {
    this.stopTimer();
    if (this.phase === 'done') return;
    if (this.phase === 'body' && this.framing.kind === 'close' && !this.failure && e === CLOSED) {
      // A body framed by the connection's close ends here.
      this.finish();
      return;
    }
    this.phase = 'done';
    this.held = [];
    this.failure ??= e === CLOSED ? new Error('the connection closed before the end of the response') : e;
    const h = this.onHead;
    const b = this.onBody;
    this.onHead = this.onBody = null;
    h?.reject(this.failure);
    b?.reject(this.failure);
  }

  stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  readInto(parts: Uint8Array[]): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const sink = new BodySink(parts);
      const held = this.held;
      this.held = [];
      for (const p of held) {
        if (!sink.push(p)) {
          if (this.phase !== 'done') this.conn.destroy();
          resolve(-1);
          return;
        }
      }
      if (this.failure) return reject(this.failure);
      if (this.phase === 'done') return resolve(sink.length);
      if (this.discarding) return reject(new Error('the body was dropped'));
      this.sink = sink;
      this.onBody = { resolve, reject };
      if (this.paused) {
        this.paused = false;
        this.conn.socket.resume();
      }
    });
  }

  cancel(): void {
    this.held = [];
    if (this.phase !== 'body' || this.sink || this.discarding) return;
    const f = this.framing;
    if (f.kind === 'length' && f.left <= DRAIN_LIMIT) {
      this.discarding = true;
      if (this.paused) {
        this.paused = false;
        this.conn.socket.resume();
      }
    } else this.conn.destroy();
  }
}

/** Marks a clean close (not an error) for Exchange.fail. */
const CLOSED = new Error('closed');

/** A keep-alive connection to one origin. */
class Conn {
  readonly socket: Net.Socket;
  private readonly buf = Buffer.allocUnsafe(READ_BUFFER);
  /** The caller's part the next read goes into, or null for `buf`. */
  private target: Uint8Array | null = null;
  ex: Exchange | null = null;
  dead = false;

  constructor(
    readonly key: string,
    host: string,
    port: number,
  ) {
    this.socket = net!.connect({
      host,
      port,
      onread: {
        // Asked before each read (Node 20; once where older): a part of the caller's when a body is being read into it.
        buffer: () => {
          this.target = this.ex?.room() ?? null;
          return this.target ?? this.buf;
        },
        callback: (n: number, into: Uint8Array): boolean => {
          const ex = this.ex;
          if (!ex) {
            // Bytes on an idle connection: the server broke the protocol; never reuse it.
            this.destroy();
            return false;
          }
          if (into === this.buf) ex.data(this.buf.subarray(0, n));
          else if (into === this.target && ex.room() !== null) ex.landed(n);
          else {
            this.fail(new Error('internal: a socket read landed in a buffer of another request'));
            return false;
          }
          // Stop reading while body bytes nobody asked for sit in the read buffer (resumed by readInto or cancel).
          return !(this.ex === ex && ex.paused);
        },
      },
    });
    this.socket.setNoDelay(true);
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => this.fail(CLOSED));
    this.socket.on('end', () => this.fail(CLOSED));
  }

  fail(e: Error): void {
    this.dead = true;
    const ex = this.ex;
    this.ex = null;
    dropIdle(this);
    if (!this.socket.destroyed) this.socket.destroy();
    ex?.fail(e);
  }

  destroy(): void {
    this.fail(new Error('the connection was closed'));
  }

  /** The exchange finished: keep the connection for the next request when it can be. */
  release(ex: Exchange): void {
    if (this.ex !== ex) return;
    this.ex = null;
    if (!ex.reusable || this.dead) {
      this.dead = true;
      this.socket.destroy();
      return;
    }
    const list = idle.get(this.key) ?? [];
    if (list.length >= MAX_IDLE) {
      this.dead = true;
      this.socket.destroy();
      return;
    }
    list.push(this);
    idle.set(this.key, list);
    this.socket.unref();
  }
}

function dropIdle(c: Conn): void {
  const list = idle.get(c.key);
  const i = list ? list.indexOf(c) : -1;
  if (i >= 0) list!.splice(i, 1);
}

function connection(key: string, host: string, port: number): Conn {
  const list = idle.get(key);
  while (list && list.length > 0) {
    const c = list.pop()!;
    if (!c.dead && !c.socket.destroyed) {
      c.socket.ref();
      return c;
    }
  }
  net ??= createRequire(import.meta.url)('node:net') as typeof Net;
  return new Conn(key, host, port);
}

const BAD_HEADER = /[\r\n\0]/;

/** Sends one plain-http request; resolves with the response once its head has arrived. */
export function wireRequest(url: string, init: HttpRequestInit): Promise<HttpReply> {
  return new Promise<HttpReply>((resolve, reject) => {
    const u = new URL(url);
    if (u.protocol !== 'http:') throw new TypeError(`wireRequest: not a plain http URL: ${url}`);
    let head = `${init.method} ${u.pathname || '/'}${u.search} HTTP/1.1\r\n`;
    let host = false;
    for (const [k, v] of Object.entries(init.headers)) {
      if (BAD_HEADER.test(k) || BAD_HEADER.test(v) || k.includes(':')) throw new TypeError(`invalid HTTP header '${k}'`);
      if (k.toLowerCase() === 'host') host = true;
      head += `${k}: ${v}\r\n`;
    }
    if (!host) head = head + `Host: ${u.host}\r\n`;
    head += '\r\n';
    const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const port = Number(u.port || 80);
    const conn = connection(`${hostname}:${port}`, hostname, port);
    const ex = new Exchange(conn, init.method, resolve, reject);
    conn.ex = ex;
    if (init.timeoutMs > 0) {
      ex.timer = setTimeout(() => {
        ex.timer = undefined;
        if (conn.ex === ex) conn.fail(timeoutError(init.timeoutMs));
        else ex.fail(timeoutError(init.timeoutMs));
      }, init.timeoutMs);
    }
    conn.socket.write(head, 'latin1');
  });
}
