/**
 * A mirror's filter node and throttled progress, against QEMU 7.2 itself:
 * the same -drive and QMP lines through `qemu-system-x86_64 -qmp stdio` and
 * `blocktab qmp`, transcripts compared after masking. Checks that
 * - one throttled mirror iteration copies a whole run of dirty chunks up to
 *   buf-size (16 MiB by default, 4 MiB when asked), so query-block-jobs shows
 *   QEMU's offset at speed 1;
 * - a filter named with filter-node-name is what query-block shows inserted
 *   (drv mirror_top, the source's image as its backing-image) and what
 *   device-level query-blockstats names, with the wr_highest_offset of the
 *   writes that passed it; an implicit filter is looked through;
 * - a running mirror's own unnamed dirty bitmap is listed on the source node
 *   (query-block), as QEMU lists it;
 * - quit with a job sleeping under a speed limit cancels it and exits.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { haveQemuSystem } from '../helpers/qmp.js';
import { twinDriveTranscripts } from '../helpers/qmp-monitor.js';

const j = (execute: string, args?: Record<string, unknown>) => JSON.stringify({ execute, ...(args ? { arguments: args } : {}) });
const L = (line: string, events = 0, delayMs = 0) => ({ line, events, delayMs });
/** Long enough for a 16 MiB copy on a loaded machine; both sides then sleep for days (speed 1). */
const SETTLE_MS = 1500;

function makeImages(d: string): void {
  qemuImg(['create', '-q', '-f', 'qcow2', path.join(d, 'src.qcow2'), '64M']);
  // 40 MiB of data: a full mirror's first run is 16 MiB of it.
  qemuIo(path.join(d, 'src.qcow2'), ['write -P 1 0 40M'], 'qcow2');
  for (const t of ['t1', 't2', 't3']) qemuImg(['create', '-q', '-f', 'qcow2', path.join(d, `${t}.qcow2`), '64M']);
}

function script(d: string) {
  const target = (name: string) => j('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: path.join(d, `${name}.qcow2`) } });
  return [
    L(j('qmp_capabilities')),
    L(target('t1')),
    L(j('blockdev-mirror', { 'job-id': 'm1', device: 'd0', target: 't1', sync: 'full', speed: 1, 'filter-node-name': 'mf' }), 2),
    L(j('query-block-jobs'), 0, SETTLE_MS),
    L(j('human-monitor-command', { 'command-line': 'qemu-io d0 "write -P 7 50M 64k"' })),
    L(j('query-blockstats')),
    L(j('query-blockstats', { 'query-nodes': true })),
    L(j('query-block')),
    L(j('block-job-cancel', { device: 'm1' }), 4),
    L(target('t2')),
    L(j('blockdev-mirror', { 'job-id': 'm2', device: 'd0', target: 't2', sync: 'full', speed: 1, 'buf-size': 4 * 1024 * 1024 }), 2),
    L(j('query-block-jobs'), 0, SETTLE_MS),
    L(j('human-monitor-command', { 'command-line': 'qemu-io d0 "write -P 8 60M 4k"' })),
    L(j('query-blockstats')),
    L(j('query-block')),
    L(j('block-job-cancel', { device: 'm2' }), 4),
    L(target('t3')),
    // write-blocking: QEMU's bitmap does not record (the job marks and clears it around each guest write).
    L(j('blockdev-mirror', { 'job-id': 'm3', device: 'd0', target: 't3', sync: 'full', speed: 1, 'buf-size': 4 * 1024 * 1024, 'copy-mode': 'write-blocking' }), 2),
    L(j('query-named-block-nodes', { flat: true }), 0, SETTLE_MS),
    L(j('quit'), 1),
  ];
}

describe.runIf(haveQemuSystem())('a mirror filter and throttled mirror progress, against qemu-system-x86_64', () => {
  it('query-block-jobs offsets at speed 1, query-block and query-blockstats with a named and an implicit filter, quit with a sleeping job', async () => {
    const { ours, theirs, a, b } = await twinDriveTranscripts('qmpf', makeImages, 'src.qcow2', script);
    expect(ours.exitCode).toBe(0);
    expect(theirs.exitCode).toBe(0);
    // At quit QEMU drains every node before cancelling its jobs, so a job first pauses and resumes; blocktab cancels
    // without a drain. That pair is dropped from QEMU's quit step; the cancel's own events must match.
    const quit = (b as any)[19] as { events: { event: string; data?: { status?: string } }[] };
    const drained = quit.events.findIndex((e) => e.data?.status === 'paused');
    if (drained >= 0 && quit.events[drained + 1]?.data?.status === 'running') quit.events.splice(drained, 2);
    for (let i = 0; i < b.length; i++) expect({ i, ...a[i] }).toEqual({ i, ...b[i] });
    expect(a.length).toBe(b.length);
    // What the transcripts say, independently of QEMU: 16 MiB, then 4 MiB copied before the speed limit's sleep;
    // the named filter inserted, counting the guest write that went through it.
    const ret = (i: number) => (ours.steps[i]!.replies[0] as { return: any }).return;
    expect(ret(3)[0].offset).toBe(16 * 1024 * 1024);
    expect(ret(11)[0].offset).toBe(4 * 1024 * 1024);
    expect(ret(7)[0].inserted).toMatchObject({ 'node-name': 'mf', drv: 'mirror_top', backing_file_depth: 1 });
    expect(ret(5)[0]).toMatchObject({ device: 'd0', 'node-name': 'mf', stats: { wr_highest_offset: 50 * 1024 * 1024 + 65536 } });
    expect(ret(14)[0].inserted.drv).toBe('qcow2');
    // The running mirror's own bitmap, unnamed, on the source (as QEMU's query-block lists it): the whole 64 MiB
    // disk dirty at the start (the target does not read as zeros), less the 4 MiB copied, the guest's 4 KiB write
    // marked again; under a named filter, the filter is what query-block shows, without bitmaps.
    expect(ret(14)[0].inserted['dirty-bitmaps']).toEqual([{ count: 60 * 1024 * 1024, granularity: 65536, recording: true, busy: false, persistent: false }]);
    expect(ret(7)[0].inserted['dirty-bitmaps']).toBeUndefined();
    const src = (ret(18) as any[]).find((n) => n.drv === 'qcow2' && String(n['node-name']).startsWith('#') && n.file.endsWith('src.qcow2'));
    expect(src['dirty-bitmaps']).toEqual([{ count: 60 * 1024 * 1024, granularity: 65536, recording: false, busy: false, persistent: false }]);
  }, 60_000);
});
