/**
 * Test helpers shared by every suite that talks to QEMU's tools or the built CLI.
 * Images are made at test time in a fresh temp directory (never committed).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const tmpDirs = new Set<string>();
let cleanupHooked = false;

/**
 * A fresh temporary directory, removed at process exit (one exit hook for all of them).
 * Under vitest it lives in the run's own folder (BLOCKTAB_TEST_TMP, made by vitest.config.ts),
 * which the main process removes when it exits: a worker vitest kills never runs its exit hook.
 */
export function tmpDir(prefix = 'blocktab-'): string {
  const base = process.env.BLOCKTAB_TEST_TMP ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const d = fs.mkdtempSync(path.join(base, prefix));
  tmpDirs.add(d);
  if (!cleanupHooked) {
    cleanupHooked = true;
    process.once('exit', () => {
      for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
    });
  }
  return d;
}

/** Runs qemu-img; throws with its stderr when it fails. */
export function qemuImg(args: string[], opts: { cwd?: string } = {}): string {
  return execFileSync('qemu-img', args, { cwd: opts.cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * `qemu-img create -f luks …`, tried again when qemu-img gives up sizing
 * PBKDF2: it times 32768 iterations on the thread's CPU clock and fails
 * ("Unable to get accurate CPU usage") when that clock reads 0 ms, which
 * happens now and then on machines with a coarse clock.
 */
export function qemuImgCreateLuks(args: string[], opts: { cwd?: string } = {}): string {
  const r = qemuImgRunLuks(args, opts);
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** qemuImgRun for commands that time PBKDF2 (LUKS create, measure): tried again while qemu-img cannot read the CPU clock well enough. */
export function qemuImgRunLuks(args: string[], opts: { cwd?: string } = {}): { status: number; stdout: string; stderr: string } {
  for (let attempt = 1; ; attempt++) {
    const r = qemuImgRun(args, opts);
    if (!/Unable to get accurate CPU usage/.test(r.stderr) || attempt === 10) return r;
  }
}

/** Runs qemu-img and returns status, stdout and stderr without throwing. */
export function qemuImgRun(args: string[], opts: { cwd?: string } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-img', args, { cwd: opts.cwd, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs qemu-io commands on an image (`-f fmt` when given). */
export function qemuIo(file: string, cmds: string[], fmt?: string, opts: { cwd?: string } = {}): string {
  const args = [...(fmt ? ['-f', fmt] : []), ...cmds.flatMap((c) => ['-c', c]), file];
  return execFileSync('qemu-io', args, { cwd: opts.cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The CLI as installed: package.json's bin (the bundle in dist/bin/, made by `npm run build`, which `npm test` runs first). */
export const cliEntry = path.join(repoRoot, (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { bin: { blocktab: string } }).bin.blocktab);

/** Runs the built CLI (cliEntry). */
export function blocktab(args: string[], opts: { cwd?: string; input?: string } = {}): { status: number; stdout: string; stderr: string } {
  const main = cliEntry;
  if (!fs.existsSync(main)) throw new Error(`${main} is missing: run 'npm run build' first`);
  const r = spawnSync(process.execPath, [main, ...args], { cwd: opts.cwd, encoding: 'utf8', input: opts.input, maxBuffer: 256 * 1024 * 1024 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Deterministic pseudo-random bytes (xorshift32), for seeded workloads. */
export { seededBytes } from './random.js';
