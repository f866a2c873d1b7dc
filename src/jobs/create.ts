/**
 * The create job (QEMU's blockdev-create): one piece of work, reported as a
 * job so QMP clients see the job life cycle they expect; not a block job.
 */
import { registerJobType } from './registry.js';

export const createJobType = registerJobType<{ work: () => Promise<void> }>({
  type: 'create',
  blockJob: false,
  readyPhase: false,
  driver: ({ work }) => ({
    async run(job) {
      job.total = 1;
      // QEMU counts the one step done whether or not the work succeeded.
      try {
        await work();
      } finally {
        job.progress(1, 0);
      }
    },
  }),
});
