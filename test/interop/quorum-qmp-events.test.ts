/**
 * QMP blockdev-add of a quorum against QEMU 7.2's monitor: the node opens
 * from its `children` list, and reads through it send QUORUM_REPORT_BAD for
 * a child that disagrees and QUORUM_FAILURE when no version reaches the
 * vote threshold, with QEMU's data, on the monitor's event channel.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { qemuImg, qemuIo, repoRoot, tmpDir } from '../helpers/qemu.js';
import { haveQemuSystem, qemuTranscript, type QmpCommandLine } from '../helpers/qmp.js';

const dir = tmpDir('blocktab-quorum-qmp-');

function quorum(d: string, name: string, threshold: number, extra: Record<string, unknown> = {}): QmpCommandLine {
  const child = (i: number) => ({ driver: 'raw', 'node-name': `${name}-c${i}`, file: { driver: 'file', filename: path.join(d, `c${i}.raw`) } });
  return { execute: 'blockdev-add', arguments: { driver: 'quorum', 'node-name': name, 'vote-threshold': threshold, children: [0, 1, 2].map(child), ...extra } };
}

const hmpIo = (node: string, cmd: string): QmpCommandLine => ({ execute: 'human-monitor-command', arguments: { 'command-line': `qemu-io ${node} "${cmd}"` } });

function images(d: string): void {
  for (let i = 0; i < 3; i++) {
    const f = path.join(d, `c${i}.raw`);
    qemuImg(['create', '-q', '-f', 'raw', f, '1M']);
    qemuIo(f, ['write -P 0x11 0 64k'], 'raw');
  }
  // Child 1 disagrees on the first sector; child 2 on 8 KiB further on.
  qemuIo(path.join(d, 'c1.raw'), ['write -P 0x22 0 512'], 'raw');
  qemuIo(path.join(d, 'c2.raw'), ['write -P 0x33 8192 4096'], 'raw');
}

describe.skipIf(!haveQemuSystem())('quorum events over QMP against QEMU', () => {
  it('QUORUM_REPORT_BAD and QUORUM_FAILURE, in QEMU\'s order and data', async () => {
    const script = (d: string): QmpCommandLine[] => [
      quorum(d, 'q2', 2),
      hmpIo('q2', 'read 0 4k'),
      hmpIo('q2', 'read 4k 12k'),
      hmpIo('q2', 'read 32k 4k'),
      { execute: 'blockdev-del', arguments: { 'node-name': 'q2' } },
      quorum(d, 'q3', 3),
      hmpIo('q3', 'read 0 16k'),
      { execute: 'blockdev-add', arguments: { driver: 'quorum', 'node-name': 'bad', children: [] } },
    ];
    const qd = path.join(dir, 'qemu');
    const ed = path.join(dir, 'ours');
    for (const d of [qd, ed]) {
      fs.mkdirSync(d, { recursive: true });
      images(d);
    }
    const theirs = await qemuTranscript(script(qd), { cwd: qd, settleMs: 50 });
    // blocktab's monitor (human-monitor-command lives there): the same lines on its stdin.
    const input = [{ execute: 'qmp_capabilities' }, ...script(ed), { execute: 'quit' }].map((c) => JSON.stringify(c)).join('\n') + '\n';
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist/bin/blocktab.js'), 'qmp'], { input, encoding: 'utf8', cwd: ed });
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const ourEvents = lines.filter((m) => 'event' in m && m.event !== 'SHUTDOWN').map((m) => ({ event: m.event, data: m.data }));
    const theirEvents = theirs.flatMap((st) => st.events);
    expect(ourEvents).toEqual(theirEvents);
    expect(theirEvents.map((e) => e.event)).toEqual(['QUORUM_REPORT_BAD', 'QUORUM_REPORT_BAD', 'QUORUM_FAILURE']);
    // The replies other than HMP's (which QEMU prints on stdout): the last blockdev-add is refused alike.
    const ourReplies = lines.filter((m) => 'return' in m || 'error' in m).slice(1, -1);
    const theirReplies = theirs.map((st) => st.reply);
    expect(ourReplies.filter((_, k) => script(ed)[k]!.execute !== 'human-monitor-command')).toEqual(theirReplies.filter((_, k) => theirs[k]!.cmd !== 'human-monitor-command'));
  });
});
