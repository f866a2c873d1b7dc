/**
 * BlockBackend: the named front end users and jobs talk to (QEMU's
 * BlockBackend). It holds the root node of a graph, checks every request
 * against the device's size, applies the error policy, counts statistics,
 * and owns detect-zeroes for what is written through it.
 */
import { BlockError, hex } from './errors.js';
import type { BlockNode } from './node.js';
import { bdrvFlush, bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from './io.js';
import type { PreallocMode, WriteFlags } from './driver.js';

/** QEMU's rerror/werror: what a failed request does. (`stop` has no VM to stop here, so it reports like `report`.) */
export type ErrorAction = 'report' | 'ignore' | 'enospc';

export interface BlockStats {
  rdBytes: number;
  wrBytes: number;
  zoneBytes: number;
  rdOperations: number;
  wrOperations: number;
  zeroOperations: number;
  discardOperations: number;
  discardBytes: number;
  flushOperations: number;
  failedRdOperations: number;
  failedWrOperations: number;
  rdTotalTimeNs: number;
  wrTotalTimeNs: number;
}

function emptyStats(): BlockStats {
  return {
    rdBytes: 0,
    wrBytes: 0,
    zoneBytes: 0,
    rdOperations: 0,
    wrOperations: 0,
    zeroOperations: 0,
    discardOperations: 0,
    discardBytes: 0,
    flushOperations: 0,
    failedRdOperations: 0,
    failedWrOperations: 0,
    rdTotalTimeNs: 0,
    wrTotalTimeNs: 0,
  };
}

export interface BackendOptions {
  name?: string;
  rerror?: ErrorAction;
  werror?: ErrorAction;
  detectZeroes?: 'off' | 'on' | 'unmap';
}

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

export class BlockBackend {
  readonly name: string;
  root: BlockNode;
  rerror: ErrorAction;
  werror: ErrorAction;
  readonly stats: BlockStats = emptyStats();
  /** Set when a request failed and the error policy kept the error ("iostatus"). */
  iostatus: 'ok' | 'failed' | 'nospace' = 'ok';

  constructor(root: BlockNode, options: BackendOptions = {}) {
    this.root = root;
    this.name = options.name ?? '';
    this.rerror = options.rerror ?? 'report';
    this.werror = options.werror ?? 'enospc';
    if (options.detectZeroes) root.detectZeroes = options.detectZeroes;
  }

  get readOnly(): boolean {
    return this.root.readOnly;
  }

  /** Length of the device in bytes. */
  async getLength(): Promise<number> {
    return bdrvGetLength(this.root);
  }

  private checkBounds(offset: number, bytes: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
      throw new BlockError('EINVAL', `${this.label()}: invalid ${what} request (offset ${offset}, ${bytes} bytes)`);
    }
    if (offset + bytes > this.root.totalBytes) {
      throw new BlockError(
        'EIO',
        `${this.label()}: ${what} at ${hex(offset)} (+${bytes} bytes) is past the end of the device (${this.root.totalBytes} bytes)`,
      );
    }
  }

  private label(): string {
    return this.name || this.root.filename;
  }

  private handle(e: unknown, write: boolean): void {
    const action = write ? this.werror : this.rerror;
    const code = e instanceof BlockError ? e.code : 'EIO';
    if (action === 'ignore') return;
    this.iostatus = code === 'ENOSPC' ? 'nospace' : 'failed';
    throw e;
  }

  async read(offset: number, bytes: number, buf: Uint8Array): Promise<void> {
    this.checkBounds(offset, bytes, 'read');
    const t0 = now();
    try {
      await bdrvPread(this.root, offset, bytes, buf);
      this.stats.rdBytes += bytes;
      this.stats.rdOperations++;
    } catch (e) {
      this.stats.failedRdOperations++;
      this.handle(e, false);
    } finally {
      this.stats.rdTotalTimeNs += Math.round((now() - t0) * 1e6);
    }
  }

  async write(offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'write');
    const t0 = now();
    try {
      await bdrvPwrite(this.root, offset, bytes, buf, flags);
      this.stats.wrBytes += bytes;
      this.stats.wrOperations++;
    } catch (e) {
      this.stats.failedWrOperations++;
      this.handle(e, true);
    } finally {
      this.stats.wrTotalTimeNs += Math.round((now() - t0) * 1e6);
    }
  }

  async writeZeroes(offset: number, bytes: number, flags: WriteFlags = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'write-zeroes');
    try {
      await bdrvPwriteZeroes(this.root, offset, bytes, flags);
      this.stats.zeroOperations++;
    } catch (e) {
      this.stats.failedWrOperations++;
      this.handle(e, true);
    }
  }

  async discard(offset: number, bytes: number): Promise<void> {
    this.checkBounds(offset, bytes, 'discard');
    await bdrvPdiscard(this.root, offset, bytes);
    this.stats.discardOperations++;
    this.stats.discardBytes += bytes;
  }

  async flush(): Promise<void> {
    await bdrvFlush(this.root);
    this.stats.flushOperations++;
  }

  async truncate(size: number, exact = false, prealloc: PreallocMode = 'off'): Promise<void> {
    await bdrvTruncate(this.root, size, exact, prealloc);
  }
}
