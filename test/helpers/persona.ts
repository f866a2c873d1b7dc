/**
 * The built CLI speaking as QEMU's tools: links named `qemu-img` and
 * `qemu-io` to it (src/cli/progname.ts), run with Node, as QEMU's iotests
 * and scripts written for QEMU call them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { cliEntry, tmpDir } from './qemu.js';

let linkDir: string | undefined;

function link(tool: 'qemu-img' | 'qemu-io'): string {
  if (!fs.existsSync(cliEntry)) throw new Error(`${cliEntry} is missing: run 'npm run build' first`);
  linkDir ??= tmpDir('blocktab-persona-');
  const p = path.join(linkDir, tool);
  if (!fs.existsSync(p)) fs.symlinkSync(cliEntry, p);
  return p;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as `tool` (a link of that name). */
export function persona(tool: 'qemu-img' | 'qemu-io', args: string[], opts: { cwd?: string } = {}): RunResult {
  const r = spawnSync(process.execPath, [link(tool), ...args], { cwd: opts.cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs Debian's `tool` without throwing. */
export function qemuTool(tool: 'qemu-img' | 'qemu-io', args: string[], opts: { cwd?: string } = {}): RunResult {
  const r = spawnSync(tool, args, { cwd: opts.cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** qemu-io's output with the timing lines (which differ run to run) reduced to their shape. */
export function filterTimings(out: string): string {
  return out.replace(/^(.+?), (\d+) ops; .*$/gm, "$1, $2 ops; TIMING");
}
