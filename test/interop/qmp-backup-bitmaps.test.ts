/**
 * A backup job's own dirty bitmaps, against QEMU 7.2 itself: the same -drive
 * and QMP lines through `qemu-system-x86_64 -qmp stdio` and `blocktab qmp`,
 * transcripts compared after masking. While a backup runs (speed 1, so it
 * stops after its first run of clusters), QEMU lists, unnamed and not
 * recording:
 * - on the source node, block-copy's copy bitmap (what is left to copy:
 *   sync=full the whole disk, top what the top layer holds, incremental /
 *   bitmap the user's bitmap; a cluster the copy-before-write hook copied
 *   leaves it);
 * - on the copy-before-write filter node (a generated name, or
 *   filter-node-name; query-block's inserted node), its access bitmap (the
 *   whole disk) and its done bitmap (the clusters guest writes made it copy);
 * - with a sync bitmap, the bitmap's successor on the source (recording the
 *   guest's writes made meanwhile if the bitmap was enabled) while the bitmap
 *   itself is busy and frozen; at the end the bitmap gets the successor's bits
 *   (reclaim after a cancel with on-success) or becomes it (always).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { haveQemuSystem } from '../helpers/qmp.js';
import { twinDriveTranscripts } from '../helpers/qmp-monitor.js';

const j = (execute: string, args?: Record<string, unknown>) => JSON.stringify({ execute, ...(args ? { arguments: args } : {}) });
const L = (line: string, events = 0, delayMs = 0) => ({ line, events, delayMs });
const hmp = (cmd: string) => L(j('human-monitor-command', { 'command-line': `qemu-io d0 "${cmd}"` }));
/** Long enough for the first 1 MiB run on a loaded machine; both sides then sleep for days (speed 1). */
const SETTLE_MS = 1200;
const TARGETS = ['t1', 't2', 't3', 't4', 't5'];

function makeImages(d: string): void {
  qemuImg(['create', '-q', '-f', 'qcow2', path.join(d, 'base.qcow2'), '64M']);
  qemuIo(path.join(d, 'base.qcow2'), ['write -P 1 0 32M'], 'qcow2');
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', path.join(d, 'base.qcow2'), '-F', 'qcow2', path.join(d, 'top.qcow2'), '64M']);
  // The top layer holds 8 MiB: what sync=top copies.
  qemuIo(path.join(d, 'top.qcow2'), ['write -P 2 40M 8M'], 'qcow2');
  for (const t of TARGETS) qemuImg(['create', '-q', '-f', 'qcow2', path.join(d, `${t}.qcow2`), '64M']);
}

function script(d: string) {
  const target = (name: string) => j('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: path.join(d, `${name}.qcow2`) } });
  const backup = (t: string, extra: Record<string, unknown>) => L(j('blockdev-backup', { 'job-id': 'b', device: 'd0', target: t, speed: 1, ...extra }), 2);
  const cancel = L(j('block-job-cancel', { device: 'b' }), 4);
  const nodes = L(j('query-named-block-nodes', { flat: true }), 0, SETTLE_MS);
  return [
    L(j('qmp_capabilities')),
    ...TARGETS.map((t) => L(target(t))),
    L(j('block-dirty-bitmap-add', { node: 'd0', name: 'bm', granularity: 65536 })),
    hmp('write -P 3 40M 1M'),
    // full: the copy bitmap is the whole disk less the first run; a guest write copies its cluster first (done).
    backup('t1', { sync: 'full' }),
    L(j('query-block'), 0, SETTLE_MS),
    hmp('write -P 3 50M 64k'),
    L(j('query-named-block-nodes', { flat: true })),
    cancel,
    // top: only what the top layer holds.
    backup('t2', { sync: 'top' }),
    nodes,
    cancel,
    // incremental: the bitmap's clusters; a successor records the guest's write meanwhile; cancel reclaims.
    backup('t3', { sync: 'incremental', bitmap: 'bm' }),
    nodes,
    hmp('write -P 3 60M 64k'),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('query-block')),
    cancel,
    L(j('query-block')),
    // bitmap always, under a named filter: cancelled, the bitmap is the successor plus what was not copied.
    backup('t4', { sync: 'bitmap', bitmap: 'bm', 'bitmap-mode': 'always', 'filter-node-name': 'f' }),
    L(j('query-block'), 0, SETTLE_MS),
    L(j('query-named-block-nodes', { flat: true })),
    cancel,
    L(j('query-block')),
    // A disabled bitmap: its successor does not record either.
    L(j('block-dirty-bitmap-disable', { node: 'd0', name: 'bm' })),
    backup('t5', { sync: 'full', bitmap: 'bm', 'bitmap-mode': 'on-success' }),
    hmp('write -P 4 62M 64k'),
    L(j('query-named-block-nodes', { flat: true }), 0, SETTLE_MS),
    cancel,
    L(j('query-block')),
    L(j('quit'), 1),
  ];
}

/** The dirty-bitmaps lists of a query reply, by node name (query-block: by device, of its inserted node). */
function bitmapsOf(reply: any): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const x of reply.return as any[]) {
    if (x.device !== undefined) out[`${x.device}:${x.inserted.drv}`] = x.inserted['dirty-bitmaps'];
    else if (x['dirty-bitmaps']) out[`${String(x['node-name']).startsWith('#') ? '#' : x['node-name']}:${x.drv}`] = x['dirty-bitmaps'];
  }
  return out;
}

describe.runIf(haveQemuSystem())("a backup job's own dirty bitmaps, against qemu-system-x86_64", () => {
  it('copy bitmap on the source, done and access on the copy-before-write node, the sync bitmap\'s successor', async () => {
    const { ours, theirs, a, b } = await twinDriveTranscripts('qmpbb', makeImages, 'top.qcow2', script);
    expect(ours.exitCode).toBe(0);
    expect(theirs.exitCode).toBe(0);
    // At quit QEMU pauses and resumes nothing here (no job runs): the transcripts compare whole.
    for (let i = 0; i < b.length; i++) expect({ i, ...a[i] }).toEqual({ i, ...b[i] });
    expect(a.length).toBe(b.length);
    // What the transcripts say, independently of QEMU.
    const at = (i: number) => bitmapsOf(ours.steps[i]!.replies[0]);
    const bm = (count: number, extra: Record<string, unknown> = {}) => ({ count, granularity: 65536, recording: false, busy: false, persistent: false, ...extra });
    const MiB = 1024 * 1024;
    // full, after its first 1 MiB run: the filter's access bitmap is the whole disk, nothing done yet.
    expect(at(9)).toEqual({ 'd0:copy-before-write': [bm(64 * MiB), bm(0)] });
    // The guest's 64 KiB write at 50 MiB: copied before it landed, so done and out of the copy bitmap.
    expect(at(11)).toEqual({
      '#:copy-before-write': [bm(64 * MiB), bm(65536)],
      '#:qcow2': [bm(63 * MiB - 65536), { name: 'bm', ...bm(MiB + 65536, { recording: true }) }],
    });
    // top: 8 MiB of the top layer plus the 64 KiB written, less the first run.
    expect((at(14)['#:qcow2'] as any[])[0]).toEqual(bm(7 * MiB + 65536));
    // incremental: 17 clusters less a 1 MiB run; the successor records, the bitmap busy and frozen.
    expect(at(17)['#:qcow2']).toEqual([bm(65536), bm(0, { recording: true }), { name: 'bm', ...bm(MiB + 65536, { recording: true, busy: true }) }]);
    expect((at(19)['#:qcow2'] as any[])[1]).toEqual(bm(65536, { recording: true }));
    // Cancelled (on-success): the bitmap keeps its bits and gains the successor's.
    expect(at(22)).toEqual({ 'd0:qcow2': [{ name: 'bm', ...bm(MiB + 2 * 65536, { recording: true }) }] });
    // always, cancelled after 1 MiB: the successor (nothing written) plus the 2 clusters not copied.
    expect(at(24)).toEqual({ 'd0:copy-before-write': [bm(64 * MiB), bm(0)] });
    expect(at(27)).toEqual({ 'd0:qcow2': [{ name: 'bm', ...bm(2 * 65536, { recording: true }) }] });
    // Disabled: the successor records nothing of the guest's write.
    expect((at(31)['#:qcow2'] as any[]).slice(1)).toEqual([bm(0), { name: 'bm', ...bm(2 * 65536, { busy: true }) }]);
    expect(at(33)).toEqual({ 'd0:qcow2': [{ name: 'bm', ...bm(2 * 65536) }] });
  }, 60_000);
});
