/**
 * I/O throttling by leaky buckets (QEMU's util/throttle.c concepts).
 *
 * Six buckets: bytes and operations, each for total / read / write. Every
 * request pours its size (bytes buckets) and its operation count (ops
 * buckets; with `iops_size`, a large request counts as size / iops_size
 * operations) into the buckets of its direction and into the total ones.
 * Buckets leak at `avg` units per second. A request must wait while a bucket
 * holds more than it may: a tenth of a second of `avg` without a burst rate,
 * else `max` × `burst_length` seconds — and while the burst bucket, which
 * leaks at `max`, holds more than a tenth of a second of `max`. The wait is
 * the time the bucket needs to leak back to that size.
 *
 * The configuration is QAPI's ThrottleLimits (names as in object-add's
 * `limits`) and is checked as QEMU does, with its messages.
 */
import { BlockError } from './errors.js';
import type { Clock } from './clock.js';

export const BUCKETS = ['bps-total', 'bps-read', 'bps-write', 'iops-total', 'iops-read', 'iops-write'] as const;
export type BucketName = (typeof BUCKETS)[number];

/** QEMU's THROTTLE_VALUE_MAX. */
export const THROTTLE_VALUE_MAX = 1_000_000_000_000_000;

export interface LeakyBucket {
  /** Average rate (units per second); 0 = no limit. */
  avg: number;
  /** Burst rate; 0 = no burst. */
  max: number;
  /** How long (seconds) the burst rate may be held. */
  burstLength: number;
}

export interface ThrottleConfig {
  buckets: Record<BucketName, LeakyBucket>;
  /** Operation size: larger requests count as several operations (0 = off). */
  opSize: number;
}

/** QAPI ThrottleLimits: `bps-total`, `bps-total-max`, `bps-total-max-length`, …, `iops-size`. */
export type ThrottleLimits = Partial<Record<string, number>>;

export function emptyConfig(): ThrottleConfig {
  const b = {} as Record<BucketName, LeakyBucket>;
  for (const n of BUCKETS) b[n] = { avg: 0, max: 0, burstLength: 1 };
  return { buckets: b, opSize: 0 };
}

/** Applies the members present in `limits` on top of `base` (object-add / qom-set semantics). */
export function configFromLimits(limits: ThrottleLimits, base: ThrottleConfig = emptyConfig()): ThrottleConfig {
  const cfg = cloneConfig(base);
  for (const n of BUCKETS) {
    const b = cfg.buckets[n];
    if (limits[n] !== undefined) b.avg = limits[n]!;
    if (limits[`${n}-max`] !== undefined) b.max = limits[`${n}-max`]!;
    if (limits[`${n}-max-length`] !== undefined) b.burstLength = limits[`${n}-max-length`]!;
  }
  if (limits['iops-size'] !== undefined) cfg.opSize = limits['iops-size']!;
  return cfg;
}

/** Every member of ThrottleLimits (what qom-get of `limits` answers). */
export function limitsFromConfig(cfg: ThrottleConfig): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of BUCKETS) {
    const b = cfg.buckets[n];
    out[n] = b.avg;
    out[`${n}-max`] = b.max;
    out[`${n}-max-length`] = b.burstLength;
  }
  out['iops-size'] = cfg.opSize;
  return out;
}

export function cloneConfig(cfg: ThrottleConfig): ThrottleConfig {
  const b = {} as Record<BucketName, LeakyBucket>;
  for (const n of BUCKETS) b[n] = { ...cfg.buckets[n] };
  return { buckets: b, opSize: cfg.opSize };
}

/** Whether any limit is set (QEMU's throttle_enabled). */
export function throttleEnabled(cfg: ThrottleConfig): boolean {
  return BUCKETS.some((n) => cfg.buckets[n].avg > 0);
}

/** QEMU's throttle_is_valid, with its messages (GenericError when a QMP command passes them on). */
export function checkConfig(cfg: ThrottleConfig): void {
  const b = cfg.buckets;
  const conflict = (kind: 'bps' | 'iops', m: 'avg' | 'max') => b[`${kind}-total`][m] > 0 && (b[`${kind}-read`][m] > 0 || b[`${kind}-write`][m] > 0);
  if (conflict('bps', 'avg') || conflict('iops', 'avg') || conflict('bps', 'max') || conflict('iops', 'max')) {
    throw new BlockError('EINVAL', 'bps/iops/max total values and read/write values cannot be used at the same time');
  }
  if (cfg.opSize !== 0 && !b['iops-total'].avg && !b['iops-read'].avg && !b['iops-write'].avg) {
    throw new BlockError('EINVAL', 'iops size requires an iops value to be set');
  }
  for (const n of BUCKETS) {
    const k = b[n];
    const valid = (v: number) => Number.isFinite(v) && v >= 0 && v <= THROTTLE_VALUE_MAX;
    if (!valid(k.avg) || !valid(k.max)) throw new BlockError('EINVAL', `bps/iops/max values must be within [0, ${THROTTLE_VALUE_MAX}]`);
    if (k.burstLength === 0) throw new BlockError('EINVAL', 'the burst length cannot be 0');
    if (k.burstLength > 1 && !k.max) throw new BlockError('EINVAL', 'burst length set without burst rate');
    if (k.max && !k.avg) throw new BlockError('EINVAL', 'bps_max/iops_max require corresponding bps/iops values');
    if (k.max && k.max < k.avg) throw new BlockError('EINVAL', 'bps_max/iops_max cannot be lower than bps/iops');
  }
}

/**
 * The throttling state one group shares: its configuration and the time
 * buckets last leaked. The live numbers (limits and levels per bucket, by
 * index in BUCKETS) sit in Float64Arrays: every request leaks, checks and
 * pours, and doubles in plain object fields cost a boxed number per write.
 */
export class ThrottleState {
  cfg: ThrottleConfig = emptyConfig();
  /** Whether any limit is set (kept with the configuration: the request path asks every time). */
  enabled = false;
  private readonly avg = new Float64Array(BUCKETS.length);
  private readonly max = new Float64Array(BUCKETS.length);
  private readonly burstLength = new Float64Array(BUCKETS.length);
  private readonly level = new Float64Array(BUCKETS.length);
  private readonly burstLevel = new Float64Array(BUCKETS.length);
  /** Indexes of the buckets with a limit, per direction (total ones included): the only ones leak and wait look at. */
  private active: [number[], number[]] = [[], []];
  /** Per direction, the active buckets that count bytes and those that count operations. */
  private activeBytes: [number[], number[]] = [[], []];
  private activeOps: [number[], number[]] = [[], []];
  private activeAll: number[] = [];
  /** Per bucket, what it may hold before a request waits (bucketWait's `size` / `burstSize`), and whether it has a burst bucket. */
  private readonly size = new Float64Array(BUCKETS.length);
  private readonly burstSize = new Float64Array(BUCKETS.length);
  private readonly hasBurst = new Uint8Array(BUCKETS.length);
  /** Per direction, for each active bucket in `active` order: 1 when it counts bytes, 0 when it counts operations. */
  private activeIsBytes: [Uint8Array, Uint8Array] = [new Uint8Array(0), new Uint8Array(0)];
  private previousLeak: number;
  /**
   * The idle fast path ("the limits cannot bite"). From `drainedAt` on, every
   * bucket has leaked empty for sure, so a request goes at once and leaves
   * only its own pour behind. That state is kept in three numbers instead of
   * the level arrays: when `lazyDir` is 0 or 1, the levels are those of one
   * request poured at `previousLeak` in that direction (`lazyBytes` into the
   * bytes buckets, `lazyUnits` into the ops buckets), every other level 0.
   * `materialize` writes them out before anything reads the arrays.
   * `drainedAt` is Infinity while the levels may hold more than that.
   */
  private drainedAt = -Infinity;
  private lazyDir = -1;
  private lazyBytes = 0;
  private lazyUnits = 0;
  /** Per direction, the largest ns per unit among the active bytes buckets and among the ops buckets (1e9 / avg). */
  private readonly nsPerByte = new Float64Array(2);
  private readonly nsPerOp = new Float64Array(2);
  /** Requests that went by the idle fast path (tests check it is taken). */
  drainedPours = 0;
  /** cfg.opSize, at hand for the request path (unitsOf). */
  private opSize = 0;

  constructor(readonly clock: Clock) {
    this.previousLeak = clock.nowNs();
  }

  /** Replaces the configuration; bucket levels restart from empty, as a new config does in QEMU. */
  configure(cfg: ThrottleConfig): void {
    this.leak();
    this.cfg = cloneConfig(cfg);
    BUCKETS.forEach((n, i) => {
      const b = this.cfg.buckets[n];
      this.avg[i] = b.avg;
      this.max[i] = b.max;
      this.burstLength[i] = b.burstLength;
      this.level[i] = 0;
      this.burstLevel[i] = 0;
      this.size[i] = b.max ? b.max * b.burstLength : b.avg / 10;
      this.burstSize[i] = b.max ? b.max / 10 : 0;
      this.hasBurst[i] = b.burstLength > 1 && b.max ? 1 : 0;
    });
    this.enabled = throttleEnabled(this.cfg);
    const pick = (names: BucketName[]) => names.map((n) => BUCKETS.indexOf(n)).filter((i) => this.avg[i]! > 0);
    this.active = [pick(['bps-total', 'iops-total', 'bps-read', 'iops-read']), pick(['bps-total', 'iops-total', 'bps-write', 'iops-write'])];
    this.activeAll = pick([...BUCKETS]);
    this.activeBytes = [pick(['bps-total', 'bps-read']), pick(['bps-total', 'bps-write'])];
    this.activeOps = [pick(['iops-total', 'iops-read']), pick(['iops-total', 'iops-write'])];
    const isBytes = (idx: number[]) => Uint8Array.from(idx, (i) => (BUCKETS[i]!.startsWith('bps') ? 1 : 0));
    this.activeIsBytes = [isBytes(this.active[0]), isBytes(this.active[1])];
    // The slowest leak among the buckets (burst buckets included) that a pour in the direction fills.
    const slowest = (idx: number[]) => idx.reduce((ns, i) => Math.max(ns, 1e9 / this.avg[i]!, this.hasBurst[i] ? 1e9 / this.max[i]! : 0), 0);
    for (const d of [0, 1]) {
      this.nsPerByte[d] = slowest(this.activeBytes[d]!);
      this.nsPerOp[d] = slowest(this.activeOps[d]!);
    }
    this.opSize = this.cfg.opSize;
    // Every level was just set to 0.
    this.lazyDir = -1;
    this.drainedAt = -Infinity;
  }

  /** What a request of `bytes` counts in the ops buckets: one, or its size in iops-size units when larger. */
  private unitsOf(bytes: number): number {
    const opSize = this.opSize;
    return opSize !== 0 && bytes > opSize ? bytes / opSize : 1;
  }

  /** Writes the idle fast path's levels into the arrays; from here the arrays are the truth until the next drained pour. */
  private materialize(): void {
    this.drainedAt = Infinity;
    const d = this.lazyDir;
    if (d < 0) return;
    this.lazyDir = -1;
    const all = this.activeAll;
    for (let k = 0; k < all.length; k++) {
      this.level[all[k]!] = 0;
      this.burstLevel[all[k]!] = 0;
    }
    const active = this.active[d]!;
    const isBytes = this.activeIsBytes[d]!;
    for (let k = 0; k < active.length; k++) {
      const i = active[k]!;
      const u = isBytes[k] ? this.lazyBytes : this.lazyUnits;
      this.level[i] = u;
      if (this.hasBurst[i]) this.burstLevel[i] = u;
    }
  }

  /**
   * Pours one request into empty buckets at `now`: kept as the lazy state,
   * with the time from which its pour has leaked away. The margin (a
   * millionth of a millionth, plus 1 ns) covers the rounding of the leak's
   * own arithmetic, so from `drainedAt` on the step-by-step leak gives 0 too.
   */
  private pourDrained(d: number, bytes: number, now: number): void {
    const units = this.unitsOf(bytes);
    this.previousLeak = now;
    this.lazyDir = d;
    this.lazyBytes = bytes;
    this.lazyUnits = units;
    const byBytes = bytes * this.nsPerByte[d]!;
    const byOps = units * this.nsPerOp[d]!;
    this.drainedAt = now + (byBytes > byOps ? byBytes : byOps) * (1 + 1e-9) + 1;
    this.drainedPours++;
  }

  /** Empties every bucket by what leaked since the last call (`now` when the caller has just read the clock). */
  private leak(now = this.clock.nowNs()): void {
    this.materialize();
    const delta = Math.max(0, now - this.previousLeak);
    this.previousLeak = now;
    if (delta === 0) return;
    const all = this.activeAll;
    for (let k = 0; k < all.length; k++) {
      const i = all[k]!;
      this.level[i] = Math.max(this.level[i]! - (this.avg[i]! * delta) / 1e9, 0);
      if (this.burstLength[i]! > 1 && this.max[i]) this.burstLevel[i] = Math.max(this.burstLevel[i]! - (this.max[i]! * delta) / 1e9, 0);
    }
  }

  private bucketWait(i: number): number {
    const avg = this.avg[i]!;
    if (!avg) return 0;
    const max = this.max[i]!;
    const burstLength = this.burstLength[i]!;
    let size: number;
    let burstSize: number;
    if (!max) {
      size = avg / 10;
      burstSize = 0;
    } else {
      size = max * burstLength;
      burstSize = max / 10;
    }
    const extra = this.level[i]! - size;
    if (extra > 0) return Math.ceil((extra / avg) * 1e9);
    if (burstLength > 1) {
      const burstExtra = this.burstLevel[i]! - burstSize;
      if (burstExtra > 0) return Math.ceil((burstExtra / max) * 1e9);
    }
    return 0;
  }

  /** Nanoseconds a request in this direction must wait before it may go (0 = now). */
  computeWait(isWrite: boolean, now?: number): number {
    this.leak(now);
    let wait = 0;
    const active = this.active[isWrite ? 1 : 0];
    for (let k = 0; k < active.length; k++) {
      const w = this.bucketWait(active[k]!);
      if (w > wait) wait = w;
    }
    return wait;
  }

  /**
   * The request path's question, in one pass and without allocating: leaks to
   * `now`, and when no bucket of the direction makes the request wait, pours
   * it and answers true; else changes nothing more and answers false. The
   * same arithmetic as `computeWait(isWrite, now) === 0` then `account`
   * (test/unit/throttle.test.ts compares the two on random sequences).
   */
  pourIfFree(isWrite: boolean, bytes: number, now: number): boolean {
    // Idle: every bucket is empty by now, so nothing can make the request wait. Kept small: it inlines into the caller.
    if (now >= this.drainedAt) {
      this.pourDrained(isWrite ? 1 : 0, bytes, now);
      return true;
    }
    return this.pourChecked(isWrite, bytes, now);
  }

  /** pourIfFree when the buckets may hold something: leak, check and pour, step by step. */
  private pourChecked(isWrite: boolean, bytes: number, now: number): boolean {
    const d = isWrite ? 1 : 0;
    this.materialize();
    const delta = now - this.previousLeak;
    this.previousLeak = now;
    if (delta > 0) {
      let empty = true;
      const all = this.activeAll;
      for (let k = 0; k < all.length; k++) {
        const i = all[k]!;
        const l = this.level[i]! - (this.avg[i]! * delta) / 1e9;
        if (l > 0) {
          this.level[i] = l;
          empty = false;
        } else this.level[i] = 0;
        if (this.hasBurst[i]) {
          const bl = this.burstLevel[i]! - (this.max[i]! * delta) / 1e9;
          if (bl > 0) {
            this.burstLevel[i] = bl;
            empty = false;
          } else this.burstLevel[i] = 0;
        }
      }
      // Everything leaked away: the same request on empty buckets, and back on the fast path.
      if (empty) {
        this.pourDrained(d, bytes, now);
        return true;
      }
    }
    const active = this.active[d];
    for (let k = 0; k < active.length; k++) {
      const i = active[k]!;
      const extra = this.level[i]! - this.size[i]!;
      if (extra > 0 && Math.ceil((extra / this.avg[i]!) * 1e9) > 0) return false;
      if (this.hasBurst[i]) {
        const burstExtra = this.burstLevel[i]! - this.burstSize[i]!;
        if (burstExtra > 0 && Math.ceil((burstExtra / this.max[i]!) * 1e9) > 0) return false;
      }
    }
    const units = this.unitsOf(bytes);
    const isBytes = this.activeIsBytes[d];
    for (let k = 0; k < active.length; k++) {
      const i = active[k]!;
      const u = isBytes[k] ? bytes : units;
      this.level[i]! += u;
      if (this.hasBurst[i]) this.burstLevel[i]! += u;
    }
    return true;
  }

  /** Pours a request that goes now into the buckets. */
  account(isWrite: boolean, bytes: number): void {
    this.materialize();
    const d = isWrite ? 1 : 0;
    const units = this.unitsOf(bytes);
    const byBytes = this.activeBytes[d];
    for (let k = 0; k < byBytes.length; k++) {
      const i = byBytes[k]!;
      this.level[i]! += bytes;
      if (this.burstLength[i]! > 1) this.burstLevel[i]! += bytes;
    }
    const byOps = this.activeOps[d];
    for (let k = 0; k < byOps.length; k++) {
      const i = byOps[k]!;
      this.level[i]! += units;
      if (this.burstLength[i]! > 1) this.burstLevel[i]! += units;
    }
  }
}
