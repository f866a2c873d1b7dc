/**
 * BlockBackend: the named front end users and jobs talk to (QEMU's
 * BlockBackend). It holds the root node of a graph, checks every request
 * against the device's size, throttles it (when it is a member of a throttle
 * group), applies the error policy, counts statistics (for requests its
 * issuer accounts, as QEMU's devices do) and owns detect-zeroes for what is
 * written through it.
 *
 * Error policy (rerror/werror): a failed request either is reported to its
 * issuer, ignored (the issuer sees success), or stops the backend (`stop`,
 * and `enospc` for ENOSPC): the failed request and every later one wait
 * until `resume()` (QMP's `cont`), then the failed one is retried. Each
 * failure that reaches the policy is announced through `hooks.ioError`
 * (the Engine turns it into a BLOCK_IO_ERROR event).
 */
import { BlockError, hex } from './errors.js';
import type { BlockNode } from './node.js';
import { copyOnReadPread } from './copy-on-read.js';
import { bdrvFlush, bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from './io.js';
import type { PreallocMode, WriteFlags } from './driver.js';
import { BlockAcctStats, type AcctType } from './accounting.js';
import type { Clock } from './clock.js';
import type { ThrottleGroupMember } from './throttle-group.js';

/** QEMU's BlockdevOnError: what a failed request does. */
export type ErrorAction = 'report' | 'ignore' | 'enospc' | 'stop';
/** What was done about one failure (BLOCK_IO_ERROR's `action`). */
export type ErrorOutcome = 'report' | 'ignore' | 'stop';
export type IoStatus = 'ok' | 'failed' | 'nospace';

export interface IoErrorReport {
  backend: BlockBackend;
  operation: 'read' | 'write';
  action: ErrorOutcome;
  error: unknown;
}

export interface BackendHooks {
  /** A failure went through the error policy. */
  ioError?(report: IoErrorReport): void;
  /** The policy stopped the backend (the Engine stops every backend, as a VM stop does). */
  stop?(backend: BlockBackend): void;
}

export interface BackendOptions {
  name?: string;
  rerror?: ErrorAction;
  werror?: ErrorAction;
  detectZeroes?: 'off' | 'on' | 'unmap';
  /** QEMU's -drive copy-on-read=on: reads copy what they find in the backing chain into the root (src/block/copy-on-read.ts). */
  copyOnRead?: boolean;
  /** Clock for statistics (default: the host's). */
  clock?: Clock;
  /** QEMU's stats-account-invalid / stats-account-failed (default on). */
  accountInvalid?: boolean;
  accountFailed?: boolean;
  hooks?: BackendHooks;
}

/**
 * Per-request options: what the issuer asks of the backend. A device model
 * (the engine's typed API plays one) asks for both; qemu-io's aio commands
 * only account; the block layer's own I/O asks for neither.
 */
export interface RequestOptions {
  /** Count the request in the statistics. */
  account?: boolean;
  /** Apply rerror/werror (and iostatus, BLOCK_IO_ERROR) to a failure; without it a failure is reported as is. */
  errorPolicy?: boolean;
}

export class BlockBackend {
  readonly name: string;
  /** The medium (root node); null once ejected / removed. */
  private medium: BlockNode | null;
  rerror: ErrorAction;
  werror: ErrorAction;
  readonly stats: BlockAcctStats;
  /** Set when a request failed and the policy did not ignore it; back to ok on `resume` / reset. */
  iostatus: IoStatus = 'ok';
  /** Whether iostatus is tracked (QEMU enables it for devices that use an error policy). */
  iostatusEnabled = false;
  /** Member of a throttle group when I/O limits are set on this backend. */
  throttle: ThrottleGroupMember | null = null;
  hooks: BackendHooks;
  /** Reads copy backing-chain data into the root (-drive copy-on-read=on). */
  copyOnRead: boolean;
  /**
   * QEMU's enable_write_cache: when false (cache=writethrough, directsync)
   * every write is stable when it completes, a flush of the root following it,
   * as QEMU emulates FUA for drivers that lack it.
   */
  writeCacheEnabled = true;
  private stopped = false;
  private waiters: (() => void)[] = [];

  constructor(root: BlockNode, options: BackendOptions = {}) {
    this.medium = root;
    this.name = options.name ?? '';
    this.rerror = options.rerror ?? 'report';
    this.werror = options.werror ?? 'enospc';
    this.hooks = options.hooks ?? {};
    this.copyOnRead = options.copyOnRead === true;
    this.stats = new BlockAcctStats(options.clock, { accountInvalid: options.accountInvalid, accountFailed: options.accountFailed });
    if (options.detectZeroes) root.detectZeroes = options.detectZeroes;
  }

  /** The root node. A backend without a medium has none: requests fail with ENOMEDIUM (QEMU's "No medium found"). */
  get root(): BlockNode {
    if (!this.medium) throw new BlockError('ENOMEDIUM', `${this.name || 'device'}: No medium found`);
    return this.medium;
  }

  set root(bs: BlockNode) {
    this.medium = bs;
  }

  get hasMedium(): boolean {
    return this.medium !== null;
  }

  /** Takes the medium out (eject, blockdev-remove-medium); returns it for the caller to close. */
  removeMedium(): BlockNode | null {
    const m = this.medium;
    this.medium = null;
    return m;
  }

  get readOnly(): boolean {
    return this.root.readOnly;
  }

  /** Whether the backend is stopped (its requests wait for `resume`). */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Stops the backend: new requests wait (QEMU's VM stop). */
  pause(): void {
    this.stopped = true;
  }

  /** Resumes a stopped backend: iostatus back to ok, waiting requests go (QMP `cont`). */
  resume(): void {
    this.stopped = false;
    this.iostatus = 'ok';
    for (const w of this.waiters.splice(0)) w();
  }

  /** Length of the device in bytes. */
  async getLength(): Promise<number> {
    return bdrvGetLength(this.root);
  }

  private checkBounds(offset: number, bytes: number, what: string, type: AcctType, account: boolean): void {
    let problem: BlockError | undefined;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
      problem = new BlockError('EINVAL', `${this.label()}: invalid ${what} request (offset ${offset}, ${bytes} bytes)`);
    } else if (offset + bytes > this.root.totalBytes) {
      problem = new BlockError(
        'EIO',
        `${this.label()}: ${what} at ${hex(offset)} (+${bytes} bytes) is past the end of the device (${this.root.totalBytes} bytes)`,
      );
    }
    if (!problem) return;
    if (account) this.stats.invalid(type);
    throw problem;
  }

  private label(): string {
    return this.name || this.root.filename;
  }

  /** QEMU's blk_get_error_action. */
  errorAction(write: boolean, e: unknown): ErrorOutcome {
    const policy = write ? this.werror : this.rerror;
    const code = e instanceof BlockError ? e.code : 'EIO';
    switch (policy) {
      case 'enospc':
        return code === 'ENOSPC' ? 'stop' : 'report';
      case 'stop':
        return 'stop';
      case 'ignore':
        return 'ignore';
      default:
        return 'report';
    }
  }

  /**
   * One request through throttling, the stopped state, accounting and the
   * error policy. `op` does the I/O; on `stop` it is retried after resume.
   */
  private async request(type: AcctType, bytes: number, opts: RequestOptions, policy: 'read' | 'write' | null, op: () => Promise<void>): Promise<void> {
    if (this.stopped) await new Promise<void>((r) => this.waiters.push(r));
    // The issuer's clock starts before throttling, as a device's block_acct_start comes before the request: waits count as latency.
    // A number, not a cookie object: nothing is allocated per request for the statistics.
    const account = opts.account === true;
    const startNs = account ? this.stats.clock.nowNs() : 0;
    const throttle = this.throttle;
    if (throttle !== null && type !== 'flush') {
      // One clock read serves both when they share the clock. The small `admit` answers an idle group's request
      // (it inlines here); only a request that must wait makes a promise.
      const group = throttle.group;
      const isWrite = type !== 'read';
      if (!group.admit(throttle, bytes, isWrite, account && group.clock === this.stats.clock ? startNs : group.clock.nowNs())) {
        await group.enqueue(throttle, bytes, isWrite);
      }
    }
    for (;;) {
      try {
        await op();
        if (account) this.stats.finish(type, bytes, startNs, false);
        return;
      } catch (e) {
        if (policy === null || !opts.errorPolicy) {
          if (account) this.stats.finish(type, bytes, startNs, true);
          throw e;
        }
        const action = this.errorAction(policy === 'write', e);
        if (action !== 'ignore') {
          const code = e instanceof BlockError ? e.code : 'EIO';
          if (this.iostatusEnabled && this.iostatus === 'ok') this.iostatus = code === 'ENOSPC' ? 'nospace' : 'failed';
        }
        this.hooks.ioError?.({ backend: this, operation: policy, action, error: e });
        if (action === 'ignore') {
          if (account) this.stats.finish(type, bytes, startNs, false);
          return;
        }
        if (action === 'report') {
          if (account) this.stats.finish(type, bytes, startNs, true);
          throw e;
        }
        // stop: wait for resume, then retry the request.
        this.pause();
        this.hooks.stop?.(this);
        if (this.stopped) await new Promise<void>((r) => this.waiters.push(r));
      }
    }
  }

  async read(offset: number, bytes: number, buf: Uint8Array, opts: RequestOptions = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'read', 'read', opts.account === true);
    await this.request('read', bytes, opts, 'read', () =>
      this.copyOnRead ? copyOnReadPread(this.root, null, offset, bytes, buf) : bdrvPread(this.root, offset, bytes, buf),
    );
  }

  async write(offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags = {}, opts: RequestOptions = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'write', 'write', opts.account === true);
    await this.request('write', bytes, opts, 'write', () => this.stable(bdrvPwrite(this.root, offset, bytes, buf, flags)));
  }

  async writeZeroes(offset: number, bytes: number, flags: WriteFlags = {}, opts: RequestOptions = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'write-zeroes', 'write', opts.account === true);
    await this.request('write', bytes, opts, 'write', () => this.stable(bdrvPwriteZeroes(this.root, offset, bytes, flags)));
  }

  /** A write's completion, followed by a flush when the write cache is off (no extra promise when it is on). */
  private stable(write: Promise<void>): Promise<void> {
    return this.writeCacheEnabled ? write : write.then(() => bdrvFlush(this.root));
  }

  async discard(offset: number, bytes: number, opts: RequestOptions = {}): Promise<void> {
    this.checkBounds(offset, bytes, 'discard', 'unmap', opts.account === true);
    await this.request('unmap', bytes, opts, null, () => bdrvPdiscard(this.root, offset, bytes));
  }

  async flush(opts: RequestOptions = {}): Promise<void> {
    await this.request('flush', 0, opts, null, () => bdrvFlush(this.root));
  }

  async truncate(size: number, exact = false, prealloc: PreallocMode = 'off'): Promise<void> {
    await bdrvTruncate(this.root, size, exact, prealloc);
  }
}
