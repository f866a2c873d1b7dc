/**
 * Block jobs, small: QEMU's job state machine names (created → running ⇄
 * paused → ready → concluded → null), progress as current/total bytes, and
 * cooperative cancel and pause checked between chunks. A job's body is an
 * async function that calls `job.step(bytes)` after each chunk; `step` waits
 * while the job is paused and throws ECANCELED once it was cancelled.
 */
import { BlockError } from '../block/errors.js';

export type JobStatus = 'created' | 'running' | 'paused' | 'ready' | 'concluded' | 'null';
export type JobType = 'commit' | 'stream' | 'create';

export interface JobInfo {
  id: string;
  type: JobType;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

export type JobListener = (job: Job) => void;

export class Job {
  status: JobStatus = 'created';
  current = 0;
  total = 0;
  error: BlockError | undefined;
  private cancelled = false;
  private resume: (() => void) | null = null;
  private pausedWait: Promise<void> | null = null;
  private done: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly type: JobType,
    private readonly listener?: JobListener,
  ) {}

  private set(status: JobStatus): void {
    this.status = status;
    this.listener?.(this);
  }

  /** Starts the body once; the returned promise settles when the job concluded (rejects with its error). */
  start(body: (job: Job) => Promise<void>): Promise<void> {
    if (this.done) return this.done;
    this.set('running');
    this.done = (async () => {
      try {
        await body(this);
      } catch (e) {
        this.error = e instanceof BlockError ? e : new BlockError('EIO', e instanceof Error ? e.message : String(e), { cause: e });
      }
      this.set('concluded');
      if (this.error) throw this.error;
    })();
    return this.done;
  }

  /** Called by the body after a chunk: accounts progress, honours pause and cancel. */
  async step(bytes = 0): Promise<void> {
    this.current += bytes;
    if (this.pausedWait) await this.pausedWait;
    if (this.cancelled) throw new BlockError('ECANCELED', `Job '${this.id}' was cancelled`);
  }

  cancel(): void {
    this.cancelled = true;
    this.resumeJob();
  }

  get isCancelled(): boolean {
    return this.cancelled;
  }

  pause(): void {
    if (this.status !== 'running' || this.pausedWait) return;
    this.pausedWait = new Promise((r) => (this.resume = r));
    this.set('paused');
  }

  resumeJob(): void {
    if (!this.pausedWait) return;
    const r = this.resume!;
    this.pausedWait = null;
    this.resume = null;
    if (this.status === 'paused') this.set('running');
    r();
  }

  /** QEMU's job-dismiss: a concluded job goes away. */
  dismiss(): void {
    if (this.status === 'concluded') this.set('null');
  }

  info(): JobInfo {
    const i: JobInfo = { id: this.id, type: this.type, status: this.status, 'current-progress': this.current, 'total-progress': this.total };
    if (this.error) i.error = this.error.message;
    return i;
  }
}
