/**
 * The `http` protocol: a read-only image on a web server or in object storage
 * (S3-style presigned URLs), read with `Range: bytes=a-b` requests (browser
 * and Node 20, both have fetch).
 *
 * Why a cache: formats read small metadata (qcow2's header, L1, 4 KiB L2
 * slices) scattered over the file, and each HTTP round trip costs far more
 * than the bytes. Reads are therefore rounded out to aligned blocks (64 KiB by
 * default) kept in a bounded LRU (32 MiB by default); missing blocks that are
 * adjacent are fetched with one request. Sequential reads (convert, sha of a
 * whole disk) grow a read-ahead window that doubles on every sequential
 * request up to a cap and resets on a seek. An optional persistent store
 * (`HttpBlockStore`, OPFS in the browser) keeps blocks across sessions, keyed
 * by the URL without its query (presigned signatures change) and the
 * validator, so a new version of the image never reuses old blocks.
 *
 * Requests in flight are bounded (`maxInflight`); 5xx, 429, timeouts and
 * network errors are retried with exponential backoff, other statuses are
 * final. Every response's ETag / Last-Modified / total size is compared with
 * the first one: a changed image is refused (EIO), never mixed with blocks of
 * the old version.
 *
 * The size comes from HEAD's Content-Length or, when HEAD does not help (405,
 * a presigned URL signed for GET only answers HEAD with 403), from the
 * Content-Range of a first ranged GET. A server that ignores Range (200 with
 * the whole body) gets a clear ENOTSUP: the body is cancelled, never
 * buffered, since it may be a 100 GiB disk. In a browser, a fetch that throws
 * (CORS refusal looks exactly like a network failure to the page) and a 206
 * whose Content-Range is hidden (no Access-Control-Expose-Headers) get
 * messages that say which CORS headers the server must send.
 *
 * Names: absolute http(s) URLs, or relative to the storage's base URL.
 * Backing names inside an image resolve against the image's URL and must stay
 * on the same origin (a crafted image must not make us fetch another site).
 */
import { BlockError, hex } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';

/** A store of cache blocks that outlives the session (OPFS in the browser). Failures only cost a re-fetch. */
export interface HttpBlockStore {
  /** The block `index` of the image version `key`, if stored (exactly `blockSize` bytes). */
  get(key: string, index: number, blockSize: number): Promise<Uint8Array | undefined>;
  /** Stores a block of the image version `key`. */
  put(key: string, index: number, data: Uint8Array): Promise<void>;
}

export interface HttpOptions {
  /** Cache block size in bytes (a power of two, default 64 KiB). */
  blockSize?: number;
  /** Read cache capacity in bytes (default 32 MiB). */
  cacheBytes?: number;
  /** Largest read-ahead window in bytes (default 8 MiB; at most a third of the cache is used). */
  maxReadAhead?: number;
  /** Requests in flight at most (default 6, as browsers' connections per origin). */
  maxInflight?: number;
  /** Retries of a request after 5xx, 429, timeouts and network errors (default 4). */
  retries?: number;
  /** First backoff delay in ms, doubled on each retry (default 100 ms). */
  retryDelayMs?: number;
  /** Per-request timeout in ms (default 30 s; 0 for none). */
  timeoutMs?: number;
  /** Extra request headers (authorization, cookie, …). */
  headers?: Record<string, string>;
  /** Persistent block store (kept across sessions); none by default. */
  store?: HttpBlockStore;
  /** The fetch to use (tests, proxies); globalThis.fetch by default. Giving one selects the fetch transport. */
  fetch?: typeof fetch;
  /**
   * How requests are sent: fetch by default (browsers); the Node entry installs
   * one over node:http with keep-alive connections (`setDefaultHttpTransport`).
   */
  transport?: HttpTransport;
  /** The page's origin, for CORS explanations (location.origin by default; none in Node). */
  pageOrigin?: string;
}

interface Resolved {
  blockSize: number;
  cacheBlocks: number;
  maxReadAhead: number;
  maxInflight: number;
  retries: number;
  retryDelayMs: number;
  timeoutMs: number;
  headers: Record<string, string>;
  store: HttpBlockStore | undefined;
  transport: HttpTransport;
  pageOrigin: string | undefined;
}

/** One request as the protocol sends it. */
export interface HttpRequestInit {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  /** Abort the whole exchange (body included) after this many ms; 0 for never. A timeout rejects with an error named 'TimeoutError'. */
  timeoutMs: number;
}

/** A response: status and headers at once, the body read on demand. */
export interface HttpReply {
  status: number;
  statusText: string;
  /** A response header by lower-case name; null when absent (or hidden from the page by CORS). */
  header(name: string): string | null;
  /**
   * Reads the whole body into `parts`, filled in order (the cache blocks it
   * becomes, so no body buffer is allocated or copied): resolves with the
   * body's length, or with -1 when the server sent more than the parts hold
   * (the rest is dropped). Rejects when the connection breaks or times out.
   */
  readInto(parts: Uint8Array[]): Promise<number>;
  /** Drops the body without reading it (a 100 GiB whole file must never be drained); harmless once read. */
  cancel(): void;
}

/** Where a body's chunks go: the parts of `readInto`, filled in order. */
export class BodySink {
  private part = 0;
  private at = 0;
  /** Bytes received so far. */
  length = 0;
  constructor(private readonly parts: Uint8Array[]) {}

  /** The free room of the current part, at most `max` bytes: a view to read into (see `advance`); null when the parts are full. */
  room(max: number): Uint8Array | null {
    const p = this.parts[this.part];
    if (!p || max <= 0) return null;
    return p.subarray(this.at, Math.min(p.length, this.at + max));
  }

  /** Counts `n` bytes written into the last view `room` gave. */
  advance(n: number): void {
    this.at += n;
    this.length += n;
    if (this.at === this.parts[this.part]!.length) {
      this.part++;
      this.at = 0;
    }
  }

  /** Copies a chunk in; false (nothing more taken) when the parts cannot hold it. */
  push(chunk: Uint8Array): boolean {
    let from = 0;
    while (from < chunk.length) {
      const p = this.parts[this.part];
      if (!p) return false;
      const n = Math.min(chunk.length - from, p.length - this.at);
      p.set(from === 0 && n === chunk.length ? chunk : chunk.subarray(from, from + n), this.at);
      from += n;
      this.at += n;
      this.length += n;
      if (this.at === p.length) {
        this.part++;
        this.at = 0;
      }
    }
    return true;
  }
}

/**
 * Sends one request. Rejects on network failures as fetch does (a TypeError
 * for what a page cannot tell from a CORS refusal, 'TimeoutError' on timeout).
 */
export type HttpTransport = (url: string, init: HttpRequestInit) => Promise<HttpReply>;

/** The transport over fetch (browsers, and Node when none was installed). */
export function fetchTransport(f: typeof fetch = globalThis.fetch.bind(globalThis)): HttpTransport {
  return async (url, init) => {
    const res = await f(url, {
      method: init.method,
      // The block cache is ours: the browser's HTTP cache may hold the file
      // gzip-encoded (fetched whole before), and Chrome answers a range
      // over such an entry with the whole body.
      cache: 'no-store',
      headers: init.headers,
      ...(init.timeoutMs > 0 ? { signal: AbortSignal.timeout(init.timeoutMs) } : {}),
    });
    let done = false;
    return {
      status: res.status,
      statusText: res.statusText,
      header: (name) => res.headers.get(name),
      cancel() {
        if (done) return;
        done = true;
        res.body?.cancel().catch(() => {});
      },
      // The chunks land in place: fetch's arrayBuffer() gathers and copies them, which costs more than the network on loopback.
      async readInto(parts) {
        done = true;
        if (!res.body) return 0;
        const reader = res.body.getReader();
        const sink = new BodySink(parts);
        for (;;) {
          const { done: end, value } = await reader.read();
          if (end) return sink.length;
          if (!sink.push(value)) {
            void reader.cancel().catch(() => {});
            return -1;
          }
        }
      },
    };
  };
}

let defaultTransport: HttpTransport | undefined;

/** Makes `t` the transport of http storages that name neither a fetch nor a transport (the Node entry installs node:http's). */
export function setDefaultHttpTransport(t: HttpTransport | undefined): void {
  defaultTransport = t;
}

/** What identifies one version of the remote file. */
interface Validator {
  etag: string | null;
  lastModified: string | null;
}

/** Counters for tests, the app's status line and benchmarks. */
export interface HttpStats {
  /** Requests sent (HEAD and GET, retries included). */
  requests: number;
  retries: number;
  /** Blocks served from memory / from the persistent store / fetched. */
  cacheHits: number;
  storeHits: number;
  blocksFetched: number;
  /** Body bytes received from the server (retries included). */
  bytesFetched: number;
  /** Most requests in flight at once. */
  peakInflight: number;
  /** Blocks of blocksFetched read straight into a caller's buffer, around the cache. */
  blocksBypassed: number;
}

/** httpStats' answer: the counters and the requests running now. */
export interface HttpStatsNow extends HttpStats {
  inflight: number;
}

interface HttpState {
  url: string;
  size: number;
  validator: Validator;
  opts: Resolved;
  /** LRU: block index → bytes (Map keeps insertion order; a hit re-inserts). */
  cache: Map<number, Uint8Array>;
  inflight: Map<number, Promise<void>>;
  /** End of the previous read and the current read-ahead window, for sequential detection. */
  lastEnd: number;
  window: number;
  /** Requests running and callers waiting for a slot. */
  running: number;
  queue: (() => void)[];
  stats: HttpStats;
  storeWrites: Set<Promise<void>>;
  /**
   * Evicted cache blocks, reused for the next bodies: a long sequential read
   * then allocates (and page-faults, and collects) nothing per request. Only
   * without a persistent store, whose writes may still hold an evicted block.
   */
  spare: Uint8Array[] | null;
}

const DEFAULTS = {
  blockSize: 64 * 1024,
  cacheBytes: 32 * 1024 * 1024,
  maxReadAhead: 8 * 1024 * 1024,
  maxInflight: 6,
  retries: 4,
  retryDelayMs: 100,
  timeoutMs: 30_000,
};
const MAX_BACKOFF_MS = 10_000;

function resolveOptions(o: HttpOptions): Resolved {
  const blockSize = o.blockSize ?? DEFAULTS.blockSize;
  if (!(blockSize >= 512 && (blockSize & (blockSize - 1)) === 0)) {
    throw new BlockError('EINVAL', `http: block size ${blockSize} is not a power of two of at least 512`);
  }
  const cacheBytes = o.cacheBytes ?? DEFAULTS.cacheBytes;
  const maxInflight = o.maxInflight ?? DEFAULTS.maxInflight;
  if (!(Number.isInteger(maxInflight) && maxInflight >= 1)) {
    throw new BlockError('EINVAL', `http: maxInflight ${maxInflight} must be a positive integer`);
  }
  return {
    blockSize,
    cacheBlocks: Math.max(2, Math.floor(cacheBytes / blockSize)),
    maxReadAhead: Math.max(0, o.maxReadAhead ?? DEFAULTS.maxReadAhead),
    maxInflight,
    retries: Math.max(0, o.retries ?? DEFAULTS.retries),
    retryDelayMs: Math.max(0, o.retryDelayMs ?? DEFAULTS.retryDelayMs),
    timeoutMs: Math.max(0, o.timeoutMs ?? DEFAULTS.timeoutMs),
    headers: o.headers ?? {},
    store: o.store,
    transport: o.transport ?? (o.fetch ? fetchTransport(o.fetch) : (defaultTransport ?? fetchTransport())),
    pageOrigin: o.pageOrigin ?? (globalThis as { location?: { origin?: string } }).location?.origin,
  };
}

function statusError(url: string, res: HttpReply, what: string): BlockError {
  if (res.status === 404 || res.status === 410) {
    return new BlockError('ENOENT', `${url}: No such file or directory (HTTP ${res.status})`);
  }
  if (res.status === 401 || res.status === 403) {
    return new BlockError(
      'EACCES',
      `${url}: ${what} refused: HTTP ${res.status} ${res.statusText}`.trimEnd() +
        ' (a presigned URL may have expired, or credentials are missing)',
    );
  }
  return new BlockError('EIO', `${url}: ${what} failed: HTTP ${res.status} ${res.statusText}`.trimEnd());
}

/** Drops a response body we do not want, without reading it. */
function discard(res: HttpReply): void {
  res.cancel();
}

function ignoresRange(url: string): BlockError {
  return new BlockError(
    'ENOTSUP',
    `${url}: the server ignores Range requests (answered 200 with the whole file); blocktab needs byte ranges to read remote images`,
  );
}

function crossOrigin(s: { opts: Resolved }, url: string): boolean {
  const page = s.opts.pageOrigin;
  if (!page || page === 'null') return !!page;
  try {
    return new URL(url).origin !== page;
  } catch {
    return false;
  }
}

const CORS_HEADERS =
  'Access-Control-Allow-Origin for this page, Access-Control-Allow-Headers: Range, and Access-Control-Expose-Headers: Content-Range, Content-Length, ETag';

// Parses Content-Range: "bytes a-b/size", or "bytes */size" (as 416 answers carry).
function parseContentRange(v: string | null): { start: number; end: number; size: number } | null {
  if (!v) return null;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return null;
  const size = m[3] === '*' ? NaN : Number(m[3]);
  return { start: m[1] ? Number(m[1]) : NaN, end: m[2] ? Number(m[2]) : NaN, size };
}

/** A 206 whose Content-Range the page cannot see: in a browser that is a CORS header missing on the server. */
function badContentRange(s: HttpState, asked: string, res: HttpReply): BlockError {
  const v = res.header('content-range');
  if (v === null && crossOrigin(s, s.url)) {
    return new BlockError(
      'EIO',
      `${s.url}: the server's Content-Range header is hidden from this page by CORS; the server must send ${CORS_HEADERS}`,
    );
  }
  return new BlockError('EIO', `${s.url}: asked for bytes ${asked}, the server sent Content-Range '${v}'`);
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}

async function acquire(s: HttpState): Promise<void> {
  if (s.running >= s.opts.maxInflight) await new Promise<void>((r) => s.queue.push(r));
  s.running++;
  if (s.running > s.stats.peakInflight) s.stats.peakInflight = s.running;
}

function release(s: HttpState): void {
  s.running--;
  s.queue.shift()?.();
}

/** Worth another try: server trouble, throttling, timeouts, dropped connections. */
function transientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

class Transient extends Error {}

/**
 * One request with retries: `use` reads the response while the slot is held
 * (so a body does not stream outside the in-flight bound) and may throw
 * `Transient` to have it retried (a body cut short).
 */
async function request<T>(
  s: HttpState,
  init: { method?: 'HEAD'; headers?: Record<string, string> },
  what: string,
  use: (res: HttpReply) => Promise<T>,
): Promise<T> {
  const { url } = s;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) {
      s.stats.retries++;
      await sleep(Math.min(MAX_BACKOFF_MS, s.opts.retryDelayMs * 2 ** (attempt - 1)));
    }
    await acquire(s);
    try {
      s.stats.requests++;
      let res: HttpReply;
      try {
        res = await s.opts.transport(url, {
          method: init.method ?? 'GET',
          headers: init.headers ? { ...s.opts.headers, ...init.headers } : s.opts.headers,
          timeoutMs: s.opts.timeoutMs,
        });
      } catch (e) {
        if (attempt < s.opts.retries) continue;
        throw networkError(s, what, e, attempt);
      }
      if (transientStatus(res.status) && attempt < s.opts.retries) {
        discard(res);
        continue;
      }
      try {
        return await use(res);
      } catch (e) {
        if (!(e instanceof Transient)) throw e;
        if (attempt < s.opts.retries) continue;
        throw networkError(s, what, e, attempt);
      } finally {
        // A body nobody read (an error thrown before it) must not hold the connection.
        res.cancel();
      }
    } finally {
      release(s);
    }
  }
}

function networkError(s: HttpState, what: string, e: unknown, attempt: number): BlockError {
  const err = e as { name?: string; message?: string };
  const tries = attempt + 1;
  const why = err?.name === 'TimeoutError' ? `timed out after ${s.opts.timeoutMs} ms` : (err?.message ?? String(e));
  let msg = `${s.url}: ${what} failed after ${tries} attempt${tries === 1 ? '' : 's'}: ${why}`;
  if (e instanceof TypeError && crossOrigin(s, s.url)) {
    msg +=
      ` — the browser gives a page the same error for a network failure and for a CORS refusal;` +
      ` if the server is reachable, it must send ${CORS_HEADERS}`;
  }
  return new BlockError('EIO', msg, { cause: e });
}

function validatorOf(res: HttpReply): Validator {
  return { etag: res.header('etag'), lastModified: res.header('last-modified') };
}

/** Refuses a response from another version of the file than the one opened. */
function checkSame(s: HttpState, res: HttpReply, total: number): void {
  const v = validatorOf(res);
  const old = s.validator;
  let why: string | null = null;
  if (old.etag !== null && v.etag !== null && v.etag !== old.etag) why = `ETag ${old.etag} became ${v.etag}`;
  else if (old.lastModified !== null && v.lastModified !== null && v.lastModified !== old.lastModified) {
    why = `Last-Modified ${old.lastModified} became ${v.lastModified}`;
  } else if (Number.isFinite(total) && total !== s.size) why = `its size ${s.size} became ${total}`;
  if (why) {
    discard(res);
    throw new BlockError(
      'EIO',
      `${s.url}: the image changed on the server while open (${why}); refusing to mix blocks of two versions — reopen it`,
    );
  }
}

/** Learns the size (and validator) of `url`: HEAD first, a ranged GET of the first block when HEAD does not say. */
async function probeSize(s: HttpState): Promise<void> {
  const headDone = await request(s, { method: 'HEAD' }, 'HEAD', async (head) => {
    if (head.status === 404 || head.status === 410) throw statusError(s.url, head, 'HEAD');
    const len = head.header('content-length');
    if (head.status >= 200 && head.status < 300 && len !== null && /^\d+$/.test(len) && head.header('content-encoding') === null) {
      s.size = Number(len);
      s.validator = validatorOf(head);
      return true;
    }
    // 401/403 (a presigned URL signed for GET only), 405, no length, compressed: ask with a GET.
    return false;
  });
  if (headDone) return;
  const end = s.opts.blockSize - 1;
  await request(s, { headers: { Range: `bytes=0-${end}` } }, 'read', async (res) => {
    if (res.status === 416) {
      const cr = parseContentRange(res.header('content-range'));
      discard(res);
      if (cr && Number.isFinite(cr.size)) {
        s.size = cr.size;
        s.validator = validatorOf(res);
        return;
      }
      throw new BlockError('EIO', `${s.url}: HTTP 416 without the file size in Content-Range`);
    }
    if (res.status === 200) {
      discard(res);
      throw ignoresRange(s.url);
    }
    if (res.status !== 206) {
      discard(res);
      throw statusError(s.url, res, 'read');
    }
    const cr = parseContentRange(res.header('content-range'));
    if (!cr || !Number.isFinite(cr.size) || cr.start !== 0) {
      discard(res);
      throw badContentRange(s, `0-${end}`, res);
    }
    s.size = cr.size;
    s.validator = validatorOf(res);
    const want = Math.min(s.opts.blockSize, s.size);
    const blk = new Uint8Array(s.opts.blockSize);
    const n = await readBody(res, [blk], want);
    if (n === want && n > 0) {
      // The first block is a whole cache block (or the whole file): keep it, probing reads it next.
      insert(s, 0, blk);
      persist(s, 0, blk);
    }
  });
}

/**
 * Reads a body of `expected` bytes into `parts`; returns its length. A body
 * of another length is a Transient failure (cut short) or an error (too long).
 */
async function readBody(res: HttpReply, parts: Uint8Array[], expected: number): Promise<number> {
  let n: number;
  try {
    n = await res.readInto(parts);
  } catch (e) {
    throw new Transient(`the connection broke while reading the body: ${(e as Error)?.message ?? e}`, { cause: e });
  }
  if (n < 0 || n > expected) throw new BlockError('EIO', `the server sent more than the ${expected} bytes asked for`);
  return n;
}

/** A block buffer for a body: a spare one when there is, else a new one. */
function takeBlock(s: HttpState): Uint8Array {
  return s.spare?.pop() ?? new Uint8Array(s.opts.blockSize);
}

function giveBack(s: HttpState, blk: Uint8Array): void {
  if (s.spare && s.spare.length < s.opts.cacheBlocks / 2) s.spare.push(blk);
}

function insert(s: HttpState, index: number, blk: Uint8Array): void {
  s.cache.delete(index);
  s.cache.set(index, blk);
  while (s.cache.size > s.opts.cacheBlocks) {
    const oldest = s.cache.keys().next().value as number;
    const old = s.cache.get(oldest)!;
    s.cache.delete(oldest);
    giveBack(s, old);
  }
}

/** The persistent store's key for this version of the image: no query string (signatures change), and the validator. */
function storeKey(s: HttpState): string | null {
  const v = s.validator.etag ?? s.validator.lastModified;
  if (v === null) return null; // without a validator a stored block could belong to any version
  const u = new URL(s.url);
  return `${u.origin}${u.pathname}\n${s.size}\n${v}`;
}

function persist(s: HttpState, index: number, blk: Uint8Array): void {
  const store = s.opts.store;
  const key = store && storeKey(s);
  if (!store || !key) return;
  const p = store.put(key, index, blk).catch(() => {});
  s.storeWrites.add(p);
  void p.then(() => s.storeWrites.delete(p));
}

/** Fetches blocks [first, last] with one ranged GET and caches them. */
async function fetchBlocks(s: HttpState, first: number, last: number): Promise<void> {
  const bsz = s.opts.blockSize;
  if (s.opts.store) {
    // Blocks the persistent store has at either end of the run need no request.
    const found = await fromStore(s, first, last);
    const n = last - first + 1;
    let a = 0;
    while (a < n && found[a]) a++;
    let b = n - 1;
    while (b >= a && found[b]) b--;
    if (a > b) return;
    first += a;
    last = first + (b - a);
  }
  const start = first * bsz;
  const end = Math.min((last + 1) * bsz, s.size) - 1;
  const blocks = Array.from({ length: last - first + 1 }, () => takeBlock(s));
  // The last part ends where the body should, so a longer body overflows the parts.
  const parts = blocks.slice();
  const lastLen = end + 1 - last * bsz;
  if (lastLen < bsz) parts[parts.length - 1] = blocks[blocks.length - 1]!.subarray(0, lastLen);
  await getRange(s, start, end, parts).catch((e: unknown) => {
    for (const b of blocks) giveBack(s, b);
    throw e;
  });
  s.stats.blocksFetched += last - first + 1;
  // The file's last block may be short: the rest of its buffer (maybe a reused one) reads as zeros.
  const tail = (end + 1) % bsz;
  if (tail !== 0) blocks[blocks.length - 1]!.fill(0, tail);
  for (let i = first; i <= last; i++) {
    const blk = blocks[i - first]!;
    insert(s, i, blk);
    persist(s, i, blk);
  }
}

/**
 * One ranged GET of bytes [start, end] into `parts` (which hold exactly that
 * many bytes), with retries; the answer must be a 206 of this version of the
 * file with exactly that range.
 */
async function getRange(s: HttpState, start: number, end: number, parts: Uint8Array[]): Promise<void> {
  await request(s, { headers: { Range: `bytes=${start}-${end}` } }, `read at ${hex(start)}`, async (res) => {
    if (res.status === 200) {
      discard(res);
      throw ignoresRange(s.url);
    }
    if (res.status !== 206) {
      discard(res);
      throw statusError(s.url, res, `read of bytes ${start}-${end}`);
    }
    const cr = parseContentRange(res.header('content-range'));
    checkSame(s, res, cr ? cr.size : NaN);
    if (!cr || cr.start !== start || cr.end !== end) {
      discard(res);
      throw badContentRange(s, `${start}-${end}`, res);
    }
    const n = await readBody(res, parts, end - start + 1);
    s.stats.bytesFetched += n;
    if (n !== end - start + 1) {
      throw new Transient(`short response at ${hex(start)}: ${n} of ${end - start + 1} bytes`);
    }
  });
}

/** Whole blocks a read must cover, all missing, to go around the cache (see `bypassRun`). */
const BYPASS_MIN_BLOCKS = 4;

/**
 * The whole blocks [a, b] inside the read [offset, offset + bytes) when every
 * one of them is neither cached nor being fetched and there are at least
 * BYPASS_MIN_BLOCKS of them: such a read gets their bytes straight into the
 * caller's buffer (no cache block, no copy). Not with a persistent store,
 * which the blocks must reach (and which may already hold them).
 */
function bypassRun(s: HttpState, offset: number, bytes: number): [number, number] | null {
  if (s.opts.store) return null;
  const bsz = s.opts.blockSize;
  const a = Math.ceil(offset / bsz);
  const b = Math.floor((offset + bytes) / bsz) - 1;
  if (b - a + 1 < BYPASS_MIN_BLOCKS) return null;
  for (let i = a; i <= b; i++) if (s.cache.has(i) || s.inflight.has(i)) return null;
  return [a, b];
}

/** Reads blocks [a, b] into `into` (their bytes, from block a's start) with one request per piece, in parallel. */
async function fetchAround(s: HttpState, a: number, b: number, into: Uint8Array): Promise<void> {
  const bsz = s.opts.blockSize;
  const piece = pieceBlocks(s);
  const gets: Promise<void>[] = [];
  for (let x = a, y: number; x <= b; x = y + 1) {
    y = Math.min(b, (Math.floor(x / piece) + 1) * piece - 1);
    gets.push(getRange(s, x * bsz, (y + 1) * bsz - 1, [into.subarray((x - a) * bsz, (y + 1 - a) * bsz)]));
  }
  await Promise.all(gets);
  s.stats.blocksFetched += b - a + 1;
  s.stats.blocksBypassed += b - a + 1;
}

/** Reads [offset, offset + bytes) of the file through the cache into `buf`, starting read-ahead of `readAheadBlocks` after it. */
async function readCached(s: HttpState, offset: number, bytes: number, buf: Uint8Array, readAheadBlocks: number): Promise<void> {
  const bsz = s.opts.blockSize;
  const first = Math.floor(offset / bsz);
  const last = Math.floor((offset + bytes - 1) / bsz);
  for (let attempt = 0; ; attempt++) {
    await ensureBlocks(s, first, last, readAheadBlocks);
    // Copy out; a block evicted meanwhile by a concurrent request is fetched again.
    let missing = false;
    for (let i = first; i <= last && !missing; i++) {
      const blk = s.cache.get(i);
      if (!blk) missing = true;
    }
    if (missing && attempt < 3) continue;
    for (let i = first; i <= last; i++) {
      const blk = s.cache.get(i);
      if (!blk) throw new BlockError('EIO', `${s.url}: read cache too small for concurrent reads at ${hex(offset)}`);
      const bStart = i * bsz;
      const from = Math.max(offset, bStart);
      const to = Math.min(offset + bytes, bStart + bsz);
      buf.set(blk.subarray(from - bStart, to - bStart), from - offset);
      insert(s, i, blk);
    }
    return;
  }
}

/** Looks blocks [first, last] up in the persistent store; the ones found join the memory cache. */
async function fromStore(s: HttpState, first: number, last: number): Promise<boolean[]> {
  const store = s.opts.store;
  const key = store && storeKey(s);
  const found: boolean[] = [];
  if (!store || !key) return found;
  const bsz = s.opts.blockSize;
  await Promise.all(
    Array.from({ length: last - first + 1 }, async (_, k) => {
      const blk = await store.get(key, first + k, bsz).catch(() => undefined);
      if (blk && blk.length === bsz) {
        insert(s, first + k, blk);
        s.stats.storeHits++;
        found[k] = true;
      }
    }),
  );
  return found;
}

/** Blocks per request of a long run: a quarter of the read-ahead window, at least 1 MiB. */
function pieceBlocks(s: HttpState): number {
  return Math.max(1, Math.floor(Math.max(1024 * 1024, s.opts.maxReadAhead / 4) / s.opts.blockSize));
}

/** Sends one ranged GET per piece of the runs; blocks being fetched are in `inflight` so other readers wait for them. */
function startFetches(s: HttpState, runs: [number, number][]): Promise<void>[] {
  // A long run is split so its pieces go out in parallel (bounded by maxInflight), at multiples of the piece size so they stay whole.
  const piece = pieceBlocks(s);
  const started: Promise<void>[] = [];
  for (const [a0, b0] of runs) {
    for (let a = a0, b: number; a <= b0; a = b + 1) {
      b = Math.min(b0, (Math.floor(a / piece) + 1) * piece - 1);
      const p = fetchBlocks(s, a, b);
      const settled = p.then(
        () => {},
        () => {},
      );
      for (let i = a; i <= b; i++) s.inflight.set(i, settled);
      void settled.then(() => {
        for (let i = a; i <= b; i++) if (s.inflight.get(i) === settled) s.inflight.delete(i);
      });
      started.push(p);
    }
  }
  return started;
}

/** Runs of blocks in [first, last] that are neither cached nor being fetched. */
function missingRuns(s: HttpState, first: number, last: number): [number, number][] {
  const runs: [number, number][] = [];
  let runStart = -1;
  for (let i = first; i <= last + 1; i++) {
    const missing = i <= last && !s.cache.has(i) && !s.inflight.has(i);
    if (missing && runStart < 0) runStart = i;
    if (!missing && runStart >= 0) {
      runs.push([runStart, i - 1]);
      runStart = -1;
    }
  }
  return runs;
}

/**
 * Makes blocks [first, last] present, and starts read-ahead of the next
 * `readAheadBlocks` blocks in the background (not awaited: the caller gets its
 * data while the next blocks are on their way). When less than half a window
 * lies ready ahead of the reader, one whole window more goes out (ending on a
 * piece boundary, so its requests are whole pieces), so a stream of small
 * sequential reads sends a few large requests, not one per read.
 */
async function ensureBlocks(s: HttpState, first: number, last: number, readAheadBlocks: number): Promise<void> {
  const lastBlock = Math.max(0, Math.ceil(s.size / s.opts.blockSize) - 1);
  const waits: Promise<void>[] = [];
  // Blocks of this request we already have become the most recent, so fetching the rest cannot evict them.
  for (let i = first; i <= last; i++) {
    const blk = s.cache.get(i);
    if (blk) {
      insert(s, i, blk);
      s.stats.cacheHits++;
    }
  }
  for (let i = first; i <= last; i++) if (!s.cache.has(i) && s.inflight.has(i)) waits.push(s.inflight.get(i)!);
  const runs = missingRuns(s, first, last);
  let ahead: [number, number][] = [];
  if (readAheadBlocks > 0 && last < lastBlock) {
    // Blocks right after the request already here or on their way; when fewer than half a window, one more window goes out.
    let present = 0;
    while (last + 1 + present <= lastBlock && (s.cache.has(last + 1 + present) || s.inflight.has(last + 1 + present))) present++;
    if (present * 2 < readAheadBlocks) {
      const piece = pieceBlocks(s);
      let end = last + present + readAheadBlocks;
      const aligned = Math.floor((end + 1) / piece) * piece - 1;
      if (aligned > last + present) end = aligned;
      ahead = missingRuns(s, last + 1 + present, Math.min(lastBlock, end));
    }
  }
  waits.push(...startFetches(s, runs));
  for (const p of startFetches(s, ahead)) p.catch(() => {});
  await Promise.all(waits);
}

export const httpDriver: BlockDriver = {
  name: 'http',
  kind: 'protocol',
  protocolName: 'http',
  async open(bs) {
    if (!bs.readOnly) {
      throw new BlockError('EROFS', `${bs.filename}: HTTP images are read-only (open with read-only)`);
    }
    const opts = resolveOptions((bs.options.http as HttpOptions | undefined) ?? {});
    const s: HttpState = {
      url: bs.filename,
      size: 0,
      validator: { etag: null, lastModified: null },
      opts,
      cache: new Map(),
      inflight: new Map(),
      lastEnd: -1,
      window: 0,
      running: 0,
      queue: [],
      stats: { requests: 0, retries: 0, cacheHits: 0, storeHits: 0, blocksFetched: 0, bytesFetched: 0, peakInflight: 0, blocksBypassed: 0 },
      storeWrites: new Set(),
      spare: opts.store ? null : [],
    };
    bs.opaque = s;
    await probeSize(s);
    bs.totalBytes = s.size;
    // One request never holds more than a quarter of the cache (read-ahead, at most a third, keeps up to half a window more), so a read's own blocks are never evicted before it copies them.
    const quarter = Math.max(opts.blockSize, Math.floor(opts.cacheBlocks / 4) * opts.blockSize);
    bs.limits = { requestAlignment: 1, maxTransfer: Math.min(bs.limits.maxTransfer, quarter) };
  },
  async close(bs) {
    const s = bs.state<HttpState>();
    await Promise.all([...s.storeWrites]);
    s.cache.clear();
  },
  async flush(bs) {
    // Blocks on their way to the persistent store are written before a flush returns.
    await Promise.all([...bs.state<HttpState>().storeWrites]);
  },
  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<HttpState>();
    const bsz = s.opts.blockSize;
    const have = Math.max(0, Math.min(bytes, s.size - offset));
    if (have < bytes) buf.fill(0, have, bytes);
    if (have === 0) return;
    // Sequential access doubles the read-ahead window (from one block) up to the cap; a seek resets it.
    s.window = offset === s.lastEnd ? Math.min(Math.max(s.window * 2, bsz), s.opts.maxReadAhead) : 0;
    s.lastEnd = offset + have;
    // The window is bounded to a third of the cache: with what it keeps ahead (up to one and a half windows) and the request
    // (at most a quarter), the request's own blocks are never evicted.
    const ahead = Math.min(Math.floor(s.window / bsz), Math.floor(s.opts.cacheBlocks / 3));
    const around = bypassRun(s, offset, have);
    if (!around) return readCached(s, offset, have, buf, ahead);
    // Whole missing blocks come straight into buf; the partial blocks at either edge go through the cache, and read-ahead
    // starts after the read as usual.
    const [a, b] = around;
    const head = a * bsz - offset;
    const tail = offset + have - (b + 1) * bsz;
    await Promise.all([
      fetchAround(s, a, b, buf.subarray(head, head + (b + 1 - a) * bsz)),
      head > 0 ? readCached(s, offset, head, buf, 0) : undefined,
      tail > 0 ? readCached(s, (b + 1) * bsz, tail, buf.subarray(have - tail), ahead) : ensureBlocks(s, b + 1, b, ahead),
    ]);
  },
  async getLength(bs) {
    return bs.state<HttpState>().size;
  },
  // As QEMU's curl driver: no BlockDriverInfo (so raw over http shows no dirty flag).
  getDriverInfo: () => undefined,
};

registerDriver(httpDriver);

/** Requests a node has sent (HEAD and GET, retries included), for tests and statistics. */
export function httpRequestCount(bs: BlockNode): number {
  return bs.state<HttpState>().stats.requests;
}

/** A copy of a node's counters (requests, retries, cache and store hits, peak requests in flight). */
export function httpStats(bs: BlockNode): HttpStatsNow {
  const s = bs.state<HttpState>();
  return { ...s.stats, inflight: s.running };
}

/**
 * Images on web servers. Names are URLs, absolute or relative to `baseUrl`;
 * references inside an image resolve against the image's URL and must stay on
 * its origin.
 */
export class HttpStorage implements Storage {
  readonly name = 'http';
  constructor(
    readonly baseUrl: string | undefined = (globalThis as { location?: { href: string } }).location?.href,
    readonly options: HttpOptions = {},
  ) {}

  url(filename: string): string {
    let u: URL;
    try {
      u = new URL(filename, this.baseUrl);
    } catch (e) {
      throw new BlockError('EINVAL', `'${filename}' is not a URL${this.baseUrl ? ` relative to ${this.baseUrl}` : ''}`, { cause: e });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new BlockError('EPERM', `refusing to open '${filename}': only http and https URLs are images of the http storage`);
    }
    u.hash = '';
    return u.href;
  }

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    if (options.create) throw new BlockError('EROFS', `${filename}: cannot create files over HTTP`);
    const bs = new BlockNode(httpDriver, this.url(filename), { readOnly: options.readOnly, http: this.options });
    await httpDriver.open(bs, bs.options);
    return bs;
  }

  resolve(from: string, reference: string): string {
    const base = this.url(from);
    let target: URL;
    try {
      target = new URL(reference, base);
    } catch (e) {
      throw new BlockError('EINVAL', `${from}: backing file name '${reference}' is not a valid URL reference`, { cause: e });
    }
    if (target.origin !== new URL(base).origin) {
      throw new BlockError('EPERM', `${from}: refusing to open '${reference}': it is on another origin than the image`);
    }
    target.hash = '';
    return target.href;
  }
}
