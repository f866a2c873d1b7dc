/**
 * `blocktab qmp` against QEMU 7.2's own monitor: the same command line
 * (-drive / -blockdev) and the same input lines go to `qemu-system-x86_64
 * -machine none -nodefaults -qmp stdio` and to `blocktab qmp`, on twin
 * images made by qemu-img, and the transcripts must be equal after masking
 * what legitimately differs (timestamps, generated node names, the temp
 * directory, measured times, the version). The script covers the wire
 * protocol (negotiation, ids, malformed input), the block queries and
 * statistics (I/O through HMP's qemu-io, which accounts aio_* requests),
 * throttling limits and throttle-group objects, the run state, and quit.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, tmpDir } from '../helpers/qemu.js';
import { haveQemuSystem } from '../helpers/qmp.js';
import { hmpTextToStdout, normalizeTranscript, runMonitor } from '../helpers/qmp-monitor.js';

const j = (execute: string, args?: Record<string, unknown>, id?: unknown) =>
  JSON.stringify({ execute, ...(args ? { arguments: args } : {}), ...(id !== undefined ? { id } : {}) });
const hmp = (cmd: string) => j('human-monitor-command', { 'command-line': `qemu-io d0 "${cmd}"` });
const throttle = (extra: Record<string, unknown>) => j('block_set_io_throttle', { device: 'd0', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0, ...extra });

function script(dir: string): { line: string; replies?: number }[] {
  const L = (line: string, replies = 1) => ({ line, replies });
  return [
    // The wire protocol.
    L(j('query-block')),
    L(j('qmp_capabilities', { enable: ['nope'] })),
    L(j('qmp_capabilities')),
    L(j('qmp_capabilities')),
    L(j('no-such-command', undefined, 7)),
    L(j('query-status', undefined, { tag: ['x', 1] })),
    L('{"execute": "query-status", "foo": 1, "id": "s"}'),
    L('{"arguments": {}}'),
    L('{"execute": 42}'),
    L('{"execute": "query-status", "arguments": [1]}'),
    L('{"execute": "query-status", "id": 1, "id": 2}'),
    L('[1, 2]'),
    L('garbage'),
    L('{"execute":', 0),
    L('  "query-version"}'),
    L(`${j('query-status', undefined, 'a')} ${j('query-status', undefined, 'b')}`, 2),
    L(j('query-status', { verbose: true })),
    // The devices and nodes the command line made.
    L(j('query-block')),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('query-blockstats')),
    L(j('query-blockstats', { 'query-nodes': true })),
    // I/O through the device: aio_* requests are accounted, plain read/write are not.
    L(hmp('aio_write -P 1 0 64k')),
    L(hmp('aio_write -i 0 512')),
    L(hmp('aio_flush')), // QEMU's aio_write may still be in flight otherwise
    L(hmp('aio_read -P 1 0 4k')),
    L(hmp('aio_read -i 0 512')),
    L(hmp('aio_flush')),
    L(hmp('write -P 2 128k 4k')),
    L(hmp('read -P 2 128k 4k')),
    L(hmp('aio_read 1M 512')),
    L(hmp('aio_flush')),
    L(j('query-blockstats')),
    // Throttling: block_set_io_throttle's checks and what query-block shows.
    L(throttle({ bps: 100, bps_rd: 5 })),
    L(throttle({ bps: -1 })),
    L(throttle({ bps: 1e15 + 1 })),
    L(throttle({ bps: 10, bps_max: 5 })),
    L(throttle({ bps_max: 100 })),
    L(throttle({ bps: 10, bps_max: 50, bps_max_length: 0 })),
    L(throttle({ bps: 10, bps_max_length: 5 })),
    L(throttle({ iops_size: 512 })),
    L(j('block_set_io_throttle', { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 })),
    L(j('block_set_io_throttle', { device: 'nope', bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 })),
    L(throttle({ bps: 1e9, bps_max: 2e9, bps_max_length: 3, iops: 70000, iops_size: 4096, group: 'g1' })),
    L(j('query-block')),
    L(throttle({ bps_rd: 1e9, bps_rd_max: 5e9, iops_wr: 9000 })),
    L(j('query-block')),
    L(hmp('aio_read -P 1 0 4k')),
    L(throttle({})),
    L(j('query-block')),
    // throttle-group objects and the throttle filter.
    L(j('object-add', { 'qom-type': 'throttle-group', id: 'tg0', limits: { 'bps-total': 1000000, 'iops-total': 1000, 'iops-total-max': 2000 } })),
    L(j('object-add', { 'qom-type': 'throttle-group', id: 'tg0' })),
    L(j('object-add', { 'qom-type': 'throttle-group', id: 'tg1', limits: { 'bps-total': 1000, 'bps-read': 5 } })),
    L(j('object-add', { 'qom-type': 'throttle-group', id: 'tg2', limits: { 'iops-size': 4096 } })),
    L(j('object-add', { 'qom-type': 'throttle-group', id: 'tg3', limits: { nope: 1 } })),
    L(j('object-add', { 'qom-type': 'no-such-type', id: 'x' })),
    L(j('object-add', { 'qom-type': 'throttle-group', id: '0bad' })),
    L(j('qom-get', { path: '/objects/tg0', property: 'limits' })),
    L(j('qom-get', { path: '/objects/nope', property: 'limits' })),
    L(j('qom-get', { path: '/objects/tg0', property: 'nope' })),
    L(j('qom-set', { path: '/objects/tg0', property: 'limits', value: { 'bps-write': 77 } })),
    L(j('qom-set', { path: '/objects/tg0', property: 'limits', value: { 'bps-total-max': 3000000, 'bps-total-max-length': 4 } })),
    L(j('qom-get', { path: '/objects/tg0', property: 'limits' })),
    L(j('blockdev-add', { driver: 'throttle', 'node-name': 't0', file: 'r0' })),
    L(j('blockdev-add', { driver: 'throttle', 'node-name': 't0', 'throttle-group': 'nope', file: 'r0' })),
    L(j('blockdev-add', { driver: 'throttle', 'node-name': 't0', 'throttle-group': 'tg0', file: 'r0' })),
    L(j('object-del', { id: 'tg0' })),
    L(j('object-del', { id: 'nope' })),
    L(j('blockdev-del', { 'node-name': 't0' })),
    L(j('object-del', { id: 'tg0' })),
    L(j('qom-get', { path: '/objects/tg0', property: 'limits' })),
    // Removable media on a device without a device model (QEMU's -drive if=none): no tray, eject at once.
    L(j('blockdev-open-tray', { device: 'd1' })),
    L(j('blockdev-open-tray', { id: 'd1' })),
    L(j('blockdev-close-tray', { device: 'd1' })),
    L(j('blockdev-remove-medium', { id: 'd1' })),
    L(j('blockdev-insert-medium', { id: 'd1', 'node-name': 'r0' })),
    L(j('eject', {})),
    L(j('eject', { device: 'd1', id: 'd1' })),
    L(j('eject', { device: 'nope' })),
    L(j('eject', { device: 'd1' })),
    L(j('eject', { device: 'd1' })),
    L(j('query-block')),
    L(j('query-blockstats')),
    L(j('human-monitor-command', { 'command-line': 'qemu-io d1 "read 0 512"' })),
    L(j('block_set_io_throttle', { device: 'd1', bps: 1, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 })),
    L(j('blockdev-add', { driver: 'raw', 'node-name': 'x', file: 'd1' })),
    L(j('blockdev-change-medium', { device: 'd1', filename: `${dir}/m.raw`, format: 'raw', 'read-only-mode': 'read-only' })),
    L(j('query-block')),
    L(j('blockdev-change-medium', { device: 'd1', filename: `${dir}/nonexistent.raw`, format: 'raw' })),
    L(j('blockdev-change-medium', { device: 'd1', filename: `${dir}/m.raw`, format: 'raw', 'read-only-mode': 'read-write' })),
    L(j('block_resize', { device: 'd1', size: 2097152 })),
    L(j('human-monitor-command', { 'command-line': 'qemu-io d1 "write -P 3 1M 4k"' })),
    L(j('query-block')),
    // The run state.
    L(j('query-version')),
    L(j('stop')),
    L(j('query-status')),
    L(j('stop')),
    L(j('cont')),
    L(j('cont')),
    L(j('query-status')),
    L(j('quit', undefined, 'bye')),
  ];
}

/** HMP's output lines, in a stable order: QEMU's aio requests print when they complete, which may be after later commands' lines. */
const allText = (n: unknown) =>
  (n as { text: string }[])
    .map((s) => s.text)
    .join('')
    .split('\n')
    .filter((l) => l !== '')
    .sort();
const withoutText = (n: unknown) => (n as { text: string }[]).map(({ text: _t, ...rest }) => rest);

describe.runIf(haveQemuSystem())('blocktab qmp speaks QEMU 7.2 QMP', () => {
  it('the same script gives the same replies and events as qemu-system-x86_64 -qmp stdio', async () => {
    const dirs = { qemu: tmpDir('qmp-q-'), ours: tmpDir('qmp-b-') };
    for (const d of Object.values(dirs)) {
      qemuImg(['create', '-q', '-f', 'qcow2', path.join(d, 'd0.qcow2'), '2M']);
      qemuImg(['create', '-q', '-f', 'raw', path.join(d, 'r0.raw'), '1M']);
      qemuImg(['create', '-q', '-f', 'raw', path.join(d, 'd1.raw'), '1M']);
      qemuImg(['create', '-q', '-f', 'raw', path.join(d, 'm.raw'), '1M']);
    }
    const options = (d: string) => [
      '-drive',
      `if=none,id=d0,file=${path.join(d, 'd0.qcow2')},format=qcow2,stats-intervals.0=60,throttling.iops-total=100000`,
      '-drive',
      `if=none,id=d1,file=${path.join(d, 'd1.raw')},format=raw`,
      '-blockdev',
      JSON.stringify({ driver: 'raw', 'node-name': 'r0', file: { driver: 'file', 'node-name': 'r0-file', filename: path.join(d, 'r0.raw') } }),
    ];
    const [theirs, ours] = await Promise.all([
      runMonitor('qemu', options(dirs.qemu), script(dirs.qemu)),
      runMonitor('blocktab', options(dirs.ours), script(dirs.ours)).then(hmpTextToStdout),
    ]);
    expect(ours.exitCode).toBe(0);
    expect(theirs.exitCode).toBe(0);
    expect(Object.keys(ours.greeting as object)).toEqual(['QMP']);
    expect((ours.greeting as { QMP: { capabilities: unknown } }).QMP.capabilities).toEqual((theirs.greeting as { QMP: { capabilities: unknown } }).QMP.capabilities);
    const a = normalizeTranscript(ours, dirs.ours);
    const b = normalizeTranscript(theirs, dirs.qemu);
    const sa = withoutText(a);
    const sb = withoutText(b);
    // Every differing step at once: [ours, theirs] pairs.
    const diffs = sb.flatMap((step, i) => (JSON.stringify(sa[i]) === JSON.stringify(step) ? [] : [{ i, ours: sa[i], theirs: step }]));
    if (process.env.QMP_DIFF_FILE) fs.writeFileSync(process.env.QMP_DIFF_FILE, JSON.stringify(diffs, null, 1));
    expect(diffs).toEqual([]);
    expect(sa.length).toBe(sb.length);
    if (process.env.QMP_DIFF_FILE) fs.writeFileSync(process.env.QMP_DIFF_FILE + '.text', JSON.stringify([allText(a), allText(b)], null, 1));
    expect(allText(a)).toEqual(allText(b));
    // Lines on the wire are QEMU's compact JSON.
    expect(ours.raw.find((l) => l.startsWith('{"return": {}'))).toBeDefined();
    for (const d of Object.values(dirs)) fs.rmSync(d, { recursive: true, force: true });
  }, 60_000);
});
