/**
 * Throttle groups (QEMU's block/throttle-groups.c concepts): members (block
 * backends, `throttle` filter nodes) that share one ThrottleState, so their
 * requests together stay within the group's limits.
 *
 * A request goes at once when its direction has nothing queued and the
 * buckets allow it. Otherwise it queues on its member, and the group releases
 * queued requests one at a time as the buckets leak, taking members in turn
 * (round-robin): a member with many requests cannot starve one with few. One
 * timer per direction serves the whole group.
 */
import { realClock, type Clock } from './clock.js';
import { BlockError } from './errors.js';
import { ThrottleState, type ThrottleConfig } from './throttle.js';

type Dir = 0 | 1; // 0 read, 1 write

export class ThrottleGroupMember {
  /** Queued requests per direction: each a release function. */
  readonly queues: [(() => void)[], (() => void)[]] = [[], []];
  /** Requests let through, per direction (for tests and statistics). */
  readonly released: [number, number] = [0, 0];

  constructor(
    readonly group: ThrottleGroup,
    readonly name: string,
  ) {}

  /**
   * Waits until a request of `bytes` in this direction may go, and pours it
   * into the group's buckets (QEMU's throttle_group_co_io_limits_intercept).
   */
  intercept(bytes: number, isWrite: boolean, nowNs?: number): Promise<void> | undefined {
    return this.group.intercept(this, bytes, isWrite, nowNs);
  }

  /** Whether requests are waiting. */
  get queued(): number {
    return this.queues[0].length + this.queues[1].length;
  }
}

export class ThrottleGroup {
  readonly state: ThrottleState;
  readonly members: ThrottleGroupMember[] = [];
  /** The member whose turn was last, per direction (round-robin starts after it). */
  private readonly lastTurn: [ThrottleGroupMember | null, ThrottleGroupMember | null] = [null, null];
  private readonly timerArmed: [boolean, boolean] = [false, false];
  private readonly pendingBytes = new WeakMap<() => void, number>();

  constructor(
    readonly name: string,
    readonly clock: Clock = realClock,
  ) {
    this.state = new ThrottleState(clock);
  }

  configure(cfg: ThrottleConfig): void {
    this.state.configure(cfg);
    // New limits may let queued requests go earlier.
    this.schedule(0);
    this.schedule(1);
  }

  get config(): ThrottleConfig {
    return this.state.cfg;
  }

  join(name: string): ThrottleGroupMember {
    const m = new ThrottleGroupMember(this, name);
    this.members.push(m);
    return m;
  }

  /** Removes a member; its queued requests go at once (QEMU drains a member before it leaves). */
  leave(m: ThrottleGroupMember): void {
    const i = this.members.indexOf(m);
    if (i < 0) return;
    this.members.splice(i, 1);
    for (const d of [0, 1] as Dir[]) {
      if (this.lastTurn[d] === m) this.lastTurn[d] = null;
      for (const release of m.queues[d].splice(0)) release();
    }
  }

  /**
   * `nowNs`: the group's clock, when the caller has just read it (the backend shares its accounting start, saving a
   * clock read per request). Undefined when the request goes now: no promise is made on that path.
   */
  intercept(m: ThrottleGroupMember, bytes: number, isWrite: boolean, nowNs?: number): Promise<void> | undefined {
    return this.admit(m, bytes, isWrite, nowNs ?? this.clock.nowNs()) ? undefined : this.enqueue(m, bytes, isWrite);
  }

  /**
   * The request path's question: whether a request of `bytes` may go at `nowNs` (the group's clock) without
   * waiting, poured into the buckets when it may. Small so that it inlines into the backend's request path (through
   * the larger `intercept` an idle group cost a request about twice as much, measured by
   * bench/backend-overhead.bench.mjs); a false answer leaves the request to `enqueue`.
   */
  admit(m: ThrottleGroupMember, bytes: number, isWrite: boolean, nowNs: number): boolean {
    if (!this.state.enabled) return true;
    const d: Dir = isWrite ? 1 : 0;
    // A timer is armed whenever requests queue, so an unarmed timer means nothing waits in this direction.
    if (this.timerArmed[d] || !this.state.pourIfFree(isWrite, bytes, nowNs)) return false;
    m.released[d]++;
    this.lastTurn[d] = m;
    return true;
  }

  /**
   * A request that has to wait (`admit` said no): queued behind its member's others, resolved when its turn comes.
   * A method of its own so that the request path captures nothing: a closure there would make every call allocate
   * a context for what it captures.
   */
  enqueue(m: ThrottleGroupMember, bytes: number, isWrite: boolean): Promise<void> {
    const d: Dir = isWrite ? 1 : 0;
    return new Promise<void>((resolve) => {
      this.pendingBytes.set(resolve, bytes);
      m.queues[d].push(resolve);
      this.schedule(d);
    });
  }

  /** The next member with requests queued in direction `d`, after the one whose turn was last. */
  private nextMember(d: Dir): ThrottleGroupMember | undefined {
    const n = this.members.length;
    const start = this.lastTurn[d] ? this.members.indexOf(this.lastTurn[d]!) + 1 : 0;
    for (let i = 0; i < n; i++) {
      const m = this.members[(start + i) % n]!;
      if (m.queues[d].length > 0) return m;
    }
    return undefined;
  }

  /** Lets queued requests go while the buckets allow, in turn; arms the direction's timer for the rest. */
  private schedule(d: Dir): void {
    if (!this.state.enabled) {
      // No limits (any more): everything queued goes now; an armed timer finds nothing left.
      for (const x of this.members) for (const release of x.queues[d].splice(0)) release();
      return;
    }
    if (this.timerArmed[d]) return;
    for (;;) {
      const m = this.nextMember(d);
      if (!m) return;
      const wait = this.state.computeWait(d === 1);
      if (wait > 0) {
        this.timerArmed[d] = true;
        void this.clock.sleepNs(wait).then(() => {
          this.timerArmed[d] = false;
          this.schedule(d);
        });
        return;
      }
      const release = m.queues[d].shift()!;
      this.state.account(d === 1, this.pendingBytes.get(release) ?? 0);
      m.released[d]++;
      this.lastTurn[d] = m;
      release();
    }
  }
}

/** The named throttle groups of one engine (QEMU keeps them global; an engine is our "process"). */
export class ThrottleGroups {
  private readonly groups = new Map<string, ThrottleGroup>();
  /** Groups created by object-add: they stay until object-del even without members. */
  private readonly objects = new Set<string>();

  constructor(readonly clock: Clock = realClock) {}

  get(name: string): ThrottleGroup | undefined {
    return this.groups.get(name);
  }

  /** The group `name`, created when absent (block_set_io_throttle's implicit groups). */
  obtain(name: string): ThrottleGroup {
    let g = this.groups.get(name);
    if (!g) this.groups.set(name, (g = new ThrottleGroup(name, this.clock)));
    return g;
  }

  /** object-add of a throttle-group. */
  addObject(name: string, cfg: ThrottleConfig): ThrottleGroup {
    if (this.objects.has(name)) throw new BlockError('EEXIST', `attempt to add duplicate property '${name}' to object (type 'container')`);
    const g = this.obtain(name);
    g.configure(cfg);
    this.objects.add(name);
    return g;
  }

  isObject(name: string): boolean {
    return this.objects.has(name);
  }

  /** object-del: refused while members use the group. */
  deleteObject(name: string): void {
    const g = this.groups.get(name);
    if (!g || !this.objects.has(name)) throw new BlockError('ENOENT', `object '${name}' not found`);
    if (g.members.length > 0) throw new BlockError('EBUSY', `object '${name}' is in use, can not be deleted`);
    this.objects.delete(name);
    this.groups.delete(name);
  }

  /** Drops an implicit group once its last member left. */
  release(g: ThrottleGroup): void {
    if (g.members.length === 0 && !this.objects.has(g.name)) this.groups.delete(g.name);
  }
}
