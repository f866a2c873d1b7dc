/**
 * A test protocol that behaves like a host file opened with O_DIRECT on a
 * disk with large sectors: every request the core hands it must be aligned
 * to `requestAlignment` (512 or 4096), in offset and in length. An unaligned
 * request is a bug in the request path (block/io.ts), so the driver throws
 * and also records it, in case a caller swallows the error.
 *
 * Bytes live in a MemoryFile; the file only ever grows by aligned writes, so
 * its length stays a multiple of the alignment (like a device). Requests may
 * be delayed by a hook, so tests can interleave concurrent requests.
 */
import { BlockError } from '../../src/block/errors.js';
import { registerDriver, type BlockDriver } from '../../src/block/driver.js';
import { BlockNode } from '../../src/block/node.js';
import { pathCombine, type Storage } from '../../src/block/open.js';
import { MemoryFile } from '../../src/protocols/memory.js';

export interface AlignedOptions {
  /** requestAlignment (and write-zeroes alignment) the driver enforces. */
  align: number;
  /** Largest request (a multiple of align); default 16 MiB. */
  maxTransfer?: number;
  /** Offer pwriteZeroes (aligned, like fallocate ZERO_RANGE); without it the core writes zero buffers. */
  writeZeroes?: boolean;
  /** Awaited before each read and write reaches the bytes: lets tests interleave requests. */
  delay?: (op: 'read' | 'write' | 'zero', offset: number, bytes: number) => Promise<void>;
}

interface AlignedState {
  f: MemoryFile;
  storage: AlignedStorage;
}

/** One request the driver saw. */
export interface SeenRequest {
  op: 'read' | 'write' | 'zero';
  offset: number;
  bytes: number;
}

function check(bs: BlockNode, op: SeenRequest['op'], offset: number, bytes: number): AlignedState {
  const s = bs.state<AlignedState>();
  const a = s.storage.opts.align;
  s.storage.seen.push({ op, offset, bytes });
  if (offset % a !== 0 || bytes % a !== 0 || bytes <= 0 || bytes > bs.limits.maxTransfer) {
    const msg = `${bs.filename}: unaligned ${op} at offset ${offset}, ${bytes} bytes (alignment ${a})`;
    s.storage.violations.push(msg);
    throw new BlockError('EINVAL', msg);
  }
  return s;
}

export const alignedDriver: BlockDriver = {
  name: 'aligned-test',
  kind: 'protocol',
  protocolName: 'aligned-test',
  async open(bs) {
    const s = bs.options.aligned as AlignedState | undefined;
    if (!s) throw new BlockError('ENOENT', `Could not open '${bs.filename}': No such file or directory`);
    bs.opaque = s;
    bs.totalBytes = s.f.size;
    const { align, maxTransfer = 16 * 1024 * 1024, writeZeroes } = s.storage.opts;
    bs.limits = { requestAlignment: align, maxTransfer, ...(writeZeroes ? { pwriteZeroesAlignment: align } : {}) };
  },
  async preadv(bs, offset, bytes, buf) {
    const { f, storage } = check(bs, 'read', offset, bytes);
    await storage.opts.delay?.('read', offset, bytes);
    const have = Math.max(0, Math.min(bytes, f.size - offset));
    if (have > 0) buf.set(f.data.subarray(offset, offset + have));
    buf.fill(0, have, bytes);
  },
  async pwritev(bs, offset, bytes, buf) {
    const { f, storage } = check(bs, 'write', offset, bytes);
    await storage.opts.delay?.('write', offset, bytes);
    put(bs, f, offset, buf.subarray(0, bytes));
  },
  async pwriteZeroes(bs, offset, bytes) {
    const { f, storage } = check(bs, 'zero', offset, bytes);
    if (!storage.opts.writeZeroes) throw new BlockError('ENOTSUP', `${bs.filename}: no write-zeroes`);
    await storage.opts.delay?.('zero', offset, bytes);
    put(bs, f, offset, new Uint8Array(bytes));
  },
  async truncate(bs, size) {
    const s = bs.state<AlignedState>();
    const a = s.storage.opts.align;
    if (size % a !== 0) throw new BlockError('EINVAL', `${bs.filename}: unaligned truncate to ${size} bytes (alignment ${a})`);
    s.f.ensure(size);
    if (size > s.f.size) s.f.data.fill(0, s.f.size, size);
    s.f.size = size;
    bs.totalBytes = size;
  },
  async getLength(bs) {
    return bs.state<AlignedState>().f.size;
  },
  async getAllocatedFileSize(bs) {
    return bs.state<AlignedState>().f.size;
  },
};

function put(bs: BlockNode, f: MemoryFile, offset: number, data: Uint8Array): void {
  f.ensure(offset + data.length);
  if (offset > f.size) f.data.fill(0, f.size, offset);
  f.data.set(data, offset);
  f.size = Math.max(f.size, offset + data.length);
  bs.totalBytes = f.size;
}

registerDriver(alignedDriver);

/** A namespace of aligned in-memory files (a Storage, so images open on it with openImage). */
export class AlignedStorage implements Storage {
  readonly name = 'aligned-test';
  readonly files = new Map<string, MemoryFile>();
  /** Every request the driver saw, in order. */
  readonly seen: SeenRequest[] = [];
  /** Messages of the unaligned requests the driver refused. */
  readonly violations: string[] = [];

  constructor(readonly opts: AlignedOptions) {}

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    let f = this.files.get(filename);
    if (!f && options.create) this.files.set(filename, (f = new MemoryFile()));
    const state: AlignedState | undefined = f ? { f, storage: this } : undefined;
    const bs = new BlockNode(alignedDriver, filename, { readOnly: options.readOnly, aligned: state });
    await alignedDriver.open(bs, bs.options);
    return bs;
  }
  async createFile(filename: string): Promise<void> {
    this.files.set(filename, new MemoryFile());
  }
  resolve(from: string, reference: string): string {
    return pathCombine(from, reference);
  }
  /** Puts `bytes` (length a multiple of the alignment) under `filename`. */
  put(filename: string, bytes: Uint8Array): void {
    if (bytes.length % this.opts.align !== 0) throw new Error(`aligned storage: ${bytes.length} bytes is not a multiple of ${this.opts.align}`);
    this.files.set(filename, new MemoryFile(bytes));
  }
  get(filename: string): Uint8Array | undefined {
    return this.files.get(filename)?.bytes();
  }
}
