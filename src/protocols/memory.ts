/**
 * The `memory` protocol: images held in growable in-memory buffers, keyed by
 * name in a MemoryStorage. Used by tests, by the demo image and wherever a
 * scratch image is needed. Sparse in spirit: a file only grows where written.
 */
import { BlockError } from '../block/errors.js';
import type { BlockDriver } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import { pathCombine, type Storage } from '../block/open.js';
import { registerDriver } from '../block/driver.js';

/** One file's bytes; `size` may be smaller than `data.length` (capacity). */
export class MemoryFile {
  data: Uint8Array;
  size: number;
  constructor(initial?: Uint8Array) {
    this.data = initial ? initial.slice() : new Uint8Array(0);
    this.size = this.data.length;
  }
  ensure(size: number): void {
    if (size <= this.data.length) return;
    const cap = Math.max(size, Math.min(this.data.length * 2, this.data.length + 64 * 1024 * 1024));
    let next: Uint8Array;
    try {
      next = new Uint8Array(cap);
    } catch (e) {
      // A write far past the end (a crafted image's offset): the host has no such buffer.
      throw new BlockError('ENOSPC', `memory file cannot grow to ${size} bytes`, { cause: e });
    }
    next.set(this.data.subarray(0, this.size));
    this.data = next;
  }
  bytes(): Uint8Array {
    return this.data.subarray(0, this.size);
  }
}

interface MemoryState {
  f: MemoryFile;
}

export const memoryDriver: BlockDriver = {
  name: 'memory',
  kind: 'protocol',
  protocolName: 'memory',
  writesInPlace: true,
  async open(bs) {
    const f = bs.options.memoryFile as MemoryFile | undefined;
    if (!f) throw new BlockError('ENOENT', `Could not open '${bs.filename}': No such file or directory`);
    bs.opaque = { f } satisfies MemoryState;
    bs.totalBytes = f.size;
  },
  async preadv(bs, offset, bytes, buf) {
    const { f } = bs.state<MemoryState>();
    const have = Math.max(0, Math.min(bytes, f.size - offset));
    if (have > 0) buf.set(f.data.subarray(offset, offset + have));
    if (have < bytes) buf.fill(0, Math.max(have, 0), bytes);
  },
  async pwritev(bs, offset, bytes, buf) {
    const { f } = bs.state<MemoryState>();
    f.ensure(offset + bytes);
    if (offset > f.size) f.data.fill(0, f.size, offset);
    f.data.set(buf.subarray(0, bytes), offset);
    f.size = Math.max(f.size, offset + bytes);
    bs.totalBytes = f.size;
  },
  async truncate(bs, size) {
    const { f } = bs.state<MemoryState>();
    if (size > f.size) {
      f.ensure(size);
      f.data.fill(0, f.size, size);
    }
    f.size = size;
    bs.totalBytes = size;
  },
  async getLength(bs) {
    return bs.state<MemoryState>().f.size;
  },
  async getAllocatedFileSize(bs) {
    return bs.state<MemoryState>().f.size;
  },
};

registerDriver(memoryDriver);

/** A namespace of in-memory files. */
export class MemoryStorage implements Storage {
  readonly name = 'memory';
  readonly files = new Map<string, MemoryFile>();

  async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    let f = this.files.get(filename);
    if (!f && options.create) this.files.set(filename, (f = new MemoryFile()));
    const bs = new BlockNode(memoryDriver, filename, { readOnly: options.readOnly, memoryFile: f });
    await memoryDriver.open(bs, bs.options);
    return bs;
  }
  async createFile(filename: string): Promise<void> {
    this.files.set(filename, new MemoryFile());
  }
  async removeFile(filename: string): Promise<void> {
    this.files.delete(filename);
  }
  resolve(from: string, reference: string): string {
    // Names are map keys, not paths a file system would resolve: collapse '.' and '..' so
    // "sub/../base.qcow2" finds "base.qcow2" (a backing reference "../base.qcow2" from "sub/top.qcow2").
    const combined = pathCombine(from, reference);
    if (!/(^|\/)\.\.?(\/|$)/.test(combined)) return combined;
    const out: string[] = [];
    for (const part of combined.split('/')) {
      if (part === '.') continue;
      if (part === '..' && out.length > 0 && out[out.length - 1] !== '..' && out[out.length - 1] !== '') out.pop();
      else out.push(part);
    }
    return out.join('/');
  }
  /** Puts `bytes` under `filename` (copied). */
  put(filename: string, bytes: Uint8Array): void {
    this.files.set(filename, new MemoryFile(bytes));
  }
  get(filename: string): Uint8Array | undefined {
    return this.files.get(filename)?.bytes();
  }
}
