/**
 * Jobs: QEMU's job state machine (job.c), in its own words.
 *
 *   created ─► running ─► waiting ─► pending ─► concluded ─► null
 *                 │ ▲        │           │          ▲
 *          pause  ▼ │ resume │ (failed / cancelled) │
 *               paused       └──────► aborting ─────┘
 *   running ─► ready ⇄ standby (jobs with a ready phase; complete ends it)
 *
 * Every transition is checked against QEMU's table (an illegal one is a bug
 * and throws), and every user verb (pause, resume, cancel, complete,
 * finalize, dismiss, set-speed) against QEMU's verb table, with QEMU's
 * message. A job's work is a `JobDriver`: `run` copies (calling the job's
 * pause points between chunks), `prepare` makes the graph change once the
 * job is finalized, `abort` / `commit` / `clean` as in QEMU. With
 * auto-finalize off the job waits in `pending` for `finalize()`; with
 * auto-dismiss off it stays `concluded` until `dismiss()`.
 *
 * Pause, sleep and cancel are cooperative, as QEMU's coroutines: the driver
 * calls `rateLimitSleep()` (a pause point that also honours the speed limit)
 * or `step()` between chunks; a pause or cancel wakes a sleeping job at once.
 */
import { BlockError } from '../block/errors.js';
import { RateLimit } from './rate-limit.js';

export type JobStatus =
  | 'undefined'
  | 'created'
  | 'running'
  | 'paused'
  | 'ready'
  | 'standby'
  | 'waiting'
  | 'pending'
  | 'aborting'
  | 'concluded'
  | 'null';

/** A QAPI JobType name (commit, stream, create, mirror, backup…); see registry.ts. */
export type JobType = string;

export type JobVerb = 'cancel' | 'pause' | 'resume' | 'set-speed' | 'complete' | 'finalize' | 'dismiss' | 'change';

/** Where each state may go (QEMU's JobSTT, row by row). */
const TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

/** Before the job's work is over: the states that take pause, resume and set-speed. */
const WORKING: readonly JobStatus[] = ['created', 'running', 'paused', 'ready', 'standby', 'waiting'];

/** The states in which each verb is accepted (QEMU 7.2's JobVerbTable, checked against qemu-system-x86_64). */
const VERBS: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: [...WORKING, 'pending'],
  pause: WORKING,
  resume: WORKING,
  'set-speed': WORKING,
  complete: ['ready', 'standby'],
  finalize: ['pending'],
  dismiss: ['concluded'],
  change: ['running', 'paused', 'ready', 'standby', 'waiting'],
};

export function isLegalTransition(from: JobStatus, to: JobStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return VERBS[verb].includes(status);
}

/** What a job does (QEMU's JobDriver callbacks). Only `run` is required. */
export interface JobDriver {
  /** The work: copies, calling `job.rateLimitSleep()` / `job.step()` between chunks. */
  run(job: Job): Promise<void>;
  /** Once the job is finalized and succeeded: the graph change (a failure aborts the job). */
  prepare?(job: Job): Promise<void>;
  /** After a successful prepare. */
  commit?(job: Job): Promise<void> | void;
  /** After a failure or cancel. */
  abort?(job: Job): Promise<void> | void;
  /** Always, last. */
  clean?(job: Job): Promise<void> | void;
  /** For jobs with a ready phase: job-complete (the job then finishes its run). */
  complete?(job: Job): void;
}

/** What the job tells its owner (the engine turns these into QMP events). */
export interface JobEvents {
  /** Every status change (JOB_STATUS_CHANGE). */
  status?(job: Job): void;
  /** running → ready (BLOCK_JOB_READY). */
  ready?(job: Job): void;
  /** The job waits for finalize (BLOCK_JOB_PENDING). */
  pending?(job: Job): void;
  /** Finished, successfully or with `job.error` (BLOCK_JOB_COMPLETED). */
  completed?(job: Job): void;
  /** Finished by a cancel (BLOCK_JOB_CANCELLED). */
  cancelled?(job: Job): void;
  /** A read or write of the job failed (BLOCK_JOB_ERROR); `action` is what the job's error policy chose. */
  ioError?(job: Job, operation: 'read' | 'write', error: BlockError, action: JobErrorAction): void;
}

export interface JobOptions {
  events?: JobEvents;
  /** QEMU's auto-finalize (default true): without it the job waits in 'pending' for finalize(). */
  autoFinalize?: boolean;
  /** QEMU's auto-dismiss (default true): without it the job stays 'concluded' until dismiss(). */
  autoDismiss?: boolean;
  /** Speed limit in bytes/s (0: none). */
  speed?: number;
  /** The job type has a ready phase: a cancel without force in ready/standby completes it without its final switch. */
  readyPhase?: boolean;
  rateLimit?: RateLimit;
}

/** QAPI BlockdevOnError: what a job does when a read or write fails. */
export type JobErrorPolicy = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';
/** QAPI BlockErrorAction: what it did. */
export type JobErrorAction = 'report' | 'ignore' | 'stop';

/** The listener form older callers pass: called on every status change. */
export type JobListener = (job: Job) => void;

/** QAPI JobInfo (query-jobs). */
export interface JobInfo {
  id: string;
  type: JobType;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** strerror(ECANCELED), which QEMU reports for a cancelled job. */
const CANCELED_MESSAGE = 'Operation canceled';

function asBlockError(e: unknown): BlockError {
  return e instanceof BlockError ? e : new BlockError('EIO', e instanceof Error ? e.message : String(e), { cause: e });
}

export class Job {
  status: JobStatus = 'undefined';
  /** Progress (QEMU's progress_current / progress_total), in bytes for block jobs. */
  current = 0;
  total = 0;
  error: BlockError | undefined;
  /** QAPI BlockDeviceIoStatus of a block job: set when an error stopped the job, reset by resume. */
  ioStatus: 'ok' | 'failed' | 'nospace' = 'ok';
  readonly autoFinalize: boolean;
  readonly autoDismiss: boolean;
  readonly limit: RateLimit;
  private readonly events: JobEvents;
  private readonly readyPhase: boolean;
  private driver: JobDriver | null = null;
  private running = false;
  private pauseCount = 0;
  private userPausedFlag = false;
  private cancelRequested = false;
  private forceCancel = false;
  private sleeping = false;
  private wake: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private finalizeGate: (() => void) | null = null;
  private nextDelay = 0;
  private done: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly type: JobType,
    options: JobListener | JobOptions = {},
  ) {
    const o: JobOptions = typeof options === 'function' ? { events: { status: options } } : options;
    this.events = o.events ?? {};
    this.autoFinalize = o.autoFinalize ?? true;
    this.autoDismiss = o.autoDismiss ?? true;
    this.readyPhase = o.readyPhase ?? false;
    this.limit = o.rateLimit ?? new RateLimit();
    if (o.speed) this.limit.setSpeed(o.speed);
    this.transition('created');
  }

  // ------------------------------------------------------------ state

  private transition(to: JobStatus): void {
    if (!isLegalTransition(this.status, to)) {
      throw new BlockError('EINVAL', `Job '${this.id}': illegal state transition ${this.status} -> ${to}`);
    }
    this.status = to;
    this.events.status?.(this);
  }

  /** QEMU's job_apply_verb: refuses a verb the current state does not take. */
  checkVerb(verb: JobVerb): void {
    if (!verbAllowed(verb, this.status)) {
      throw new BlockError('EINVAL', `Job '${this.id}' in state '${this.status}' cannot accept command verb '${verb}'`);
    }
  }

  /** The job's code is executing (not sleeping, paused, waiting for finalize, or over). */
  get busy(): boolean {
    return this.running && !this.sleeping;
  }

  /** Pause requested (by the user or internally); the job pauses at its next pause point. */
  get paused(): boolean {
    return this.pauseCount > 0;
  }

  get userPaused(): boolean {
    return this.userPausedFlag;
  }

  /** A cancel that aborts the job (a soft cancel of a ready job completes it instead). */
  get isCancelled(): boolean {
    return this.cancelRequested && this.forceCancel;
  }

  /** Any cancel was asked for, soft or forced. */
  get cancelPending(): boolean {
    return this.cancelRequested;
  }

  get speed(): number {
    return this.limit.speed;
  }

  // ------------------------------------------------------------- life

  /**
   * Starts the job once (`run` alone may be given as a function); the
   * promise settles when the job concluded and rejects with its error.
   */
  start(driver: JobDriver | ((job: Job) => Promise<void>)): Promise<void> {
    if (this.done) return this.done;
    this.driver = typeof driver === 'function' ? { run: driver } : driver;
    this.running = true;
    this.transition('running');
    this.done = this.main(this.driver);
    return this.done;
  }

  private async main(driver: JobDriver): Promise<void> {
    let err: BlockError | undefined;
    try {
      this.throwIfCancelled();
      await driver.run(this);
    } catch (e) {
      err = asBlockError(e);
    }
    // QEMU's job_update_rc: a cancelled job that did not fail otherwise fails with ECANCELED.
    if (!err && this.isCancelled) err = new BlockError('ECANCELED', CANCELED_MESSAGE);
    if (!err) {
      this.transition('waiting');
      this.transition('pending');
      this.events.pending?.(this);
      if (!this.autoFinalize && !this.isCancelled) {
        this.running = false;
        await new Promise<void>((r) => (this.finalizeGate = r));
        this.running = true;
      }
      if (this.isCancelled) err = new BlockError('ECANCELED', CANCELED_MESSAGE);
      else {
        try {
          await driver.prepare?.(this);
        } catch (e) {
          err = asBlockError(e);
        }
      }
    }
    if (err) {
      this.error = err;
      this.transition('aborting');
      try {
        await driver.abort?.(this);
      } catch {
        // The job failed already; an abort that fails too changes nothing the user can act on.
      }
    } else {
      await driver.commit?.(this);
    }
    try {
      await driver.clean?.(this);
    } finally {
      this.running = false;
      if (this.isCancelled) this.events.cancelled?.(this);
      else this.events.completed?.(this);
      this.transition('concluded');
      if (this.autoDismiss) this.transition('null');
    }
    if (err) throw err;
  }

  private throwIfCancelled(): void {
    if (this.isCancelled) throw new BlockError('ECANCELED', CANCELED_MESSAGE);
  }

  /** Wakes the job from a sleep or a pause wait (QEMU's job_enter). */
  private enter(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Ends a timed sleep early (not a pause): new work arrived for an idle job (QEMU's job_enter from a write). */
  kick(): void {
    if (this.sleeping && this.timer !== undefined && this.pauseCount === 0) this.enter();
  }

  /** A pause point: waits here while a pause is requested (status paused, or standby when ready). */
  async pausePoint(): Promise<void> {
    if (this.pauseCount === 0 || this.isCancelled) return;
    const wasReady = this.status === 'ready';
    this.transition(wasReady ? 'standby' : 'paused');
    this.sleeping = true;
    while (this.pauseCount > 0 && !this.isCancelled) await new Promise<void>((r) => (this.wake = r));
    this.sleeping = false;
    this.transition(wasReady ? 'ready' : 'running');
  }

  /** Sleeps `ns` nanoseconds unless woken (pause, cancel, a faster speed), then a pause point (QEMU's job_sleep_ns). */
  async sleep(ns: number): Promise<void> {
    if (ns > 0 && !this.isCancelled && this.pauseCount === 0) {
      this.sleeping = true;
      await new Promise<void>((r) => {
        this.wake = r;
        this.timer = setTimeout(() => this.enter(), Math.ceil(ns / 1e6));
      });
      this.sleeping = false;
    }
    await this.pausePoint();
  }

  /**
   * Between chunks: sleeps as long as the speed limit asked after the last
   * chunk moved, honours pause, and throws ECANCELED once the job was
   * cancelled (QEMU 7.2's stream/commit loop head). A wake-up (pause and
   * resume, a new speed) ends the sleep: the next chunk goes, then the
   * limit is asked again.
   */
  async rateLimitSleep(): Promise<void> {
    const delay = this.nextDelay;
    this.nextDelay = 0;
    await this.sleep(delay);
    this.throwIfCancelled();
  }

  /** Accounts `bytes` of progress; `moved` bytes count against the speed limit (the delay is slept at the next rateLimitSleep). */
  progress(bytes: number, moved = bytes): void {
    this.current += bytes;
    this.nextDelay = moved > 0 ? this.limit.delay(moved) : 0;
  }

  /** The simple form for bodies that do not throttle: progress, then a pause point and the cancel check. */
  async step(bytes = 0): Promise<void> {
    this.current += bytes;
    await this.pausePoint();
    this.throwIfCancelled();
  }

  /** A driver's I/O failed: tells the owner, returns the error for the driver to throw. */
  ioError(operation: 'read' | 'write', e: unknown): BlockError {
    const err = asBlockError(e);
    if (err.code !== 'ECANCELED') this.events.ioError?.(this, operation, err, 'report');
    return err;
  }

  /**
   * A driver's I/O failed under an error policy (QEMU's
   * block_job_error_action): tells the owner what was decided and returns
   * it. 'stop' pauses the job as a user pause (job-resume retries) and marks
   * its io-status; 'report' means the driver fails the job with the error;
   * 'ignore' means it goes on (mirror copies the range again later).
   */
  errorAction(policy: JobErrorPolicy, operation: 'read' | 'write', e: unknown): JobErrorAction {
    const err = asBlockError(e);
    if (err.code === 'ECANCELED') return 'report';
    const action: JobErrorAction =
      policy === 'ignore' ? 'ignore' : policy === 'stop' ? 'stop' : policy === 'enospc' && err.code === 'ENOSPC' ? 'stop' : 'report';
    this.events.ioError?.(this, operation, err, action);
    if (action === 'stop' && !this.userPausedFlag) {
      this.ioStatus = err.code === 'ENOSPC' ? 'nospace' : 'failed';
      this.userPausedFlag = true;
      this.pause();
    }
    return action;
  }

  /** For drivers with a ready phase: the bulk copy is done (BLOCK_JOB_READY). */
  transitionToReady(): void {
    this.transition('ready');
    this.events.ready?.(this);
  }

  // ------------------------------------------------------------ verbs

  /** QEMU's job_pause (internal; nests). */
  pause(): void {
    this.pauseCount++;
    if (this.sleeping && this.wake && this.timer !== undefined) this.enter();
  }

  /** QEMU's job_resume. */
  resume(): void {
    if (this.pauseCount === 0) return;
    this.pauseCount--;
    if (this.pauseCount === 0) this.enter();
  }

  /** job-pause / block-job-pause. */
  userPause(): void {
    this.checkVerb('pause');
    if (this.userPausedFlag) throw new BlockError('EINVAL', 'Job is already paused');
    this.userPausedFlag = true;
    this.pause();
  }

  /** job-resume / block-job-resume. */
  userResume(): void {
    // QEMU asks "was it paused" before the verb table.
    if (!this.userPausedFlag) throw new BlockError('EINVAL', "Can't resume a job that was not paused");
    this.checkVerb('resume');
    this.userPausedFlag = false;
    this.ioStatus = 'ok';
    this.resume();
  }

  /**
   * Cancels the job. Without `force`, a job with a ready phase that is ready
   * finishes normally instead (its final switch is skipped: see cancelPending).
   */
  cancel(force = true): void {
    const soft = !force && this.readyPhase && (this.status === 'ready' || this.status === 'standby');
    if (this.userPausedFlag) {
      this.userPausedFlag = false;
      this.pauseCount--;
    }
    if (!this.cancelRequested) {
      this.cancelRequested = true;
      this.forceCancel = !soft;
    } else if (!soft) this.forceCancel = true;
    if (this.finalizeGate) {
      const g = this.finalizeGate;
      this.finalizeGate = null;
      g();
      return;
    }
    this.enter();
  }

  /** job-cancel / block-job-cancel. */
  userCancel(force = true): void {
    this.checkVerb('cancel');
    this.cancel(force);
  }

  /** job-complete / block-job-complete. */
  complete(): void {
    this.checkVerb('complete');
    if (this.cancelRequested || !this.driver?.complete) throw new BlockError('EINVAL', `The active block job '${this.id}' cannot be completed`);
    this.driver.complete(this);
    this.enter();
  }

  /** job-finalize: a pending job runs prepare and concludes. */
  finalize(): void {
    this.checkVerb('finalize');
    const g = this.finalizeGate;
    this.finalizeGate = null;
    g?.();
  }

  /** job-dismiss: a concluded job goes away. */
  dismiss(): void {
    this.checkVerb('dismiss');
    this.transition('null');
  }

  /** block-job-set-speed (bytes/s, 0 = unlimited). */
  setSpeed(speed: number): void {
    this.checkVerb('set-speed');
    if (speed < 0) throw new BlockError('EINVAL', "Parameter 'speed' expects a non-negative value");
    const old = this.limit.speed;
    this.limit.setSpeed(speed);
    if (speed && speed <= old) return;
    // Faster (or unlimited): a job sleeping for the old speed goes on at once.
    if (this.sleeping && this.timer !== undefined) this.enter();
  }

  info(): JobInfo {
    const i: JobInfo = { id: this.id, type: this.type, status: this.status, 'current-progress': this.current, 'total-progress': this.total };
    if (this.error) i.error = this.error.message;
    return i;
  }
}
