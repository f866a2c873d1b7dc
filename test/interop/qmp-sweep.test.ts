/**
 * The differential QMP script table (test/helpers/qmp-scripts.ts) against
 * QEMU 7.2 itself: each group of scripts runs in one `qemu-system-x86_64
 * -machine none -nodefaults -qmp stdio` and one `blocktab qmp` process, on
 * twin image directories, and every script's replies and events must be
 * equal after normalizeTranscript's masking. Most scripts are the missing
 * name sweep (a node, device, job, bitmap, snapshot or object that does not
 * exist gets QEMU's error class and description), one or more per command
 * blocktab implements; a test checks that every command in the engine's
 * table has a script.
 *
 * With QMP_RECORD=1 the QEMU transcripts are written to
 * test/fixtures/qmp-scripts.json, which the browser suite compares the
 * worker's Engine.execute with; without it, the recording must still be
 * what QEMU answers (so it cannot go stale).
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { haveQemuSystem } from '../helpers/qmp.js';
import { hmpTextToStdout, normalizeTranscript, runMonitor } from '../helpers/qmp-monitor.js';
import { GROUP_DATA, GROUP_IMAGES, groupExtras, groupOptions, scriptGroups, type QmpScript } from '../helpers/qmp-scripts.js';
import { maskSnapshotTimes } from '../helpers/qmp-normalize.js';
import { qmpCommands } from '../../src/engine/commands/index.js';

const RECORDING = path.join(import.meta.dirname, '../fixtures/qmp-scripts.json');

/**
 * QEMU pauses jobs around every drained section (most graph commands drain): a running job reports paused then
 * running, a ready one standby then ready. blocktab has no drained sections; those pairs are dropped on both sides.
 */
function dropDrainPauses(steps: Step[]): Step[] {
  const PAIRS: Record<string, string> = { paused: 'running', standby: 'ready' };
  for (const st of steps) {
    const ev = st.events as { event: string; data: { id?: string; status?: string } }[];
    const out: typeof ev = [];
    for (let i = 0; i < ev.length; i++) {
      const a = ev[i]!;
      const b = ev[i + 1];
      const pair = a.event === 'JOB_STATUS_CHANGE' && b?.event === 'JOB_STATUS_CHANGE' && b.data.id === a.data.id && PAIRS[a.data.status ?? ''] === b.data.status;
      if (pair && !st.input.includes('"job-pause"') && !st.input.includes('"block-job-pause"')) i++;
      else out.push(a);
    }
    st.events = out;
  }
  return steps;
}

/**
 * actual-size is the host file's allocated size (st_blocks). Right after a write, ext4 still counts blocks it
 * reserved for delayed allocation, so equal files report sizes 4 KiB apart from run to run. The node lists the job
 * scripts take while a job writes keep it as "allocated" (in the comparison only: the recording keeps QEMU's).
 */
function maskActualSize(st: Step): Step {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (!v || typeof v !== 'object') return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === 'actual-size' && typeof x === 'number' ? 'allocated' : walk(x)]));
  };
  return st.input.includes('"query-named-block-nodes"') ? { ...st, replies: walk(st.replies) } : st;
}

type Step = { input: string; replies: unknown; events: unknown; text: string };

/** Runs a group on one side; the normalised steps, cut back into scripts. */
async function runGroup(which: 'qemu' | 'blocktab', group: string, scripts: QmpScript[]): Promise<Record<string, Step[]>> {
  const dir = tmpDir(`qmps-${which[0]}-`);
  try {
    for (const [img, size] of Object.entries(GROUP_IMAGES)) qemuImg(['create', '-q', '-f', 'qcow2', path.join(dir, img), size]);
    for (const [img, cmd] of Object.entries(GROUP_DATA)) qemuIo(path.join(dir, img), [cmd], 'qcow2');
    const lines = scripts.flatMap((sc) => sc.lines.map((l) => ({ line: l.line.split('$DIR').join(dir), events: l.events ?? 0, delayMs: l.delayMs ?? 0 })));
    lines.push({ line: '{"execute": "quit"}', events: 1 });
    const extra = groupExtras[group] ?? { options: [], qemuArgs: [] };
    let run = await runMonitor(which, [...groupOptions(dir), ...extra.options], [{ line: '{"execute": "qmp_capabilities"}', events: 0 }, ...lines], {
      qemuArgs: extra.qemuArgs,
      // Every line's events are expected (checked below): wait for them as long as a loaded machine needs.
      eventTimeoutMs: 60_000,
    });
    // HMP output: QEMU prints qemu-io's and replies with its errors; blocktab replies with both. Compared as text.
    run = hmpTextToStdout(run);
    expect(run.exitCode).toBe(0);
    // A line's expected events all came (a short count would cost a 5 s wait and hide an event that never came).
    const waited = run.steps.flatMap((st, i) => (i > 0 && i <= lines.length && st.events.length < lines[i - 1]!.events ? [{ which, line: st.input, got: st.events.length, want: lines[i - 1]!.events }] : []));
    expect(waited).toEqual([]);
    const steps = dropDrainPauses((maskSnapshotTimes(normalizeTranscript(run, dir)) as Step[]).slice(1));
    const out: Record<string, Step[]> = {};
    let at = 0;
    for (const sc of scripts) {
      out[sc.name] = steps.slice(at, at + sc.lines.length);
      at += sc.lines.length;
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const recorded: Record<string, Record<string, Step[]>> = {};

describe.runIf(haveQemuSystem())('the QMP script table against qemu-system-x86_64', () => {
  for (const [group, scripts] of Object.entries(scriptGroups)) {
    it(`${group}: ${scripts.length} scripts, replies and events as QEMU 7.2`, async () => {
      const [theirs, ours] = await Promise.all([runGroup('qemu', group, scripts), runGroup('blocktab', group, scripts)]);
      recorded[group] = theirs;
      const diffs = scripts.flatMap((sc) =>
        theirs[sc.name]!.flatMap((step, i) =>
          JSON.stringify(maskActualSize(ours[sc.name]![i]!)) === JSON.stringify(maskActualSize(step)) ? [] : [{ script: sc.name, ours: ours[sc.name]![i], theirs: step }],
        ),
      );
      if (process.env.QMP_DIFF_FILE) {
        fs.writeFileSync(`${process.env.QMP_DIFF_FILE}.${group}`, JSON.stringify(diffs, null, 1));
        fs.writeFileSync(`${process.env.QMP_DIFF_FILE}.${group}.all`, JSON.stringify({ ours, theirs }, null, 1));
      }
      expect(diffs).toEqual([]);
    });
  }
});

describe.runIf(haveQemuSystem())('the recorded QEMU replies', () => {
  it('the browser suite\'s recording is what QEMU answers', () => {
    const browserOnly = (g: Record<string, Step[]>, scripts: QmpScript[]) =>
      Object.fromEntries(scripts.filter((sc) => sc.browser).map((sc) => [sc.name, g[sc.name]!.map(({ input, replies, events }) => ({ input, replies, events }))]));
    const now = Object.fromEntries(Object.entries(scriptGroups).map(([g, scripts]) => [g, browserOnly(recorded[g]!, scripts)]));
    if (process.env.QMP_RECORD) fs.writeFileSync(RECORDING, JSON.stringify(now, null, 1) + '\n');
    expect(JSON.parse(fs.readFileSync(RECORDING, 'utf8'))).toEqual(now);
  });
});

describe('the QMP script table covers every command', () => {
  it('at least 60 scripts; every command in the engine table (and the monitor\'s own) has one', () => {
    const scripts = Object.values(scriptGroups).flat();
    const commands = [...Object.keys(qmpCommands), 'human-monitor-command', 'qmp_capabilities'];
    const covered = new Set(scripts.flatMap((sc) => sc.covers));
    expect(commands.filter((c) => !covered.has(c))).toEqual([]);
    expect(scripts.length).toBeGreaterThanOrEqual(60);
    expect(new Set(scripts.map((sc) => sc.name)).size).toBe(scripts.length);
    // Every script's lines are about the commands it says it covers (or the set-up it needs).
    for (const sc of scripts) {
      const used = new Set(sc.lines.map((l) => (JSON.parse(l.line) as { execute: string }).execute));
      for (const c of sc.covers) expect({ script: sc.name, covers: c, used: used.has(c) }).toEqual({ script: sc.name, covers: c, used: true });
    }
  });
});
