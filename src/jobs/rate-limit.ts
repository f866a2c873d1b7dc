/**
 * A job's speed limit in bytes per second, as QEMU's ratelimit.h measures it:
 * time is cut into slices (100 ms for block jobs); each slice has a quota of
 * speed × slice length. A job reports the bytes it moved; once the bytes of
 * the current slice reach the quota, the slice is stretched to as many
 * slices as the bytes fill and the job sleeps until it ends. The first chunk
 * of a slice always goes through (QEMU copies one chunk before the first
 * sleep, whatever the speed).
 *
 * The clock is injectable so tests check the arithmetic without waiting.
 */

/** QEMU's BLOCK_JOB_SLICE_TIME: 100 ms, in nanoseconds. */
export const JOB_SLICE_NS = 100_000_000;

const hrNowNs = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now()) * 1e6;

export class RateLimit {
  /** Bytes per second; 0 means no limit. */
  private speedBps = 0;
  private sliceQuota = 0;
  private sliceStart = 0;
  private sliceEnd = 0;
  private dispatched = 0;

  constructor(
    private readonly sliceNs = JOB_SLICE_NS,
    private readonly nowNs: () => number = hrNowNs,
  ) {}

  get speed(): number {
    return this.speedBps;
  }

  /** Sets the speed (bytes/s, 0 = unlimited); the current slice's accounting carries over. */
  setSpeed(bytesPerSecond: number): void {
    this.speedBps = bytesPerSecond;
    this.sliceQuota = bytesPerSecond > 0 ? Math.max((bytesPerSecond * this.sliceNs) / 1e9, 1) : 0;
  }

  /**
   * Accounts `bytes` just moved (0 to only ask) and returns how long (ns) the
   * job should wait before moving more.
   */
  delay(bytes: number): number {
    if (this.sliceQuota === 0) return 0;
    const now = this.nowNs();
    if (this.sliceEnd < now) {
      // The previous (possibly stretched) slice is over: start a fresh one.
      this.sliceStart = now;
      this.sliceEnd = now + this.sliceNs;
      this.dispatched = 0;
    }
    this.dispatched += bytes;
    if (this.dispatched < this.sliceQuota) return 0;
    this.sliceEnd = this.sliceStart + Math.floor((this.dispatched / this.sliceQuota) * this.sliceNs);
    return this.sliceEnd - now;
  }
}
