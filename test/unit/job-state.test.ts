/**
 * The job state machine on its own: QEMU's transition table (illegal
 * transitions throw), the verb table, auto-finalize / auto-dismiss, pause at
 * a pause point, cancel of a paused job, a soft cancel of a ready job, and
 * the rate limit's arithmetic on an injected clock. The QMP-level behaviour
 * is compared with qemu-system-x86_64 in test/interop/qmp-jobs.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { Job, isLegalTransition, verbAllowed, type JobStatus } from '../../src/jobs/job.js';
import { RateLimit } from '../../src/jobs/rate-limit.js';
import { jobType, jobTypes, registerJobType } from '../../src/jobs/registry.js';
import '../../src/jobs/index.js';

const tick = () => new Promise((r) => setTimeout(r, 0));

function recorder(): { seen: string[]; events: ConstructorParameters<typeof Job>[2] } {
  const seen: string[] = [];
  return {
    seen,
    events: {
      events: {
        status: (j) => seen.push(j.status),
        ready: () => seen.push('READY'),
        pending: () => seen.push('PENDING'),
        completed: (j) => seen.push(j.error ? `COMPLETED(${j.error.message})` : 'COMPLETED'),
        cancelled: () => seen.push('CANCELLED'),
      },
    },
  };
}

describe('job state machine', () => {
  it('follows QEMU 7.2 transition table', () => {
    const all: JobStatus[] = ['undefined', 'created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting', 'concluded', 'null'];
    const legal = all.flatMap((a) => all.filter((b) => isLegalTransition(a, b)).map((b) => `${a}>${b}`));
    expect(legal).toEqual([
      'undefined>created',
      'created>running',
      'created>aborting',
      'created>null',
      'running>paused',
      'running>ready',
      'running>waiting',
      'running>aborting',
      'paused>running',
      'ready>standby',
      'ready>waiting',
      'ready>aborting',
      'standby>ready',
      'waiting>pending',
      'waiting>aborting',
      'pending>aborting',
      'pending>concluded',
      'aborting>aborting',
      'aborting>concluded',
      'concluded>null',
    ]);
    expect(verbAllowed('complete', 'ready')).toBe(true);
    expect(verbAllowed('complete', 'running')).toBe(false);
    expect(verbAllowed('pause', 'pending')).toBe(false);
    expect(verbAllowed('cancel', 'pending')).toBe(true);
  });

  it('an illegal transition throws (a driver that calls ready twice)', async () => {
    const job = new Job('j', 'stream');
    const p = job.start(async (j) => {
      j.transitionToReady();
      j.transitionToReady();
    });
    await expect(p).rejects.toThrow("Job 'j': illegal state transition ready -> ready");
  });

  it('auto-finalize off: waits in pending for finalize; auto-dismiss off: stays concluded', async () => {
    const r = recorder();
    const order: string[] = [];
    const job = new Job('j', 'commit', { ...r.events, autoFinalize: false, autoDismiss: false });
    const done = job.start({ run: async () => void order.push('run'), prepare: async () => void order.push('prepare'), clean: () => void order.push('clean') });
    for (let i = 0; i < 5; i++) await tick();
    expect(job.status).toBe('pending');
    expect(order).toEqual(['run']);
    expect(() => job.dismiss()).toThrow("Job 'j' in state 'pending' cannot accept command verb 'dismiss'");
    job.finalize();
    await done;
    expect(order).toEqual(['run', 'prepare', 'clean']);
    expect(job.status).toBe('concluded');
    job.dismiss();
    expect(r.seen).toEqual(['created', 'running', 'waiting', 'pending', 'PENDING', 'COMPLETED', 'concluded', 'null']);
  });

  it('a failing prepare aborts the job: aborting, COMPLETED with the error, concluded', async () => {
    const r = recorder();
    const aborted: string[] = [];
    const job = new Job('j', 'stream', r.events);
    await expect(
      job.start({
        run: async () => {},
        prepare: async () => {
          throw new Error('header write failed');
        },
        abort: () => void aborted.push('abort'),
      }),
    ).rejects.toThrow('header write failed');
    expect(aborted).toEqual(['abort']);
    expect(r.seen).toEqual(['created', 'running', 'waiting', 'pending', 'PENDING', 'aborting', 'COMPLETED(header write failed)', 'concluded', 'null']);
  });

  it('pauses at a pause point; a user pause is refused twice; cancel of a paused job resumes it and aborts', async () => {
    const r = recorder();
    const job = new Job('j', 'stream', r.events);
    let chunks = 0;
    const done = job.start(async (j) => {
      for (;;) {
        await j.rateLimitSleep();
        chunks++;
        j.progress(1);
        await tick();
      }
    });
    await tick();
    job.userPause();
    expect(() => job.userPause()).toThrow('Job is already paused');
    for (let i = 0; i < 5; i++) await tick();
    expect(job.status).toBe('paused');
    const at = chunks;
    for (let i = 0; i < 5; i++) await tick();
    expect(chunks).toBe(at);
    job.userCancel();
    await expect(done).rejects.toMatchObject({ code: 'ECANCELED', message: 'Operation canceled' });
    expect(r.seen).toEqual(['created', 'running', 'paused', 'running', 'aborting', 'CANCELLED', 'concluded', 'null']);
    expect(() => job.userResume()).toThrow("Can't resume a job that was not paused");
  });

  it('ready phase: complete ends it; a soft cancel of a ready job completes it (cancelPending tells the driver)', async () => {
    for (const how of ['complete', 'soft-cancel'] as const) {
      const r = recorder();
      const job = new Job('m', 'commit', { ...r.events, readyPhase: true });
      let finish!: () => void;
      let skippedPivot = false;
      const done = job.start({
        run: async (j) => {
          j.transitionToReady();
          await new Promise<void>((res) => (finish = res));
          skippedPivot = j.cancelPending;
        },
        complete: () => finish(),
      });
      expect(job.status).toBe('ready');
      expect(() => job.finalize()).toThrow("Job 'm' in state 'ready' cannot accept command verb 'finalize'");
      if (how === 'complete') job.complete();
      else {
        job.cancel(false);
        finish();
      }
      await done;
      expect(skippedPivot).toBe(how === 'soft-cancel');
      expect(r.seen).toEqual(['created', 'running', 'ready', 'READY', 'waiting', 'pending', 'PENDING', 'COMPLETED', 'concluded', 'null']);
    }
  });

  it('complete is refused for a job type without a ready phase', async () => {
    const job = new Job('s', 'stream');
    const done = job.start(async (j) => {
      await j.sleep(60_000_000_000);
    });
    expect(() => job.complete()).toThrow("Job 's' in state 'running' cannot accept command verb 'complete'");
    job.cancel();
    await expect(done).rejects.toMatchObject({ code: 'ECANCELED' });
  });
});

describe('rate limit (QEMU ratelimit arithmetic on a fake clock)', () => {
  it('lets the first chunk of a slice through, then delays by the slices the bytes fill', () => {
    let now = 0;
    const rl = new RateLimit(100_000_000, () => now);
    expect(rl.delay(1 << 20)).toBe(0); // unlimited
    rl.setSpeed(1024 * 1024); // 1 MiB/s: 104857.6 bytes per 100 ms slice
    now = 1_000_000_000;
    expect(rl.delay(65536)).toBe(0);
    expect(rl.delay(65536)).toBe(Math.floor((131072 / 104857.6) * 1e8)); // 125 ms after the slice start
    now += 125_000_000;
    expect(rl.delay(0)).toBe(0);
    rl.setSpeed(1); // quota clamps at 1 byte
    now += 1_000_000_000;
    expect(rl.delay(512 * 1024)).toBe(512 * 1024 * 1e8);
  });
});

describe('job-type registry', () => {
  it('has the built-in types with their facts, and refuses duplicates and unknown types', () => {
    expect(jobTypes()).toEqual(expect.arrayContaining(['stream', 'commit', 'create', 'mirror', 'backup']));
    expect(jobType('stream')).toMatchObject({ type: 'stream', blockJob: true, readyPhase: false });
    expect(jobType('mirror')).toMatchObject({ type: 'mirror', blockJob: true, readyPhase: true });
    expect(jobType('backup')).toMatchObject({ type: 'backup', blockJob: true, readyPhase: false });
    expect(jobType('create')).toMatchObject({ type: 'create', blockJob: false });
    expect(() => registerJobType({ type: 'stream', blockJob: true, readyPhase: false, driver: () => ({ run: async () => {} }) })).toThrow(
      "Job type 'stream' is already registered",
    );
    expect(() => jobType('no-such-job')).toThrow("No job type 'no-such-job'");
  });
});
