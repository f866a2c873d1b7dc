/**
 * The `http` protocol: a read-only image on a web server, read with
 * `Range: bytes=a-b` requests (browser and Node 20, both have fetch).
 *
 * Why a cache: formats read small metadata (qcow2's header, L1, 4 KiB L2
 * slices) scattered over the file, and each HTTP round trip costs far more
 * than the bytes. Reads are therefore rounded out to aligned blocks (64 KiB by
 * default) kept in a bounded LRU (32 MiB by default); missing blocks that are
 * adjacent are fetched with one request. Sequential reads (convert, sha of a
 * whole disk) grow a read-ahead window that doubles on every sequential
 * request up to a cap and resets on a seek.
 *
 * The size comes from HEAD's Content-Length or, when HEAD does not help, from
 * the Content-Range of a first ranged GET. A server that ignores Range (200
 * with the whole body) gets a clear ENOTSUP: the body is cancelled, never
 * buffered, since it may be a 100 GiB disk. A changing ETag between requests
 * is an EIO: mixing blocks of two versions of an image would corrupt reads.
 *
 * Names: absolute http(s) URLs, or relative to the storage's base URL.
 * Backing names inside an image resolve against the image's URL and must stay
 * on the same origin (a crafted image must not make us fetch another site).
 */
import { BlockError, hex } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';

export interface HttpOptions {
  /** Cache block size in bytes (a power of two, default 64 KiB). */
  blockSize?: number;
  /** Read cache capacity in bytes (default 32 MiB). */
  cacheBytes?: number;
  /** Largest read-ahead window in bytes (default 4 MiB). */
  maxReadAhead?: number;
  /** Extra request headers (authorization, …). */
  headers?: Record<string, string>;
  /** The fetch to use (tests, proxies); globalThis.fetch by default. */
  fetch?: typeof fetch;
}

interface Resolved {
  blockSize: number;
  cacheBlocks: number;
  maxReadAhead: number;
  headers: Record<string, string>;
  fetch: typeof fetch;
}

interface HttpState {
  url: string;
  size: number;
  etag: string | null;
  opts: Resolved;
  /** LRU: block index → bytes (Map keeps insertion order; a hit re-inserts). */
  cache: Map<number, Uint8Array>;
  inflight: Map<number, Promise<void>>;
  /** End of the previous read and the current read-ahead window, for sequential detection. */
  lastEnd: number;
  window: number;
  /** Requests sent (for tests and stats). */
  requests: number;
}

const DEFAULTS = { blockSize: 64 * 1024, cacheBytes: 32 * 1024 * 1024, maxReadAhead: 4 * 1024 * 1024 };

function resolveOptions(o: HttpOptions): Resolved {
  const blockSize = o.blockSize ?? DEFAULTS.blockSize;
  if (!(blockSize >= 512 && (blockSize & (blockSize - 1)) === 0)) {
    throw new BlockError('EINVAL', `http: block size ${blockSize} is not a power of two of at least 512`);
  }
  const cacheBytes = o.cacheBytes ?? DEFAULTS.cacheBytes;
  return {
    blockSize,
    cacheBlocks: Math.max(2, Math.floor(cacheBytes / blockSize)),
    maxReadAhead: Math.max(0, o.maxReadAhead ?? DEFAULTS.maxReadAhead),
    headers: o.headers ?? {},
    fetch: o.fetch ?? globalThis.fetch.bind(globalThis),
  };
}

function statusError(url: string, res: Response, what: string): BlockError {
  if (res.status === 404 || res.status === 410) {
    return new BlockError('ENOENT', `Could not open '${url}': No such file or directory (HTTP ${res.status})`);
  }
  if (res.status === 401 || res.status === 403) {
    return new BlockError('EACCES', `${url}: ${what} refused: HTTP ${res.status} ${res.statusText}`.trimEnd());
  }
  return new BlockError('EIO', `${url}: ${what} failed: HTTP ${res.status} ${res.statusText}`.trimEnd());
}

/** Drops a response body we do not want, without reading it. */
function discard(res: Response): void {
  res.body?.cancel().catch(() => {});
}

function ignoresRange(url: string): BlockError {
  return new BlockError(
    'ENOTSUP',
    `${url}: the server ignores Range requests (answered 200 with the whole file); blocktab needs byte ranges to read remote images`,
  );
}

// Parses Content-Range: "bytes a-b/size", or "bytes */size" (as 416 answers carry).
function parseContentRange(v: string | null): { start: number; end: number; size: number } | null {
  if (!v) return null;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return null;
  const size = m[3] === '*' ? NaN : Number(m[3]);
  return { start: m[1] ? Number(m[1]) : NaN, end: m[2] ? Number(m[2]) : NaN, size };
}

async function doFetch(s: { opts: Resolved }, url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await s.opts.fetch(url, { ...init, headers: { ...s.opts.headers, ...(init.headers as Record<string, string>) } });
  } catch (e) {
    throw new BlockError('EIO', `${url}: ${what} failed: ${(e as Error)?.message ?? e}`, { cause: e });
  }
}

/** Learns the size (and validator) of `url`: HEAD first, a ranged GET of the first block when HEAD does not say. */
async function probeSize(s: HttpState): Promise<void> {
  const { url } = s;
  const head = await doFetch(s, url, { method: 'HEAD' }, 'HEAD');
  s.requests++;
  if (head.status === 404 || head.status === 410 || head.status === 401 || head.status === 403) throw statusError(url, head, 'HEAD');
  const len = head.headers.get('content-length');
  if (head.ok && len !== null && /^\d+$/.test(len) && head.headers.get('content-encoding') === null) {
    s.size = Number(len);
    s.etag = head.headers.get('etag');
    return;
  }
  // No usable HEAD (405, no length, compressed): the first block tells the size in Content-Range.
  const end = s.opts.blockSize - 1;
  const res = await doFetch(s, url, { headers: { Range: `bytes=0-${end}` } }, 'read');
  s.requests++;
  if (res.status === 416) {
    const cr = parseContentRange(res.headers.get('content-range'));
    discard(res);
    if (cr && Number.isFinite(cr.size)) {
      s.size = cr.size;
      return;
    }
    throw new BlockError('EIO', `${url}: HTTP 416 without the file size in Content-Range`);
  }
  if (res.status === 200) {
    discard(res);
    throw ignoresRange(url);
  }
  if (res.status !== 206) {
    discard(res);
    throw statusError(url, res, 'read');
  }
  const cr = parseContentRange(res.headers.get('content-range'));
  if (!cr || !Number.isFinite(cr.size) || cr.start !== 0) {
    discard(res);
    throw new BlockError('EIO', `${url}: missing or unexpected Content-Range '${res.headers.get('content-range')}' for bytes 0-${end}`);
  }
  s.size = cr.size;
  s.etag = res.headers.get('etag');
  const body = new Uint8Array(await res.arrayBuffer());
  if (body.length === Math.min(s.opts.blockSize, s.size) && body.length > 0) {
    // The first block is a whole cache block (or the whole file): keep it, probing reads it next.
    const blk = new Uint8Array(s.opts.blockSize);
    blk.set(body);
    insert(s, 0, blk);
  }
}

function insert(s: HttpState, index: number, blk: Uint8Array): void {
  s.cache.delete(index);
  s.cache.set(index, blk);
  while (s.cache.size > s.opts.cacheBlocks) {
    const oldest = s.cache.keys().next().value as number;
    s.cache.delete(oldest);
  }
}

/** Fetches blocks [first, last] with one ranged GET and caches them. */
async function fetchBlocks(s: HttpState, first: number, last: number): Promise<void> {
  const bsz = s.opts.blockSize;
  const start = first * bsz;
  const end = Math.min((last + 1) * bsz, s.size) - 1;
  const res = await doFetch(s, s.url, { headers: { Range: `bytes=${start}-${end}` } }, `read at ${hex(start)}`);
  s.requests++;
  if (res.status === 200) {
    discard(res);
    throw ignoresRange(s.url);
  }
  if (res.status !== 206) {
    discard(res);
    throw statusError(s.url, res, `read of bytes ${start}-${end}`);
  }
  const etag = res.headers.get('etag');
  if (s.etag !== null && etag !== null && etag !== s.etag) {
    discard(res);
    throw new BlockError('EIO', `${s.url}: the image changed on the server while open (ETag ${s.etag} became ${etag})`);
  }
  const cr = parseContentRange(res.headers.get('content-range'));
  if (!cr || cr.start !== start || cr.end !== end) {
    discard(res);
    throw new BlockError('EIO', `${s.url}: asked for bytes ${start}-${end}, the server sent Content-Range '${res.headers.get('content-range')}'`);
  }
  const body = new Uint8Array(await res.arrayBuffer());
  if (body.length !== end - start + 1) {
    throw new BlockError('EIO', `${s.url}: short response at ${hex(start)}: ${body.length} of ${end - start + 1} bytes`);
  }
  for (let i = first; i <= last; i++) {
    const o = (i - first) * bsz;
    const n = Math.min(bsz, body.length - o);
    // Full blocks are views of the response (no copy); the file's last, short block is padded.
    let blk: Uint8Array;
    if (n === bsz) blk = body.subarray(o, o + bsz);
    else {
      blk = new Uint8Array(bsz);
      blk.set(body.subarray(o, o + n));
    }
    insert(s, i, blk);
  }
}

/** Makes blocks [first, last] present (fetching missing runs, plus read-ahead after `last`). */
async function ensureBlocks(s: HttpState, first: number, last: number, readAheadBlocks: number): Promise<void> {
  const lastBlock = Math.max(0, Math.ceil(s.size / s.opts.blockSize) - 1);
  const waits: Promise<void>[] = [];
  const runs: [number, number][] = [];
  let runStart = -1;
  // Blocks of this request we already have become the most recent, so fetching the rest cannot evict them.
  for (let i = first; i <= last; i++) {
    const blk = s.cache.get(i);
    if (blk) insert(s, i, blk);
  }
  for (let i = first; i <= last + 1; i++) {
    const missing = i <= last && !s.cache.has(i) && !s.inflight.has(i);
    if (i <= last && s.inflight.has(i)) waits.push(s.inflight.get(i)!);
    if (missing && runStart < 0) runStart = i;
    if (!missing && runStart >= 0) {
      runs.push([runStart, i - 1]);
      runStart = -1;
    }
  }
  // Read-ahead extends a run that ends at the request's last block, up to the first block we already have.
  const tail = runs.length > 0 ? runs[runs.length - 1]! : null;
  if (tail && tail[1] === last && readAheadBlocks > 0) {
    let e = last;
    const limit = Math.min(lastBlock, last + readAheadBlocks);
    while (e < limit && !s.cache.has(e + 1) && !s.inflight.has(e + 1)) e++;
    tail[1] = e;
  }
  for (const [a, b] of runs) {
    const p = fetchBlocks(s, a, b);
    const settled = p.then(
      () => {},
      () => {},
    );
    for (let i = a; i <= b; i++) s.inflight.set(i, settled);
    void settled.then(() => {
      for (let i = a; i <= b; i++) if (s.inflight.get(i) === settled) s.inflight.delete(i);
    });
    waits.push(p);
  }
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
      etag: null,
      opts,
      cache: new Map(),
      inflight: new Map(),
      lastEnd: -1,
      window: 0,
      requests: 0,
    };
    await probeSize(s);
    bs.opaque = s;
    bs.totalBytes = s.size;
    // One request never holds more than half the cache, so a read's own blocks are never evicted before it copies them.
    const half = Math.max(opts.blockSize, Math.floor((opts.cacheBlocks * opts.blockSize) / 2 / opts.blockSize) * opts.blockSize);
    bs.limits = { requestAlignment: 1, maxTransfer: Math.min(bs.limits.maxTransfer, half) };
  },
  async close(bs) {
    bs.state<HttpState>().cache.clear();
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
    const first = Math.floor(offset / bsz);
    const last = Math.floor((offset + have - 1) / bsz);
    for (let attempt = 0; ; attempt++) {
      // Read-ahead is bounded to a quarter of the cache, so with the request (at most half) it never evicts the request's own blocks.
      await ensureBlocks(s, first, last, Math.min(Math.floor(s.window / bsz), Math.floor(s.opts.cacheBlocks / 4)));
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
        const to = Math.min(offset + have, bStart + bsz);
        buf.set(blk.subarray(from - bStart, to - bStart), from - offset);
        insert(s, i, blk);
      }
      return;
    }
  },
  async getLength(bs) {
    return bs.state<HttpState>().size;
  },
};

registerDriver(httpDriver);

/** Requests a node has sent (HEAD and GET), for tests and statistics. */
export function httpRequestCount(bs: BlockNode): number {
  return bs.state<HttpState>().requests;
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
