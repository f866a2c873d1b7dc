/**
 * Drives a QMP monitor process on stdio line by line — real QEMU
 * (`qemu-system-x86_64 -machine none -nodefaults -qmp stdio`) or
 * `blocktab qmp` — with the same command line options and the same raw input
 * lines, and records a transcript per input line: the replies, the events
 * (timestamps kept apart) and any non-JSON text the process printed (QEMU's
 * HMP qemu-io writes its output there; blocktab returns it as the reply).
 * `normalizeTranscript` masks what legitimately differs.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { cliEntry, tmpDir } from './qemu.js';
import { transcriptMasker } from './qmp-normalize.js';

export interface MonitorStep {
  input: string;
  replies: unknown[];
  events: { event: string; data?: unknown }[];
  text: string;
  timestamps: { seconds: number; microseconds: number }[];
}

export interface MonitorRun {
  greeting: unknown;
  steps: MonitorStep[];
  exitCode: number | null;
  /** Every output line as written (for the wire-format checks). */
  raw: string[];
}

/**
 * `opts.qemuArgs` go to QEMU only (a later `-machine pc -S` for a device
 * model that needs a bus).
 *
 * Sends each input line and waits for `replies` replies to it (1 by
 * default; 0 for a partial line, n for n objects on one line) and, with
 * `events`, until that many events arrived too (a job's status changes
 * after the command's reply): no fixed waits, so both sides attribute each
 * event to the command that caused it. `delayMs` waits before sending a line.
 */
export async function runMonitor(
  which: 'qemu' | 'blocktab',
  options: string[],
  lines: { line: string; replies?: number; events?: number; delayMs?: number }[],
  opts: { cwd?: string; qemuArgs?: string[]; eventTimeoutMs?: number } = {},
): Promise<MonitorRun> {
  const [cmd, args] =
    which === 'qemu'
      ? ['qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', 'stdio', ...(opts.qemuArgs ?? []), ...options]]
      : [process.execPath, [cliEntry, 'qmp', ...options]];
  const p = spawn(cmd, args, { cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const rl = readline.createInterface({ input: p.stdout });
  const raw: string[] = [];
  const queue: string[] = [];
  let waiter: (() => void) | null = null;
  let closed = false;
  rl.on("line", (l) => {
    if (process.env.QMP_TRACE) console.log(which, "<", l.slice(0, 150));
    raw.push(l);
    queue.push(l);
    const w = waiter;
    waiter = null;
    w?.();
  });
  rl.on('close', () => {
    closed = true;
    waiter?.();
  });
  /** The next line; undefined at the end of output, or after `timeoutMs` without one (waiting for events that may not come). */
  const next = async (timeoutMs?: number): Promise<string | undefined> => {
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    while (queue.length === 0 && !closed) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((r) => {
        waiter = r;
        if (left !== Infinity) setTimeout(r, left);
      });
    }
    return queue.shift();
  };
  const first = await next();
  if (first === undefined) throw new Error(`${which} exited before its greeting: ${stderr}`);
  const greeting = JSON.parse(first) as unknown;
  const steps: MonitorStep[] = [];
  for (const { line, replies = 1, events = 0, delayMs = 0 } of lines) {
    // A pause before the line (a throttled job's first iteration to finish: its copy has no event to wait for).
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    const step: MonitorStep = { input: line, replies: [], events: [], text: '', timestamps: [] };
    if (process.env.QMP_TRACE) console.log(which, line.slice(0, 150));
    p.stdin.write(line + "\n");
    while (step.replies.length < replies || step.events.length < events) {
      // Replies always come; events a side does not send are waited for 5 s at most (eventTimeoutMs; the transcripts then differ).
      const l = await next(step.replies.length < replies ? undefined : (opts.eventTimeoutMs ?? 5000));
      if (l === undefined) break;
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(l) as Record<string, unknown>;
      } catch {
        step.text += l + '\n';
        continue;
      }
      if ('event' in m) {
        step.timestamps.push(m.timestamp as MonitorStep['timestamps'][number]);
        step.events.push('data' in m ? { event: m.event as string, data: m.data } : { event: m.event as string });
      } else step.replies.push(m);
    }
    // Output printed after the reply (QEMU's HMP text arrives before it) — take what is already there.
    while (queue.length > 0 && !queue[0]!.startsWith('{')) step.text += queue.shift()! + '\n';
    steps.push(step);
  }
  p.stdin.end();
  const exitCode = await new Promise<number | null>((r) => (p.exitCode !== null ? r(p.exitCode) : p.on('exit', (c) => r(c))));
  while (queue.length > 0) {
    const l = queue.shift()!;
    const last = steps[steps.length - 1];
    if (last) {
      try {
        const m = JSON.parse(l) as Record<string, unknown>;
        if ('event' in m) last.events.push({ event: m.event as string, data: m.data });
        else last.replies.push(m);
      } catch {
        last.text += l + '\n';
      }
    }
  }
  return { greeting, steps, exitCode, raw };
}

/**
 * Masks what differs legitimately (qmp-normalize.ts: generated node names,
 * the temp directory, time measurements, the version) and qemu-io's timing line.
 */
export function normalizeTranscript(run: MonitorRun, dir: string): unknown {
  const mask = transcriptMasker(dir);
  return run.steps.map((s) => ({
    input: s.input.split(dir).join('$DIR'),
    replies: mask(s.replies),
    events: mask(s.events),
    text: mask(s.text.replace(/; [\d.]+ sec \([^)]*\)/g, '; TIME')),
  }));
}

/**
 * blocktab returns HMP output as the reply; QEMU prints qemu-io's output and returns "". Moved to `text` to
 * compare. HMP's own errors ("Error: …") are QEMU's reply too, and stay.
 */
export function hmpTextToStdout(run: MonitorRun): MonitorRun {
  for (const s of run.steps) {
    if (!s.input.includes('human-monitor-command')) continue;
    for (const r of s.replies as { return?: unknown }[]) {
      if (typeof r.return === 'string' && !r.return.startsWith('Error: ')) {
        s.text += r.return;
        r.return = '';
      }
    }
  }
  return run;
}

/**
 * One script through QEMU and through `blocktab qmp`, each side in a fresh
 * directory of its own (`${prefix}-q-…`, `${prefix}-b-…`) that `makeImages`
 * fills, with `-drive` of `image` there as device d0 (`script` gets the
 * directory). Returns both runs and their normalised transcripts (`a`
 * blocktab's, `b` QEMU's), HMP text moved as `hmpTextToStdout` does and
 * `actual-size` masked to its type: the allocated size of a file written a
 * moment ago differs by the writers' layouts and the filesystem's delayed
 * allocation, which is never what these tests compare.
 */
export async function twinDriveTranscripts(
  prefix: string,
  makeImages: (dir: string) => void,
  image: string,
  script: (dir: string) => Parameters<typeof runMonitor>[2],
): Promise<{ ours: MonitorRun; theirs: MonitorRun; a: { replies: unknown[] }[]; b: { replies: unknown[] }[] }> {
  const dirs = { qemu: tmpDir(`${prefix}-q-`), ours: tmpDir(`${prefix}-b-`) };
  for (const d of Object.values(dirs)) makeImages(d);
  const options = (d: string) => ['-drive', `if=none,id=d0,file=${path.join(d, image)},format=qcow2`];
  const [theirs, ours] = await Promise.all([
    runMonitor('qemu', options(dirs.qemu), script(dirs.qemu)),
    runMonitor('blocktab', options(dirs.ours), script(dirs.ours)).then(hmpTextToStdout),
  ]);
  const noActualSize = (v: unknown) => JSON.parse(JSON.stringify(v, (k, x: unknown) => (k === 'actual-size' ? typeof x : x))) as { replies: unknown[] }[];
  return { ours, theirs, a: noActualSize(normalizeTranscript(ours, dirs.ours)), b: noActualSize(normalizeTranscript(theirs, dirs.qemu)) };
}
