/**
 * The differential QMP script table: small named scripts, each about one
 * command (or one idea), run in groups through QEMU 7.2's monitor and
 * through `blocktab qmp` (test/interop/qmp-sweep.test.ts), and a subset
 * through the worker's Engine.execute in Chromium
 * (test/browser/qmp-scripts.test.ts). Most of them are the "missing name"
 * sweep: every command blocktab implements, given a node, device, job,
 * bitmap, snapshot or object that does not exist, must answer QEMU's error
 * class and description.
 *
 * Plain data (no node:* imports) so the browser suite shares it. `$DIR` in
 * a line stands for the group's image directory. Every script leaves the
 * graph as it found it, so any subset runs on the group's start state:
 * a `-drive if=none,id=d0` on d0.qcow2 and a `-blockdev` node n0 (file
 * node n0f) on n0.qcow2, both 1 MiB qcow2 images, and t.qcow2 / u.qcow2
 * (4 MiB qcow2, u full of data) and v.qcow2 (4 MiB, a commit's base) for
 * scripts that add them.
 */

export interface ScriptLine {
  /** One QMP input line (`$DIR` replaced by the group's directory). */
  line: string;
  /** Events to wait for after the reply (a job's status changes). */
  events?: number;
  /** Milliseconds to wait before the line is sent (a throttled job's first run to land). */
  delayMs?: number;
}

export interface QmpScript {
  name: string;
  /** The commands the script is about (for the coverage count). */
  covers: string[];
  lines: ScriptLine[];
  /**
   * Runs through the worker's Engine.execute too: no -drive device, no HMP or monitor negotiation, no reply
   * that names the storage driver.
   */
  browser?: boolean;
}

const j = (execute: string, args?: Record<string, unknown>): string => JSON.stringify({ execute, ...(args ? { arguments: args } : {}) });
const L = (execute: string, args?: Record<string, unknown>, events = 0): ScriptLine => ({ line: j(execute, args), events });
const fileNode = (name: string, img: string) => ({ driver: 'file', 'node-name': `${name}f`, filename: `$DIR/${img}` });
const addQcow2 = (name: string, img: string, extra: Record<string, unknown> = {}) =>
  L('blockdev-add', { driver: 'qcow2', 'node-name': name, file: fileNode(name, img), ...extra });
const del = (name: string) => L('blockdev-del', { 'node-name': name });
const human = (dev: string, cmd: string) => L('human-monitor-command', { 'command-line': `qemu-io ${dev} "${cmd}"` });

const s = (name: string, covers: string[], lines: ScriptLine[], browser = false): QmpScript => ({ name, covers, lines, browser });

/** The group's command line (QEMU's and `blocktab qmp`'s). */
export function groupOptions(dir: string): string[] {
  return [
    '-drive',
    `if=none,id=d0,file=${dir}/d0.qcow2,format=qcow2`,
    '-blockdev',
    JSON.stringify({ driver: 'qcow2', 'node-name': 'n0', file: { driver: 'file', 'node-name': 'n0f', filename: `${dir}/n0.qcow2` } }),
  ];
}

/** What the browser's engine needs to reach the same start state (no -drive there: n0 only). */
export const browserSetup: ScriptLine[] = [
  L('blockdev-add', { driver: 'qcow2', 'node-name': 'n0', file: { driver: 'file', 'node-name': 'n0f', filename: '$DIR/n0.qcow2' } }),
];

/** The qcow2 images every group directory holds, by size. */
export const GROUP_IMAGES: Record<string, string> = { 'd0.qcow2': '1M', 'n0.qcow2': '1M', 't.qcow2': '4M', 'u.qcow2': '4M', 'v.qcow2': '4M' };
/** qemu-io commands run on an image after it is made: u is full, so a job from it at 1 byte/s outlives a script. */
export const GROUP_DATA: Record<string, string> = { 'u.qcow2': 'write -P 7 0 4M' };

const NOPE = 'nope';

export const graphScripts: QmpScript[] = [
  s('blockdev-add: missing references, duplicates, bad driver', ['blockdev-add'], [
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: NOPE }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 'n0f', backing: NOPE }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'n0', file: fileNode('x', 't.qcow2') }),
    L('blockdev-add', { driver: 'nosuchdriver', 'node-name': 'x' }),
    L('blockdev-add', { 'node-name': 'x' }),
    L('blockdev-add', { driver: 'file', 'node-name': 'x', filename: '$DIR/nonexistent.qcow2' }),
  ], true),
  s('blockdev-add then blockdev-del', ['blockdev-add', 'blockdev-del'], [addQcow2('t', 't.qcow2'), L('query-named-block-nodes', { flat: true }), del('t'), del('tf')]),
  s('blockdev-del: missing, in use, a device root', ['blockdev-del'], [
    del(NOPE),
    del('n0f'),
    L('blockdev-del', {}),
    L('blockdev-del', { 'node-name': 'd0' }),
  ], true),
  s('blockdev-reopen: missing node and missing child', ['blockdev-reopen'], [
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': NOPE, file: 'n0f' }] }),
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n0', file: NOPE }] }),
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n0', file: 'n0f', backing: NOPE }] }),
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n0', file: 'n0f', 'read-only': true }] }),
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n0', file: 'n0f' }] }),
    L('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n0', file: 'n0f', 'read-only': false }] }),
  ], true),
  s('change-backing-file: missing device and node', ['change-backing-file'], [
    L('change-backing-file', { device: NOPE, 'image-node-name': 'n0', 'backing-file': 'x' }),
    L('change-backing-file', { device: 'n0', 'image-node-name': NOPE, 'backing-file': 'x' }),
    L('change-backing-file', { device: 'd0', 'image-node-name': 'n0', 'backing-file': 'x' }),
  ]),
  s('block_resize: missing device or node, both, neither', ['block_resize'], [
    L('block_resize', { device: NOPE, size: 1048576 }),
    L('block_resize', { 'node-name': NOPE, size: 1048576 }),
    L('block_resize', { device: 'd0', 'node-name': 'n0', size: 1048576 }),
    L('block_resize', { size: 1048576 }),
    L('block_resize', { 'node-name': 'n0', size: 1048576 }),
  ], true),
  s('blockdev-add: a node name that is a device id, too long, malformed', ['blockdev-add'], [
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'd0', file: fileNode('x', 't.qcow2') }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'a'.repeat(32), file: fileNode('x', 't.qcow2') }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': '1a', file: fileNode('x', 't.qcow2') }),
    L('query-named-block-nodes', { flat: true }),
  ]),
  s('query-named-block-nodes, query-block, query-blockstats', ['query-named-block-nodes', 'query-block', 'query-blockstats'], [
    L('query-named-block-nodes'),
    L('query-block'),
    L('query-blockstats', { 'query-nodes': true }),
    L('query-blockstats', { nope: 1 }),
  ]),
];

export const bitmapScripts: QmpScript[] = [
  s('block-dirty-bitmap-add: missing node, empty and duplicate names', ['block-dirty-bitmap-add'], [
    L('block-dirty-bitmap-add', { node: NOPE, name: 'b' }),
    L('block-dirty-bitmap-add', { node: 'n0', name: '' }),
    L('block-dirty-bitmap-add', { node: 'n0', name: 'b', granularity: 1000 }),
    L('block-dirty-bitmap-add', { node: 'n0', name: 'b' }),
    L('block-dirty-bitmap-add', { node: 'n0', name: 'b' }),
    L('block-dirty-bitmap-remove', { node: 'n0', name: 'b' }),
  ], true),
  s('block-dirty-bitmap-remove: missing node and bitmap', ['block-dirty-bitmap-remove'], [
    L('block-dirty-bitmap-remove', { node: NOPE, name: 'b' }),
    L('block-dirty-bitmap-remove', { node: 'n0', name: NOPE }),
    L('block-dirty-bitmap-remove', { node: 'd0', name: NOPE }),
  ]),
  s('block-dirty-bitmap-clear: missing node and bitmap', ['block-dirty-bitmap-clear'], [
    L('block-dirty-bitmap-clear', { node: NOPE, name: 'b' }),
    L('block-dirty-bitmap-clear', { node: 'n0', name: NOPE }),
  ], true),
  s('block-dirty-bitmap-enable / -disable: missing node and bitmap', ['block-dirty-bitmap-enable', 'block-dirty-bitmap-disable'], [
    L('block-dirty-bitmap-enable', { node: NOPE, name: 'b' }),
    L('block-dirty-bitmap-enable', { node: 'n0', name: NOPE }),
    L('block-dirty-bitmap-disable', { node: NOPE, name: 'b' }),
    L('block-dirty-bitmap-disable', { node: 'n0', name: NOPE }),
  ], true),
  s('block-dirty-bitmap-merge: missing node, target and sources', ['block-dirty-bitmap-merge'], [
    L('block-dirty-bitmap-add', { node: 'n0', name: 'm' }),
    L('block-dirty-bitmap-merge', { node: NOPE, target: 'm', bitmaps: ['m'] }),
    L('block-dirty-bitmap-merge', { node: 'n0', target: NOPE, bitmaps: ['m'] }),
    L('block-dirty-bitmap-merge', { node: 'n0', target: 'm', bitmaps: [NOPE] }),
    L('block-dirty-bitmap-merge', { node: 'n0', target: 'm', bitmaps: [{ node: NOPE, name: 'm' }] }),
    L('block-dirty-bitmap-merge', { node: 'n0', target: 'm', bitmaps: [{ node: 'n0', name: NOPE }] }),
    L('block-dirty-bitmap-remove', { node: 'n0', name: 'm' }),
  ], true),
  s('x-debug-block-dirty-bitmap-sha256: missing node and bitmap', ['x-debug-block-dirty-bitmap-sha256'], [
    L('x-debug-block-dirty-bitmap-sha256', { node: NOPE, name: 'b' }),
    L('x-debug-block-dirty-bitmap-sha256', { node: 'n0', name: NOPE }),
    L('block-dirty-bitmap-add', { node: 'n0', name: 'h' }),
    L('x-debug-block-dirty-bitmap-sha256', { node: 'n0', name: 'h' }),
    L('block-dirty-bitmap-remove', { node: 'n0', name: 'h' }),
  ], true),
];

export const snapshotScripts: QmpScript[] = [
  s('blockdev-snapshot-sync: missing device and node, neither', ['blockdev-snapshot-sync'], [
    L('blockdev-snapshot-sync', { device: NOPE, 'snapshot-file': '$DIR/s.qcow2' }),
    L('blockdev-snapshot-sync', { 'node-name': NOPE, 'snapshot-file': '$DIR/s.qcow2' }),
    L('blockdev-snapshot-sync', { 'snapshot-file': '$DIR/s.qcow2' }),
    L('blockdev-snapshot-sync', { device: 'd0', 'snapshot-file': '$DIR/s.qcow2', 'snapshot-node-name': 'n0' }),
  ]),
  s('blockdev-snapshot-internal-sync: missing device, a node name', ['blockdev-snapshot-internal-sync'], [
    L('blockdev-snapshot-internal-sync', { device: NOPE, name: 's1' }),
    L('blockdev-snapshot-internal-sync', { device: 'n0', name: '' }),
    L('blockdev-snapshot-internal-sync', { device: 'n0', name: 's1' }),
    L('blockdev-snapshot-internal-sync', { device: 'n0', name: 's1' }),
    L('blockdev-snapshot-delete-internal-sync', { device: 'n0', name: 's1' }),
  ], true),
  s('blockdev-snapshot-delete-internal-sync: missing device and snapshot', ['blockdev-snapshot-delete-internal-sync'], [
    L('blockdev-snapshot-delete-internal-sync', { device: NOPE, name: 's1' }),
    L('blockdev-snapshot-delete-internal-sync', { device: 'n0', name: NOPE }),
    L('blockdev-snapshot-delete-internal-sync', { device: 'n0' }),
    L('blockdev-snapshot-delete-internal-sync', { device: 'n0', id: NOPE, name: NOPE }),
  ], true),
  s('transaction: bitmap add and clear together', ['transaction'], [
    L('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: 'n0', name: 'ta', granularity: 65536 } },
        { type: 'block-dirty-bitmap-clear', data: { node: 'n0', name: 'ta' } },
      ],
    }),
    L('x-debug-block-dirty-bitmap-sha256', { node: 'n0', name: 'ta' }),
    L('block-dirty-bitmap-remove', { node: 'n0', name: 'ta' }),
  ], true),
  s('transaction: an action on a missing node aborts the rest', ['transaction'], [
    L('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: 'n0', name: 't1' } },
        { type: 'block-dirty-bitmap-add', data: { node: NOPE, name: 't2' } },
      ],
    }),
    L('transaction', { actions: [{ type: 'block-dirty-bitmap-clear', data: { node: 'n0', name: NOPE } }] }),
    L('transaction', { actions: [{ type: 'nosuchaction', data: {} }] }),
    L('x-debug-block-dirty-bitmap-sha256', { node: 'n0', name: 't1' }),
  ], true),
];

export const jobScripts: QmpScript[] = [
  s('block-stream: missing device and base', ['block-stream'], [
    L('block-stream', { 'job-id': 'j', device: NOPE }),
    L('block-stream', { 'job-id': 'j', device: 'n0', 'base-node': NOPE }),
    L('block-stream', { 'job-id': 'j', device: 'n0', base: NOPE }),
    L('block-stream', { 'job-id': 'j', device: 'n0', 'bottom': NOPE }),
  ], true),
  s('block-commit: missing device, top and base', ['block-commit'], [
    L('block-commit', { 'job-id': 'j', device: NOPE }),
    L('block-commit', { 'job-id': 'j', device: 'n0', 'top-node': NOPE }),
    L('block-commit', { 'job-id': 'j', device: 'n0', 'base-node': NOPE }),
    L('block-commit', { 'job-id': 'j', device: 'n0' }),
  ], true),
  s('blockdev-mirror: missing device and target', ['blockdev-mirror'], [
    L('blockdev-mirror', { 'job-id': 'j', device: NOPE, target: 'n0', sync: 'full' }),
    L('blockdev-mirror', { 'job-id': 'j', device: 'n0', target: NOPE, sync: 'full' }),
    L('blockdev-mirror', { 'job-id': 'j', device: 'n0', target: 'n0', sync: 'full' }),
  ], true),
  s('drive-mirror: missing device', ['drive-mirror'], [
    L('drive-mirror', { 'job-id': 'j', device: NOPE, target: '$DIR/m.qcow2', sync: 'full' }),
    L('drive-mirror', { 'job-id': 'j', device: 'n0', target: '$DIR/t.qcow2', sync: 'full', mode: 'existing', format: 'qcow2', 'node-name': 'n0' }),
  ]),
  s('blockdev-backup: missing device, target and bitmap', ['blockdev-backup'], [
    L('blockdev-backup', { 'job-id': 'j', device: NOPE, target: 'n0', sync: 'full' }),
    L('blockdev-backup', { 'job-id': 'j', device: 'n0', target: NOPE, sync: 'full' }),
    L('blockdev-backup', { 'job-id': 'j', device: 'n0', target: 'n0f', sync: 'bitmap', bitmap: NOPE }),
  ], true),
  s('drive-backup: missing device and bitmap', ['drive-backup'], [
    L('drive-backup', { 'job-id': 'j', device: NOPE, target: '$DIR/b.qcow2', sync: 'full' }),
    L('drive-backup', { 'job-id': 'j', device: 'n0', target: '$DIR/t.qcow2', sync: 'incremental', bitmap: NOPE, mode: 'existing', format: 'qcow2' }),
  ]),
  // (block-dirty-bitmap-merge with an empty list kills QEMU 7.2: not in the table.)
  s('blockdev-create: a missing file node fails the job', ['blockdev-create'], [
    L('blockdev-create', { 'job-id': 'c', options: { driver: 'qcow2', file: NOPE, size: 1048576 } }, 4),
    L('blockdev-create', { 'job-id': 'c', options: { driver: 'nosuchdriver', size: 1 } }),
    L('blockdev-create', { 'job-id': 'c', options: { driver: 'qcow2', file: 'n0f', size: 1048576 } }),
    L('query-jobs'),
    L('job-dismiss', { id: 'c' }, 1),
  ], true),
  s('query-jobs and query-block-jobs with no jobs', ['query-jobs', 'query-block-jobs'], [L('query-jobs'), L('query-block-jobs')], true),
  ...(['block-job-cancel', 'block-job-pause', 'block-job-resume', 'block-job-complete'] as const).map((c) =>
    s(`${c}: missing job`, [c], [L(c, { device: NOPE }), L(c, { device: 'n0' })], true),
  ),
  ...(['block-job-finalize', 'block-job-dismiss'] as const).map((c) => s(`${c}: missing job`, [c], [L(c, { id: NOPE })], true)),
  s('block-job-set-speed: missing job', ['block-job-set-speed'], [L('block-job-set-speed', { device: NOPE, speed: 1 })], true),
  ...(['job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-finalize', 'job-dismiss'] as const).map((c) =>
    s(`${c}: missing job`, [c], [L(c, { id: NOPE }), L(c, { id: 'n0' })], true),
  ),
  s('a duplicate job id and a bad one', ['blockdev-backup', 'job-dismiss'], [
    L('blockdev-create', { 'job-id': 'c', options: { driver: 'file', filename: '$DIR/new.img', size: 0 } }, 5),
    addQcow2('t', 't.qcow2'),
    addQcow2('u', 'u.qcow2'),
    L('blockdev-backup', { 'job-id': 'c', device: 'u', target: 't', sync: 'full' }),
    L('blockdev-backup', { 'job-id': '1j', device: 'u', target: 't', sync: 'full' }),
    L('block-stream', { 'job-id': 'c', device: 'n0' }),
    L('query-jobs'),
    L('job-dismiss', { id: 'c' }, 1),
    del('t'),
    del('u'),
  ], true),
];

export const runningJobScripts: QmpScript[] = [
  s('query-block-jobs and query-jobs show a ready mirror; verbs it refuses', ['query-block-jobs', 'query-jobs', 'job-finalize', 'job-dismiss'], [
    addQcow2('u', 'u.qcow2'),
    addQcow2('t', 't.qcow2'),
    L('blockdev-mirror', { 'job-id': 'j', device: 'u', target: 't', sync: 'full' }, 4),
    L('query-block-jobs'),
    L('query-jobs'),
    L('job-finalize', { id: 'j' }),
    L('job-dismiss', { id: 'j' }),
    L('block-job-set-speed', { device: 'j', speed: -1 }),
    L('job-cancel', { id: 'j' }, 4),
    del('t'),
    del('u'),
  ], true),
];

export const mediaScripts: QmpScript[] = [
  s('blockdev-open-tray / -close-tray: missing device and id', ['blockdev-open-tray', 'blockdev-close-tray'], [
    L('blockdev-open-tray', { device: NOPE }),
    L('blockdev-open-tray', { id: NOPE }),
    L('blockdev-open-tray', {}),
    L('blockdev-close-tray', { device: NOPE }),
    L('blockdev-close-tray', { id: NOPE }),
    L('blockdev-open-tray', { device: 'n0' }),
  ]),
  s('eject: missing device and id', ['eject'], [L('eject', { device: NOPE }), L('eject', { id: NOPE }), L('eject', { device: 'n0' })]),
  s('blockdev-remove-medium / -insert-medium: missing id and node', ['blockdev-remove-medium', 'blockdev-insert-medium'], [
    L('blockdev-remove-medium', { id: NOPE }),
    L('blockdev-remove-medium', { id: 'd0' }),
    L('blockdev-insert-medium', { id: NOPE, 'node-name': 'n0' }),
    L('blockdev-insert-medium', { id: 'd0', 'node-name': NOPE }),
  ]),
  s('blockdev-change-medium: missing device and id', ['blockdev-change-medium'], [
    L('blockdev-change-medium', { device: NOPE, filename: '$DIR/t.qcow2' }),
    L('blockdev-change-medium', { id: NOPE, filename: '$DIR/t.qcow2' }),
    L('blockdev-change-medium', { device: 'n0', filename: '$DIR/t.qcow2' }),
  ]),
];

export const monitorScripts: QmpScript[] = [
  s('block_set_io_throttle: missing device and id, a node name', ['block_set_io_throttle'], [
    L('block_set_io_throttle', { device: NOPE, bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 }),
    L('block_set_io_throttle', { id: NOPE, bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 }),
    L('block_set_io_throttle', { device: 'n0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 }),
  ]),
  s('block_set_io_throttle on a device: limits in query-block, then off', ['block_set_io_throttle', 'query-block'], [
    L('block_set_io_throttle', { device: 'd0', bps: 1000000, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 500, group: 'tg' }),
    L('query-block'),
    L('block_set_io_throttle', { device: 'd0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 }),
    L('query-block'),
  ]),
  s('object-add / object-del: missing and duplicate objects', ['object-add', 'object-del'], [
    L('object-del', { id: NOPE }),
    L('object-add', { 'qom-type': 'throttle-group', id: 'g' }),
    L('object-add', { 'qom-type': 'throttle-group', id: 'g' }),
    L('object-del', { id: 'g' }),
    L('object-del', { id: 'g' }),
  ], true),
  s('qom-get / qom-set: missing object and property', ['qom-get', 'qom-set'], [
    L('qom-get', { path: `/objects/${NOPE}`, property: 'limits' }),
    L('qom-set', { path: `/objects/${NOPE}`, property: 'limits', value: {} }),
    L('object-add', { 'qom-type': 'throttle-group', id: 'g' }),
    L('qom-get', { path: '/objects/g', property: NOPE }),
    L('qom-set', { path: '/objects/g', property: NOPE, value: 1 }),
    L('object-del', { id: 'g' }),
  ], true),
  s('human-monitor-command: qemu-io on a missing device', ['human-monitor-command'], [
    L('human-monitor-command', { 'command-line': `qemu-io ${NOPE} "read 0 512"` }),
    L('human-monitor-command', { 'command-line': 'qemu-io d0 "read 0 512"' }),
  ]),
  s('stop, cont, query-status', ['stop', 'cont', 'query-status'], [L('stop', {}, 1), L('query-status'), L('cont', {}, 1), L('query-status')], true),
  s('query-version, query-commands, qmp_capabilities again', ['query-version', 'query-commands', 'qmp_capabilities'], [
    L('query-version'),
    L('query-commands', { nope: 1 }),
    L('qmp_capabilities'),
    L(NOPE),
  ]),
];

const withUT = (lines: ScriptLine[]): ScriptLine[] => [addQcow2('u', 'u.qcow2'), addQcow2('t', 't.qcow2'), ...lines, del('t'), del('u')];
/** A mirror from u that stays ready (and holds its nodes) until cancelled: created, running, ready, BLOCK_JOB_READY. */
const mirrorReady = (target: string) => L('blockdev-mirror', { 'job-id': 'j', device: 'u', target, sync: 'full' }, 4);
/** Cancelling a ready mirror: aborting, BLOCK_JOB_CANCELLED, concluded, null. */
const cancelReady = L('job-cancel', { id: 'j' }, 4);

export const permissionScripts: QmpScript[] = [
  s('mirror: no other writer on its target', ['blockdev-mirror'], withUT([
    mirrorReady('t'),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 't' }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 't', 'read-only': true }),
    human('t', 'write 0 512'),
    L('blockdev-del', { 'node-name': 't' }),
    L('block_resize', { 'node-name': 't', size: 8388608 }),
    cancelReady,
  ])),
  s('mirror: its source is neither resized nor deleted', ['blockdev-mirror'], withUT([
    mirrorReady('t'),
    L('blockdev-del', { 'node-name': 'u' }),
    L('block_resize', { 'node-name': 'u', size: 8388608 }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'z', file: 'u' }),
    L('blockdev-add', { driver: 'copy-on-read', 'node-name': 'c', file: 'u' }),
    del('c'),
    cancelReady,
  ])),
  s('a filter passes its users\' needs down: a mirror target under copy-on-read', ['blockdev-mirror', 'blockdev-add'], withUT([
    L('blockdev-add', { driver: 'copy-on-read', 'node-name': 'c', file: 't' }),
    mirrorReady('c'),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 't' }),
    L('blockdev-add', { driver: 'raw', 'node-name': 'x', file: 't' }),
    human('x', 'write 0 512'),
    del('x'),
    cancelReady,
    del('c'),
  ])),
  s('backup: no other writer on its source or target', ['blockdev-backup'], withUT([
    // sync=none copies only what the guest overwrites: the job runs until cancelled.
    L('blockdev-backup', { 'job-id': 'j', device: 'u', target: 't', sync: 'none' }, 2),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 't' }),
    L('blockdev-del', { 'node-name': 't' }),
    L('blockdev-del', { 'node-name': 'u' }),
    human('u', 'write 0 512'),
    human('t', 'read 0 512'),
    L('job-cancel', { id: 'j' }, 4),
  ])),
  s('stream: the nodes it copies from', ['block-stream', 'block-commit'], [
    addQcow2('u', 'u.qcow2'),
    addQcow2('t', 't.qcow2', { backing: 'u' }),
    // Without auto-finalize the job waits in pending, still holding its nodes.
    L('block-stream', { 'job-id': 'j', device: 't', 'auto-finalize': false }, 5),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 'u' }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 'uf' }),
    L('blockdev-del', { 'node-name': 'u' }),
    L('block_resize', { 'node-name': 'u', size: 8388608 }),
    L('block-commit', { 'job-id': 'k', device: 't' }),
    L('job-finalize', { id: 'j' }, 3),
    del('t'),
    del('u'),
  ]),
];

/** A chain t → u → v (v the base, u full of data) for the commit scripts; `chainDel` takes it away again. */
const chainVUT = [addQcow2('v', 'v.qcow2'), addQcow2('u', 'u.qcow2', { backing: 'v' }), addQcow2('t', 't.qcow2', { backing: 'u' })];
const chainDel = [del('t'), del('u'), del('v')];
/** What every job on the chain refuses alike: deleting or resizing its nodes, another job on its root. */
const chainBusy = [
  L('blockdev-del', { 'node-name': 'v' }),
  L('blockdev-del', { 'node-name': 'u' }),
  L('blockdev-del', { 'node-name': 't' }),
  L('block_resize', { 'node-name': 'v', size: 8388608 }),
  L('block_resize', { 'node-name': 'u', size: 8388608 }),
  L('block_resize', { 'node-name': 't', size: 8388608 }),
  L('block-commit', { 'job-id': 'k', device: 't' }),
  L('block-stream', { 'job-id': 'k', device: 't' }),
];

export const jobNodeScripts: QmpScript[] = [
  s('query-named-block-nodes, query-blockstats: the filter nodes of mirror, backup and stream, while they run', ['query-named-block-nodes', 'query-blockstats', 'blockdev-mirror', 'blockdev-backup', 'block-stream'], withUT([
    mirrorReady('t'),
    L('query-named-block-nodes'),
    L('query-blockstats', { 'query-nodes': true }),
    cancelReady,
    L('blockdev-backup', { 'job-id': 'j', device: 'u', target: 't', sync: 'none', 'filter-node-name': 'cbw' }, 2),
    L('query-named-block-nodes', { flat: true }),
    L('query-blockstats', { 'query-nodes': true }),
    L('job-cancel', { id: 'j' }, 4),
    L('query-named-block-nodes', { flat: true }),
    L('query-blockstats', { 'query-nodes': true }),
    del('t'),
    addQcow2('t', 't.qcow2', { backing: 'u' }),
    L('block-stream', { 'job-id': 'j', device: 't', 'auto-finalize': false }, 5),
    L('query-named-block-nodes'),
    L('query-blockstats', { 'query-nodes': true }),
    L('job-cancel', { id: 'j' }, 4),
  ])),
  s('backup with a sync bitmap: the job\'s own unnamed bitmaps and the bitmap\'s successor while it runs, the bitmap after a cancel', ['blockdev-backup', 'block-dirty-bitmap-add', 'query-named-block-nodes'], withUT([
    L('block-dirty-bitmap-add', { node: 'u', name: 'b', granularity: 131072 }),
    // At 1 byte/s the job copies its first run and sleeps: the copy bitmap on u holds the rest.
    L('blockdev-backup', { 'job-id': 'j', device: 'u', target: 't', sync: 'full', bitmap: 'b', 'bitmap-mode': 'on-success', speed: 1 }, 2),
    { ...L('query-named-block-nodes', { flat: true }), delayMs: 1200 },
    L('block-dirty-bitmap-remove', { node: 'u', name: 'b' }),
    L('job-cancel', { id: 'j' }, 4),
    L('query-named-block-nodes', { flat: true }),
    L('block-dirty-bitmap-remove', { node: 'u', name: 'b' }),
  ])),
  s('query-blockstats: a job filter above a device\'s node shows at device level when named, not when implicit', ['query-blockstats', 'blockdev-mirror'], [
    // sync none copies nothing: ready at once (created, running, ready, BLOCK_JOB_READY), n0 left as it was.
    L('blockdev-mirror', { 'job-id': 'j', device: 'd0', target: 'n0', sync: 'none', 'filter-node-name': 'mt' }, 4),
    L('query-blockstats'),
    L('query-blockstats', { 'query-nodes': true }),
    cancelReady,
    L('blockdev-mirror', { 'job-id': 'j', device: 'd0', target: 'n0', sync: 'none' }, 4),
    L('query-blockstats'),
    cancelReady,
    L('query-blockstats'),
  ]),
  s('commit: base written by the job alone, the layers it removes read by nobody else', ['block-commit'], [
    ...chainVUT,
    // Without auto-finalize the job waits in pending (created, running, waiting, pending, BLOCK_JOB_PENDING), holding its nodes.
    L('block-commit', { 'job-id': 'j', device: 't', 'top-node': 'u', 'base-node': 'v', 'auto-finalize': false }, 5),
    // Its commit_top filter between t and u, a level of t's chain.
    L('query-named-block-nodes'),
    L('query-blockstats', { 'query-nodes': true }),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 'u', 'read-only': true }),
    L('blockdev-add', { driver: 'copy-on-read', 'node-name': 'x', file: 'u' }),
    del('x'),
    human('v', 'write 0 512'),
    human('v', 'read 0 512'),
    L('blockdev-add', { driver: 'raw', 'node-name': 'x', file: 'v' }),
    human('x', 'write 0 512'),
    del('x'),
    ...chainBusy,
    L('job-cancel', { id: 'j' }, 4),
    ...chainDel,
  ]),
  s('active commit: base is its target, others may read and write it; the layers between read by nobody else', ['block-commit'], [
    ...chainVUT,
    // created, running, ready, BLOCK_JOB_READY; it holds its nodes until cancelled.
    L('block-commit', { 'job-id': 'j', device: 't' }, 4),
    // Its mirror_top filter above t.
    L('query-named-block-nodes', { flat: true }),
    L('query-blockstats', { 'query-nodes': true }),
    L('blockdev-add', { driver: 'raw', 'node-name': 'x', file: 'v' }),
    human('x', 'write 0 512'),
    del('x'),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 'u', 'read-only': true }),
    human('u', 'read 0 512'),
    L('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: 't', 'read-only': true }),
    ...chainBusy,
    cancelReady,
    ...chainDel,
  ]),
];

/** d0 back in the closed tray, as the group started (DEVICE_TRAY_MOVED once, for the close). */
const reinsertD0 = L('blockdev-change-medium', { id: 'cd0', filename: '$DIR/d0.qcow2', format: 'qcow2' }, 1);

/** A CD drive model on d0 (`-device ide-cd`): its tray moves, with DEVICE_TRAY_MOVED. QEMU needs `-machine pc` (and -S: no guest runs). */
export const trayScripts: QmpScript[] = [
  s('blockdev-open-tray / -close-tray move the tray', ['blockdev-open-tray', 'blockdev-close-tray'], [
    L('blockdev-open-tray', { device: 'd0' }, 1),
    L('blockdev-open-tray', { id: 'cd0' }),
    L('query-block'),
    L('blockdev-close-tray', { id: 'cd0' }, 1),
    L('blockdev-close-tray', { device: 'd0' }),
    L('query-block'),
  ]),
  s('eject opens the tray and takes the medium out', ['eject'], [
    L('eject', { id: 'cd0' }, 1),
    L('eject', { device: 'd0' }),
    L('query-block'),
    human('d0', 'read 0 512'),
    reinsertD0,
  ]),
  s('blockdev-remove-medium / -insert-medium want the tray open', ['blockdev-remove-medium', 'blockdev-insert-medium'], [
    L('blockdev-remove-medium', { id: 'cd0' }),
    L('blockdev-insert-medium', { id: 'cd0', 'node-name': 'n0' }),
    L('blockdev-open-tray', { id: 'cd0' }, 1),
    L('blockdev-insert-medium', { id: 'cd0', 'node-name': 'n0' }),
    L('blockdev-remove-medium', { id: 'cd0' }),
    L('blockdev-remove-medium', { id: 'cd0' }),
    L('blockdev-insert-medium', { id: 'cd0', 'node-name': NOPE }),
    L('blockdev-insert-medium', { id: 'cd0', 'node-name': 'n0' }),
    L('blockdev-insert-medium', { id: 'cd0', 'node-name': 'n0' }),
    L('query-block'),
    L('blockdev-remove-medium', { id: 'cd0' }),
    reinsertD0,
  ]),
  s('blockdev-change-medium opens the tray, swaps the medium and closes it', ['blockdev-change-medium'], [
    L('blockdev-change-medium', { device: 'd0', filename: '$DIR/nonexistent.qcow2', format: 'qcow2' }),
    L('blockdev-change-medium', { id: 'cd0', filename: '$DIR/t.qcow2', format: 'qcow2', 'read-only-mode': 'read-only' }, 2),
    L('query-block'),
    L('blockdev-change-medium', { device: 'd0', filename: '$DIR/d0.qcow2', format: 'qcow2', 'read-only-mode': 'read-write' }, 2),
    L('query-block'),
  ]),
];

/** Command-line additions per group: to both monitors, and to QEMU alone. */
export const groupExtras: Record<string, { options: string[]; qemuArgs: string[] }> = {
  tray: { options: ['-device', 'ide-cd,drive=d0,id=cd0'], qemuArgs: ['-machine', 'pc', '-S'] },
};

/**
 * The groups, each run in one QEMU process and one blocktab process (a
 * process pair costs seconds on a loaded machine, so every script that can
 * share the default command line shares one).
 */
export const scriptGroups: Record<string, QmpScript[]> = {
  // The job scripts that list nodes come first: later scripts write t and d0, whose host allocation (actual-size)
  // then differs by a few KiB between QEMU's qcow2 and blocktab's.
  main: [...jobNodeScripts, ...graphScripts, ...bitmapScripts, ...snapshotScripts, ...jobScripts, ...runningJobScripts, ...mediaScripts, ...monitorScripts, ...permissionScripts],
  tray: trayScripts,
};
