/**
 * The clock the block layer measures and waits by (QEMU's QEMU_CLOCK_REALTIME
 * / QEMU_CLOCK_VIRTUAL for accounting and throttling). Statistics read
 * `nowNs`, throttling sleeps with `sleepNs`. Tests give a VirtualClock, whose
 * time moves only when told to, so they assert by counting, never by wall time.
 */
export interface Clock {
  /** Monotonic time in nanoseconds. */
  nowNs(): number;
  /** Resolves once `ns` nanoseconds have passed on this clock. */
  sleepNs(ns: number): Promise<void>;
}

// Bound once: the request path reads the clock twice per accounted request, and the lookup showed in profiles.
// Why not a cheaper, coarser clock (one reading per event-loop turn or microtask batch, shared by the requests
// that start or complete in it): requests on memory or synchronous storage run whole chains of requests without
// yielding to the event loop, so a per-turn reading would give all of them zero latency, an error as large as the
// chain is long — total_time_ns and timed stats would be wrong, not coarse. A per-microtask reading shares nothing
// for an issuer that waits for each request (its next start comes after the invalidating microtask), and the
// queueMicrotask costs more than the reading it saves (~90 ns against ~50 ns, 2026-12, this VM). Sampling would
// make total_time_ns an estimate. So each accounted request reads the clock at its start and at its end, as QEMU's
// block_acct_start / block_acct_done do. Measured (2026-12-07): with this clock swapped for a counter, the
// accounted path runs at 1.015 of the plain one, so those two readings are the whole cost of accounting.
// Looked at again (2026-12-07 05:15): a reading costs 51-52 ns here against a 1.35-1.6 us request, so accounting
// cannot reach 2 % without a clock read of 15 ns or less. Node 20's performance.now is already a native fast call;
// its installed headers lack v8-fast-api-calls.h, so no faster addon clock can be built, and an N-API call costs
// more. A completion's reading reused as the next request's start, or a counter another thread ticks in a
// SharedArrayBuffer, would report latencies that are not the request's own, unlike QEMU's two CLOCK_MONOTONIC reads.
// Bound at the first reading, not when this module loads: in Node the global `performance` loads perf_hooks on first
// use (about 1 ms of a CLI start-up), which a command that never reads the clock should not pay.
let perfNow: () => number = () => {
  perfNow = typeof performance !== 'undefined' ? performance.now.bind(performance) : Date.now;
  return perfNow();
};

/** The host's monotonic clock. */
export const realClock: Clock = {
  nowNs: () => Math.round(perfNow() * 1e6),
  sleepNs: (ns) => new Promise((r) => setTimeout(r, Math.max(0, Math.ceil(ns / 1e6)))),
};

/** A clock that stands still until `advance` moves it; sleepers wake in deadline order. */
export class VirtualClock implements Clock {
  private now: number;
  private timers: { at: number; wake: () => void }[] = [];

  constructor(startNs = 1_000_000_000) {
    this.now = startNs;
  }

  nowNs(): number {
    return this.now;
  }

  sleepNs(ns: number): Promise<void> {
    return new Promise((wake) => {
      this.timers.push({ at: this.now + Math.max(0, ns), wake });
      this.timers.sort((a, b) => a.at - b.at);
    });
  }

  /** Number of sleepers not woken yet. */
  get pending(): number {
    return this.timers.length;
  }

  /** Deadline of the next sleeper, if any. */
  nextDeadline(): number | undefined {
    return this.timers[0]?.at;
  }

  /**
   * Moves time forward by `ns`, waking every sleeper whose deadline passed, in
   * order, letting each one's continuation run before the next.
   */
  async advance(ns: number): Promise<void> {
    const end = this.now + ns;
    // Requests started just before may not have reached their sleep yet.
    await settle();
    for (;;) {
      const t = this.timers[0];
      if (!t || t.at > end) break;
      this.timers.shift();
      this.now = Math.max(this.now, t.at);
      t.wake();
      await settle();
    }
    this.now = end;
    await settle();
  }
}

/** Lets queued promise continuations run (several turns: a woken request may await more than once). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
}
