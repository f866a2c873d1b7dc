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
  level: number;
  burstLevel: number;
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
  for (const n of BUCKETS) b[n] = { avg: 0, max: 0, burstLength: 1, level: 0, burstLevel: 0 };
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

/** The throttling state one group shares: its configuration and the time buckets last leaked. */
export class ThrottleState {
  cfg: ThrottleConfig = emptyConfig();
  /** Whether any limit is set (kept with the configuration: the request path asks every time). */
  enabled = false;
  /** The buckets with a limit, per direction (total ones included): the only ones leak and wait look at. */
  private active: [LeakyBucket[], LeakyBucket[]] = [[], []];
  /** Per direction, the active buckets that count bytes and those that count operations. */
  private activeBytes: [LeakyBucket[], LeakyBucket[]] = [[], []];
  private activeOps: [LeakyBucket[], LeakyBucket[]] = [[], []];
  private activeAll: LeakyBucket[] = [];
  private previousLeak: number;

  constructor(readonly clock: Clock) {
    this.previousLeak = clock.nowNs();
  }

  /** Replaces the configuration; bucket levels restart from empty, as a new config does in QEMU. */
  configure(cfg: ThrottleConfig): void {
    this.leak();
    this.cfg = cloneConfig(cfg);
    for (const n of BUCKETS) {
      this.cfg.buckets[n].level = 0;
      this.cfg.buckets[n].burstLevel = 0;
    }
    this.enabled = throttleEnabled(this.cfg);
    const b = this.cfg.buckets;
    const pick = (names: BucketName[]) => names.map((n) => b[n]).filter((k) => k.avg > 0);
    this.active = [pick(['bps-total', 'iops-total', 'bps-read', 'iops-read']), pick(['bps-total', 'iops-total', 'bps-write', 'iops-write'])];
    this.activeAll = BUCKETS.map((n) => b[n]).filter((k) => k.avg > 0);
    this.activeBytes = [pick(['bps-total', 'bps-read']), pick(['bps-total', 'bps-write'])];
    this.activeOps = [pick(['iops-total', 'iops-read']), pick(['iops-total', 'iops-write'])];
  }

  /** Empties every bucket by what leaked since the last call (`now` when the caller has just read the clock). */
  private leak(now = this.clock.nowNs()): void {
    const delta = Math.max(0, now - this.previousLeak);
    this.previousLeak = now;
    if (delta === 0) return;
    for (const b of this.activeAll) {
      b.level = Math.max(b.level - (b.avg * delta) / 1e9, 0);
      if (b.burstLength > 1 && b.max) b.burstLevel = Math.max(b.burstLevel - (b.max * delta) / 1e9, 0);
    }
  }

  private static bucketWait(b: LeakyBucket): number {
    if (!b.avg) return 0;
    let size: number;
    let burstSize: number;
    if (!b.max) {
      size = b.avg / 10;
      burstSize = 0;
    } else {
      size = b.max * b.burstLength;
      burstSize = b.max / 10;
    }
    const extra = b.level - size;
    if (extra > 0) return Math.ceil((extra / b.avg) * 1e9);
    if (b.burstLength > 1) {
      const burstExtra = b.burstLevel - burstSize;
      if (burstExtra > 0) return Math.ceil((burstExtra / b.max) * 1e9);
    }
    return 0;
  }

  /** Nanoseconds a request in this direction must wait before it may go (0 = now). */
  computeWait(isWrite: boolean, now?: number): number {
    this.leak(now);
    let wait = 0;
    for (const b of this.active[isWrite ? 1 : 0]) {
      const w = ThrottleState.bucketWait(b);
      if (w > wait) wait = w;
    }
    return wait;
  }

  /** Pours a request that goes now into the buckets. */
  account(isWrite: boolean, bytes: number): void {
    const d = isWrite ? 1 : 0;
    const units = this.cfg.opSize && bytes > this.cfg.opSize ? bytes / this.cfg.opSize : 1;
    for (const b of this.activeBytes[d]) {
      b.level += bytes;
      if (b.burstLength > 1) b.burstLevel += bytes;
    }
    for (const b of this.activeOps[d]) {
      b.level += units;
      if (b.burstLength > 1) b.burstLevel += units;
    }
  }
}
