/**
 * Runs a QMP script through real QEMU (`qemu-system-x86_64 -machine none
 * -nodefaults -qmp stdio`) and through an Engine, as transcripts that can be
 * compared: for each command, its reply and the events that arrived from the
 * moment it was sent until the next command (QEMU: a fixed settle time after
 * the reply; the Engine: until no job is busy). Timestamps are dropped, so
 * transcripts compare with toEqual.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as readline from 'node:readline';
import type { Engine } from '../../src/engine/engine.js';
import { QmpError } from '../../src/engine/qmp-error.js';
import { engineJobs } from '../../src/engine/commands/jobs.js';

export interface QmpCommandLine {
  execute: string;
  arguments?: Record<string, unknown>;
}

export interface QmpStep {
  cmd: string;
  reply: { return: unknown } | { error: { class: string; desc: string } };
  events: { event: string; data: Record<string, unknown> }[];
}

export function haveQemuSystem(): boolean {
  return spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).status === 0;
}

type Msg = Record<string, unknown>;

export async function qemuTranscript(cmds: QmpCommandLine[], opts: { cwd?: string; settleMs?: number } = {}): Promise<QmpStep[]> {
  const p = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', 'stdio'], {
    cwd: opts.cwd,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const rl = readline.createInterface({ input: p.stdout });
  const queue: Msg[] = [];
  let waiter: (() => void) | null = null;
  rl.on('line', (l) => {
    // QEMU prints some things on stdout beside QMP (the "Formatting …" line of drive-*, HMP qemu-io's output).
    if (!l.startsWith('{')) return;
    queue.push(JSON.parse(l) as Msg);
    const w = waiter;
    waiter = null;
    w?.();
  });
  const next = async (): Promise<Msg> => {
    while (queue.length === 0) await new Promise<void>((r) => (waiter = r));
    return queue.shift()!;
  };
  const settle = () => new Promise((r) => setTimeout(r, opts.settleMs ?? 200));
  await next(); // greeting
  const steps: QmpStep[] = [];
  /** Sends one command; events that arrive before its reply go to `events`. */
  const roundTrip = async (c: QmpCommandLine, events: QmpStep['events']): Promise<QmpStep['reply']> => {
    p.stdin.write(JSON.stringify(c) + '\n');
    for (;;) {
      const m = await next();
      if ('event' in m) events.push({ event: m.event as string, data: m.data as Record<string, unknown> });
      else return m as QmpStep['reply'];
    }
  };
  const send = async (c: QmpCommandLine): Promise<QmpStep> => {
    const step: QmpStep = { cmd: c.execute, reply: { return: {} }, events: [] };
    step.reply = await roundTrip(c, step.events);
    // Settle: wait, then until no block job is busy (a loaded machine may need longer than the wait);
    // these polls are not part of the transcript, the events they see are.
    await settle();
    for (let i = 0; i < 50; i++) {
      const r = (await roundTrip({ execute: 'query-block-jobs' }, step.events)) as { return?: { busy: boolean }[] };
      if (!r.return?.some((j) => j.busy)) break;
      await settle();
    }
    while (queue.length) {
      const m = queue.shift()!;
      step.events.push({ event: m.event as string, data: m.data as Record<string, unknown> });
    }
    return step;
  };
  await send({ execute: 'qmp_capabilities' });
  try {
    for (const c of cmds) steps.push(await send(c));
  } finally {
    p.stdin.write('{"execute":"quit"}\n');
    p.stdin.end();
    await new Promise((r) => p.on('exit', r));
  }
  return steps;
}

/** Waits until every job of the engine is idle (sleeping, paused, waiting for finalize, or over). */
async function settleEngine(engine: Engine): Promise<void> {
  const tick = () => new Promise((r) => setTimeout(r, 5));
  for (let quiet = 0; quiet < 3; ) {
    await tick();
    quiet = engineJobs(engine).some((j) => j.busy) ? 0 : quiet + 1;
  }
}

export async function engineTranscript(engine: Engine, cmds: QmpCommandLine[]): Promise<QmpStep[]> {
  const steps: QmpStep[] = [];
  let current: QmpStep['events'] = [];
  const off = engine.onEvent((e) => current.push({ event: e.event, data: JSON.parse(JSON.stringify(e.data)) as Record<string, unknown> }));
  try {
    for (const c of cmds) {
      current = [];
      const step: QmpStep = { cmd: c.execute, reply: { return: {} }, events: current };
      try {
        step.reply = { return: JSON.parse(JSON.stringify(await engine.execute(c.execute, c.arguments ?? {}))) as unknown };
      } catch (e) {
        if (!(e instanceof QmpError)) throw e;
        step.reply = { error: e.toQmp() };
      }
      await settleEngine(engine);
      steps.push(step);
    }
  } finally {
    off();
  }
  return steps;
}
