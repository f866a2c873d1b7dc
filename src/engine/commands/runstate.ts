/**
 * The "VM" run state without a VM: stop / cont / query-status, and
 * query-version. `stop` (or a `stop` error policy) stops every BlockBackend:
 * their requests wait until `cont`, which also resets iostatus, as QEMU's
 * qmp_cont does.
 */
import type { QmpCommandTable } from './types.js';

/** The QEMU whose QMP the engine speaks (greeting and query-version); `package` names blocktab. */
export const QMP_QEMU_VERSION = { qemu: { micro: 0, minor: 2, major: 7 }, package: 'blocktab' } as const;

export const runStateCommands: QmpCommandTable = {
  stop: {
    args: {},
    run(engine) {
      engine.stopVm('paused');
    },
  },

  cont: {
    args: {},
    run(engine) {
      engine.contVm();
    },
  },

  'query-status': {
    args: {},
    run(engine) {
      return { status: engine.runState, singlestep: false, running: engine.runState === 'running' };
    },
  },

  'query-version': {
    args: {},
    run: () => ({ qemu: { ...QMP_QEMU_VERSION.qemu }, package: QMP_QEMU_VERSION.package }),
  },
};
