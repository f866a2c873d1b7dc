/**
 * Throttling by counting on a virtual clock (never wall time): rates, bursts,
 * iops-size, separate read/write buckets, round-robin fairness between the
 * members of a group, and the same through the engine (block_set_io_throttle
 * on a device, `throttle` filter nodes sharing a throttle-group object).
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { VirtualClock } from '../../src/block/clock.js';
import { ThrottleGroup } from '../../src/block/throttle-group.js';
import { ThrottleState, checkConfig, configFromLimits, type ThrottleLimits } from '../../src/block/throttle.js';

const SEC = 1e9;

function group(limits: ThrottleLimits): { clock: VirtualClock; g: ThrottleGroup } {
  const clock = new VirtualClock();
  const g = new ThrottleGroup('g', clock);
  const cfg = configFromLimits(limits);
  checkConfig(cfg);
  g.configure(cfg);
  return { clock, g };
}

/** Queues `n` requests of `bytes` on a member; returns the count of those that went. */
function flood(g: ThrottleGroup, name: string, n: number, bytes: number, isWrite = false) {
  const m = g.join(name);
  const done: number[] = [];
  for (let i = 0; i < n; i++) {
    const w = m.intercept(bytes, isWrite);
    if (w) void w.then(() => done.push(i));
    else done.push(i);
  }
  return { m, done };
}

describe('throttle groups (virtual clock)', () => {
  it('holds a byte rate: what goes in T seconds is rate × T plus one tenth of a second of slack', async () => {
    const { clock, g } = group({ 'bps-total': 10_000 });
    const { done } = flood(g, 'a', 500, 1000);
    await clock.advance(0);
    // The bucket holds a tenth of a second (1 kB): the first request fills it, the second finds it not over.
    expect(done.length).toBe(2);
    await clock.advance(10 * SEC);
    // 10 s at 10 kB/s with 1 kB requests: 100 more (the bucket may hold 1 kB, a tenth of a second).
    expect(done.length).toBeGreaterThanOrEqual(100);
    expect(done.length).toBeLessThanOrEqual(102);
    await clock.advance(10 * SEC);
    expect(done.length).toBeGreaterThanOrEqual(200);
    expect(done.length).toBeLessThanOrEqual(202);
  });

  it('lets a burst run at bps-max for bps-max-length seconds, then falls back to the average', async () => {
    const { clock, g } = group({ 'bps-total': 1000, 'bps-total-max': 10_000, 'bps-total-max-length': 2 });
    const { done } = flood(g, 'a', 1000, 1000);
    await clock.advance(2 * SEC);
    // ~2 s at 10 kB/s.
    expect(done.length).toBeGreaterThanOrEqual(19);
    expect(done.length).toBeLessThanOrEqual(23);
    await clock.advance(2 * SEC);
    const settled = done.length;
    await clock.advance(10 * SEC);
    // Once the 20 kB burst bucket is full, 1 kB/s.
    expect(done.length - settled).toBeGreaterThanOrEqual(9);
    expect(done.length - settled).toBeLessThanOrEqual(11);
  });

  it('counts a request larger than iops-size as several operations', async () => {
    const { clock, g } = group({ 'iops-total': 10, 'iops-size': 4096 });
    const { done } = flood(g, 'a', 100, 16384);
    await clock.advance(10 * SEC);
    // 10 ops/s, each request 4 ops: 25 requests in 10 s (plus the first).
    expect(done.length).toBeGreaterThanOrEqual(25);
    expect(done.length).toBeLessThanOrEqual(27);
  });

  it('limits reads and writes in their own buckets', async () => {
    const { clock, g } = group({ 'bps-read': 1000, 'bps-write': 100_000 });
    const r = flood(g, 'r', 100, 1000, false);
    const w = flood(g, 'w', 100, 1000, true);
    await clock.advance(1 * SEC);
    expect(w.done.length).toBe(100);
    expect(r.done.length).toBeLessThanOrEqual(3);
  });

  it('serves the members of a group in turn: one with few requests is not starved by one with many', async () => {
    const { clock, g } = group({ 'iops-total': 10 });
    const order: string[] = [];
    const a = g.join('a');
    const b = g.join('b');
    for (let i = 0; i < 30; i++) void a.intercept(1, false)?.then(() => order.push('a'));
    for (let i = 0; i < 3; i++) void b.intercept(1, false)?.then(() => order.push('b'));
    await clock.advance(10 * SEC);
    // b's three requests went within the first seven released, alternating with a's.
    const lastB = order.lastIndexOf('b');
    expect(order.filter((x) => x === 'b')).toHaveLength(3);
    expect(lastB).toBeLessThan(7);
    // Both together keep the group's rate.
    expect(a.released[0] + b.released[0]).toBeLessThanOrEqual(10 * 10 + 2);
  });

  it('new limits apply at once; no limits release what waits', async () => {
    const { clock, g } = group({ 'iops-total': 1 });
    const { done } = flood(g, 'a', 10, 1);
    await clock.advance(0);
    expect(done.length).toBe(1);
    g.configure(configFromLimits({}));
    await clock.advance(0);
    expect(done.length).toBe(10);
  });
});

describe('the request path\'s one-pass check (pourIfFree)', () => {
  // The fast path must decide and pour exactly as computeWait() === 0 then account() do, whatever the limits.
  const configs: ThrottleLimits[] = [
    { 'bps-total': 1e6 },
    { 'iops-total': 50, 'bps-total': 3e5 },
    { 'bps-read': 2e5, 'bps-write': 1e5, 'iops-read': 40, 'iops-write': 20, 'iops-size': 8192 },
    { 'bps-total': 1e5, 'bps-total-max': 1e6, 'bps-total-max-length': 3, 'iops-total': 100, 'iops-total-max': 400, 'iops-total-max-length': 2 },
    { 'iops-write': 10, 'iops-write-max': 30, 'iops-write-max-length': 5, 'iops-size': 4096 },
  ];
  for (const [n, limits] of configs.entries()) {
    for (const compareEvery of [1, 9]) {
    it(`decides and pours as computeWait + account do (config ${n}, levels compared every ${compareEvery} requests)`, () => {
      const cfg = configFromLimits(limits);
      checkConfig(cfg);
      const clock = new VirtualClock();
      const slow = new ThrottleState(clock);
      const fast = new ThrottleState(clock);
      slow.configure(cfg);
      fast.configure(cfg);
      let seed = 7 + n;
      const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
      let now = clock.nowNs();
      let went = 0;
      let waited = 0;
      for (let i = 0; i < 1500; i++) {
        // Mostly close together (the limits bite), with idle pauses that let every bucket leak empty.
        now += rnd() < 0.08 ? 3_000_000_000 : Math.floor(rnd() * rnd() * 20_000_000);
        const isWrite = rnd() < 0.5;
        const bytes = 512 * (1 + Math.floor(rnd() * 64));
        const expected = slow.computeWait(isWrite, now) === 0;
        if (expected) slow.account(isWrite, bytes);
        expect(fast.pourIfFree(isWrite, bytes, now)).toBe(expected);
        if (expected) went++;
        else waited++;
        // Same levels: both directions would wait alike from here. Reading them ends the idle fast path's
        // lazy state, so the second run reads them seldom and lets runs of drained pours go unobserved between.
        if (i % compareEvery === 0) {
          expect(fast.computeWait(false, now)).toBe(slow.computeWait(false, now));
          expect(fast.computeWait(true, now)).toBe(slow.computeWait(true, now));
        }
      }
      // The sequence exercised both answers, and the idle fast path (buckets leaked empty).
      expect(went).toBeGreaterThan(100);
      expect(waited).toBeGreaterThan(100);
      expect(fast.drainedPours).toBeGreaterThan(20);
    });
    }
  }

  it('an idle group pours by the fast path and still limits when requests come close together', () => {
    // Limits that never bite at one request per millisecond; a burst of back-to-back requests then waits.
    const cfg = configFromLimits({ 'bps-total': 4096 * 1000, 'iops-total': 1000 });
    const clock = new VirtualClock();
    const slow = new ThrottleState(clock);
    const fast = new ThrottleState(clock);
    slow.configure(cfg);
    fast.configure(cfg);
    let now = clock.nowNs();
    const step = (gap: number) => {
      now += gap;
      const expected = slow.computeWait(false, now) === 0;
      if (expected) slow.account(false, 4096);
      expect(fast.pourIfFree(false, 4096, now)).toBe(expected);
      return expected;
    };
    for (let i = 0; i < 200; i++) expect(step(1_000_001)).toBe(true);
    expect(fast.drainedPours).toBe(200);
    let went = 0;
    for (let i = 0; i < 400; i++) if (step(100)) went++;
    // A tenth of a second of iops: 100 requests fill the bucket, then each waits for the leak.
    expect(went).toBeGreaterThanOrEqual(100);
    expect(went).toBeLessThan(110);
    expect(fast.computeWait(false, now)).toBe(slow.computeWait(false, now));
  });
});

describe('throttling through the engine', () => {
  async function engineOn(clock: VirtualClock) {
    const mem = new MemoryStorage();
    mem.put('d.img', new Uint8Array(1 << 20));
    const engine = new Engine({ storages: { memory: mem }, clock });
    return engine;
  }

  it('block_set_io_throttle limits a device; query-block shows the limits; its waits count as latency', async () => {
    const clock = new VirtualClock();
    const engine = await engineOn(clock);
    await engine.open('memory', 'd.img', { format: 'raw', device: 'd0' });
    engine.device('d0')!.backend.stats.addInterval(60);
    await engine.execute('block_set_io_throttle', { device: 'd0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 2, iops_rd: 0, iops_wr: 0 });
    const [info] = (await engine.execute('query-block')) as { inserted: Record<string, unknown> }[];
    expect(info!.inserted).toMatchObject({ iops: 2, bps: 0, group: 'd0' });
    let reads = 0;
    for (let i = 0; i < 10; i++) void engine.read('d0', 0, 512).then(() => reads++);
    await clock.advance(0);
    expect(reads).toBe(1);
    await clock.advance(2 * SEC);
    expect(reads).toBeGreaterThanOrEqual(4);
    expect(reads).toBeLessThanOrEqual(6);
    const [st] = (await engine.execute('query-blockstats')) as { stats: Record<string, any> }[];
    expect(st!.stats.rd_operations).toBe(reads);
    // The first read did not wait; the later ones waited for the bucket.
    expect(st!.stats.timed_stats[0].min_rd_latency_ns).toBe(0);
    expect(st!.stats.timed_stats[0].max_rd_latency_ns).toBeGreaterThan(0.5 * SEC);
    expect(st!.stats.idle_time_ns).toBeGreaterThanOrEqual(0);
    await engine.execute('block_set_io_throttle', { device: 'd0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 });
    await clock.advance(0);
    expect(reads).toBe(10);
    const [after] = (await engine.execute('query-block')) as { inserted: Record<string, unknown> }[];
    expect(after!.inserted.group).toBeUndefined();
    await engine.dispose();
  });

  it('throttle filter nodes in one throttle-group share its limits', async () => {
    const clock = new VirtualClock();
    const engine = await engineOn(clock);
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { driver: 'memory', filename: 'd.img' } });
    await engine.execute('object-add', { 'qom-type': 'throttle-group', id: 'tg', limits: { 'iops-total': 4 } });
    await engine.execute('blockdev-add', { driver: 'throttle', 'node-name': 't1', 'throttle-group': 'tg', file: 'r' });
    await engine.execute('blockdev-add', { driver: 'throttle', 'node-name': 't2', 'throttle-group': 'tg', file: 'r' });
    const done = { t1: 0, t2: 0 };
    for (let i = 0; i < 40; i++) for (const n of ['t1', 't2'] as const) void engine.read(n, i * 512, 512).then(() => done[n]++);
    await clock.advance(5 * SEC);
    const total = done.t1 + done.t2;
    // 4 ops/s over 5 s for the two together (plus the slack of the first), split evenly.
    expect(total).toBeGreaterThanOrEqual(20);
    expect(total).toBeLessThanOrEqual(23);
    expect(Math.abs(done.t1 - done.t2)).toBeLessThanOrEqual(1);
    await expect(engine.execute('object-del', { id: 'tg' })).rejects.toMatchObject({ message: "object 'tg' is in use, can not be deleted" });
    await clock.advance(100 * SEC);
    await engine.execute('blockdev-del', { 'node-name': 't1' });
    await engine.execute('blockdev-del', { 'node-name': 't2' });
    await engine.execute('object-del', { id: 'tg' });
    await engine.dispose();
  });
});
