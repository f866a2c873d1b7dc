/**
 * I/O statistics of a BlockBackend (QEMU's block/accounting.c concepts):
 * per request type the bytes, operations, failed and invalid operations,
 * merged requests and total latency; the time of the last access (for
 * idle_time_ns); and timed statistics over fixed intervals (min/max/avg
 * latency and the average queue depth) for each interval the user asked for
 * (`stats-intervals`). As in QEMU, accounting is the device's business: a
 * request is accounted when its issuer starts a cookie with `start` and ends
 * it with `done` / `failed`; block-layer internals (jobs, qemu-io's plain
 * read/write) are not counted.
 */
import { realClock, type Clock } from './clock.js';

export type AcctType = 'read' | 'write' | 'flush' | 'unmap';
export const ACCT_TYPES: readonly AcctType[] = ['read', 'write', 'flush', 'unmap'];

/** One accounted request in flight (QEMU's BlockAcctCookie). */
export interface AcctCookie {
  bytes: number;
  startNs: number;
  type: AcctType;
}

/** Min/max/avg of latencies over a window, restarted when the window expires (QEMU's TimedAverage, one window). */
class TimedAverage {
  private start: number;
  private count = 0;
  private sum = 0;
  private min = Infinity;
  private max = 0;

  constructor(
    private readonly periodNs: number,
    private readonly clock: Clock,
  ) {
    this.start = clock.nowNs();
  }

  /** `now`: this clock's time, when the caller has just read it (a request's end serves its windows too). */
  private roll(now = this.clock.nowNs()): void {
    if (now - this.start < this.periodNs) return;
    // Windows are aligned on the period, as QEMU's expiration times are.
    this.start += Math.floor((now - this.start) / this.periodNs) * this.periodNs;
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = 0;
  }

  account(v: number, now: number): void {
    this.roll(now);
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** min, max, avg (0 when nothing was accounted), the latency sum and the window's elapsed time. */
  read(): { min: number; max: number; avg: number; sum: number; elapsed: number } {
    this.roll();
    const elapsed = this.clock.nowNs() - this.start;
    if (this.count === 0) return { min: 0, max: 0, avg: 0, sum: 0, elapsed };
    return { min: this.min, max: this.max, avg: Math.round(this.sum / this.count), sum: this.sum, elapsed };
  }
}

/** One `stats-intervals` entry: an interval length in seconds and its averages per type. */
class TimedStats {
  readonly latency: Record<'read' | 'write' | 'flush', TimedAverage>;
  constructor(
    readonly intervalLength: number,
    clock: Clock,
  ) {
    const ns = intervalLength * 1e9;
    this.latency = { read: new TimedAverage(ns, clock), write: new TimedAverage(ns, clock), flush: new TimedAverage(ns, clock) };
  }
}

/** QAPI BlockDeviceTimedStats. */
export interface BlockDeviceTimedStats {
  interval_length: number;
  min_rd_latency_ns: number;
  max_rd_latency_ns: number;
  avg_rd_latency_ns: number;
  min_wr_latency_ns: number;
  max_wr_latency_ns: number;
  avg_wr_latency_ns: number;
  min_flush_latency_ns: number;
  max_flush_latency_ns: number;
  avg_flush_latency_ns: number;
  avg_rd_queue_depth: number;
  avg_wr_queue_depth: number;
}

function zeros(): Record<AcctType, number> {
  return { read: 0, write: 0, flush: 0, unmap: 0 };
}

export class BlockAcctStats {
  readonly bytes = zeros();
  readonly ops = zeros();
  readonly failedOps = zeros();
  readonly invalidOps = zeros();
  readonly mergedOps = zeros();
  readonly totalTimeNs = zeros();
  /** Clock time of the last accounted access; 0 before any. */
  lastAccessTimeNs = 0;
  /** QEMU's stats-account-invalid / stats-account-failed: whether those count as accesses (and failed latencies). */
  accountInvalid: boolean;
  accountFailed: boolean;
  readonly intervals: TimedStats[] = [];

  constructor(
    readonly clock: Clock = realClock,
    opts: { accountInvalid?: boolean; accountFailed?: boolean } = {},
  ) {
    this.accountInvalid = opts.accountInvalid ?? true;
    this.accountFailed = opts.accountFailed ?? true;
  }

  /** Adds an interval (seconds) to the timed statistics. */
  addInterval(seconds: number): void {
    this.intervals.push(new TimedStats(seconds, this.clock));
  }

  start(bytes: number, type: AcctType): AcctCookie {
    return { bytes, type, startNs: this.clock.nowNs() };
  }

  /**
   * Accounts one request that started at `startNs` (this clock) and ends now:
   * the request path calls it with the start time it read itself, so no
   * cookie is allocated per request.
   */
  finish(type: AcctType, bytes: number, startNs: number, failed: boolean): void {
    const t = this.clock.nowNs();
    const latency = t > startNs ? t - startNs : 0;
    if (failed) this.failedOps[type]++;
    else {
      this.bytes[type] += bytes;
      this.ops[type]++;
    }
    if (!failed || this.accountFailed) {
      this.totalTimeNs[type] += latency;
      this.lastAccessTimeNs = t;
      if (type !== 'unmap' && this.intervals.length > 0) for (const i of this.intervals) i.latency[type].account(latency, t);
    }
  }

  done(c: AcctCookie): void {
    this.finish(c.type, c.bytes, c.startNs, false);
  }

  /** A request refused before it reached the block layer (out of bounds, bad arguments). */
  invalid(type: AcctType): void {
    this.invalidOps[type]++;
    if (this.accountInvalid) this.lastAccessTimeNs = this.clock.nowNs();
  }

  merged(type: AcctType, n: number): void {
    this.mergedOps[type] += n;
  }

  /** Nanoseconds since the last access, or undefined before any (QEMU then leaves idle_time_ns out). */
  idleTimeNs(): number | undefined {
    return this.lastAccessTimeNs === 0 ? undefined : this.clock.nowNs() - this.lastAccessTimeNs;
  }

  timedStats(): BlockDeviceTimedStats[] {
    return this.intervals.map((i) => {
      const rd = i.latency.read.read();
      const wr = i.latency.write.read();
      const fl = i.latency.flush.read();
      return {
        interval_length: i.intervalLength,
        min_rd_latency_ns: rd.min,
        max_rd_latency_ns: rd.max,
        avg_rd_latency_ns: rd.avg,
        min_wr_latency_ns: wr.min,
        max_wr_latency_ns: wr.max,
        avg_wr_latency_ns: wr.avg,
        min_flush_latency_ns: fl.min,
        max_flush_latency_ns: fl.max,
        avg_flush_latency_ns: fl.avg,
        // The time requests spent in flight over the window's elapsed time (QEMU's queue-depth average).
        avg_rd_queue_depth: rd.elapsed > 0 ? rd.sum / rd.elapsed : 0,
        avg_wr_queue_depth: wr.elapsed > 0 ? wr.sum / wr.elapsed : 0,
      };
    });
  }
}
