/**
 * The bundled CLI's compile cache (src/cli/compile-cache.ts): a second run
 * uses the data the first wrote (accepted by V8, so not rewritten); data V8
 * rejects is replaced; a cache that cannot be written, a temporary folder
 * others may write, and NODE_DISABLE_COMPILE_CACHE all leave no cache and
 * the same output. Every run's output is compared with qemu-img's.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliEntry, qemuImg, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('blocktab-ccache-');
qemuImg(['create', '-q', '-f', 'qcow2', path.join(dir, 'a.qcow2'), '64M']);
const want = qemuImg(['info', 'a.qcow2'], { cwd: dir });

/** `blocktab info a.qcow2` with only the given environment for the cache (HOME, XDG_CACHE_HOME, TMPDIR unset otherwise). */
function info(env: Record<string, string>): string {
  const base = { ...process.env };
  for (const k of ['HOME', 'XDG_CACHE_HOME', 'TMPDIR', 'NODE_DISABLE_COMPILE_CACHE', 'NODE_COMPILE_CACHE']) delete base[k];
  const r = spawnSync(process.execPath, [cliEntry, 'info', 'a.qcow2'], { cwd: dir, env: { ...base, ...env }, encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout;
}

/** Every file under `d`, with its bytes. */
function files(d: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  if (!fs.existsSync(d)) return out;
  for (const e of fs.readdirSync(d, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.set(path.join(e.parentPath, e.name), fs.readFileSync(path.join(e.parentPath, e.name)));
  }
  return out;
}

// Node 22+ keeps its own cache (module.enableCompileCache) in the same folder, in its own layout: these checks are for ours.
const ourCache = !(await import('node:module')).default.hasOwnProperty('enableCompileCache');

describe.runIf(ourCache)('compile cache', () => {
  it('is written by the first run, used as it is by the second, and replaced when V8 rejects it', () => {
    const xdg = path.join(dir, 'xdg');
    expect(info({ XDG_CACHE_HOME: xdg })).toBe(want);
    const first = files(xdg);
    expect(first.size).toBeGreaterThan(3);
    for (const f of first.keys()) expect(f).toMatch(/\/blocktab\/v8-[^/]+\/info\/[^/]+\.js\.\d+\.cache$/);
    expect(info({ XDG_CACHE_HOME: xdg })).toBe(want);
    expect(files(xdg)).toEqual(first);
    // Garbage in one entry: rejected, the output is the same, the entry is written again.
    const [victim, good] = [...first].sort((a, b) => b[1].length - a[1].length)[0]!;
    fs.writeFileSync(victim, Buffer.alloc(good.length, 0x5a));
    expect(info({ XDG_CACHE_HOME: xdg })).toBe(want);
    const again = files(xdg).get(victim)!;
    expect(again.equals(Buffer.alloc(good.length, 0x5a))).toBe(false);
  });

  it('convert, which raises V8\'s tier-up budget while it copies, leaves data the next convert accepts', () => {
    const xdg = path.join(dir, 'xdg-convert');
    const base = { ...process.env };
    for (const k of ['HOME', 'TMPDIR', 'NODE_DISABLE_COMPILE_CACHE', 'NODE_COMPILE_CACHE', 'NODE_OPTIONS']) delete base[k];
    const convert = (out: string) => {
      const r = spawnSync(process.execPath, [cliEntry, 'convert', '-O', 'raw', 'a.qcow2', out], { cwd: dir, env: { ...base, XDG_CACHE_HOME: xdg }, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(qemuImg(['compare', '-q', '-F', 'raw', 'a.qcow2', out], { cwd: dir })).toBe('');
      fs.rmSync(path.join(dir, out));
    };
    // An info first: its entries (qcow2's driver among them) are not the ones a convert reads.
    const r = spawnSync(process.execPath, [cliEntry, 'info', 'a.qcow2'], { cwd: dir, env: { ...base, XDG_CACHE_HOME: xdg }, encoding: 'utf8' });
    expect(r.stdout).toBe(want);
    const infoEntries = files(xdg);
    convert('c1.raw');
    const first = files(xdg);
    for (const [f, bytes] of infoEntries) expect(first.get(f)).toEqual(bytes);
    expect([...first.keys()].some((f) => /\/convert\/qcow2-[^/]+\.js\.\d+\.cache$/.test(f))).toBe(true);
    expect([...first.keys()].some((f) => /\/convert-[^/]+\.js\.\d+\.cache$/.test(f))).toBe(true);
    // Data made under other V8 flags would be rejected and written again (other bytes).
    convert('c2.raw');
    expect(files(xdg)).toEqual(first);
  });

  it('the launcher starts convert with the raised tier-up budget, whose entries are kept apart and accepted by the next run', () => {
    const xdg = path.join(dir, 'xdg-launcher');
    const base = { ...process.env };
    for (const k of ['HOME', 'TMPDIR', 'NODE_DISABLE_COMPILE_CACHE', 'NODE_COMPILE_CACHE', 'NODE_OPTIONS']) delete base[k];
    /** Runs `convert` as a user does (the bin as a program: its shell launcher) or with `node` on the bundle. */
    const convert = (out: string, how: 'launcher' | 'node', nodeFlags: string[] = []) => {
      const [cmd, args] = how === 'launcher' ? [cliEntry, [] as string[]] : [process.execPath, [...nodeFlags, cliEntry]];
      const r = spawnSync(cmd, [...args, 'convert', '-O', 'raw', 'a.qcow2', out], { cwd: dir, env: { ...base, XDG_CACHE_HOME: xdg }, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(qemuImg(['compare', '-q', '-F', 'raw', 'a.qcow2', out], { cwd: dir })).toBe('');
      fs.rmSync(path.join(dir, out));
    };
    const entries = (sub: string) => [...files(xdg)].filter(([f]) => f.split(path.sep).includes(sub));
    convert('l1.raw', 'launcher');
    const raised = entries('convert+budget540672');
    expect(raised.length).toBeGreaterThan(2);
    expect(entries('convert')).toEqual([]);
    // Made under the launcher's flags, accepted under them: not written again.
    convert('l2.raw', 'launcher');
    expect(entries('convert+budget540672')).toEqual(raised);
    // node on the bundle runs with V8's own budget: its entries are its own, the launcher's untouched.
    convert('n1.raw', 'node');
    expect(entries('convert').length).toBeGreaterThan(2);
    expect(entries('convert+budget540672')).toEqual(raised);
    // A budget of the user's on Node's command line keeps its own entries too.
    convert('o1.raw', 'node', ['--interrupt-budget=100000']);
    expect(entries('convert+budget100000').length).toBeGreaterThan(2);
    expect(entries('convert+budget540672')).toEqual(raised);
  });

  it('falls back to a private folder in TMPDIR, and never reads one others may write', () => {
    const tmp = path.join(dir, 'tmp');
    fs.mkdirSync(tmp);
    const uid = process.getuid!();
    expect(info({ TMPDIR: tmp })).toBe(want);
    const own = path.join(tmp, `blocktab-compile-cache-${uid}`);
    expect(fs.statSync(own).mode & 0o777).toBe(0o700);
    expect(files(own).size).toBeGreaterThan(3);

    const shared = path.join(dir, 'shared');
    fs.mkdirSync(path.join(shared, `blocktab-compile-cache-${uid}`), { recursive: true });
    fs.chmodSync(path.join(shared, `blocktab-compile-cache-${uid}`), 0o777);
    expect(info({ TMPDIR: shared })).toBe(want);
    expect(files(shared).size).toBe(0);
  });

  it('a cache that cannot be written, or NODE_DISABLE_COMPILE_CACHE, changes nothing but speed', () => {
    const blocker = path.join(dir, 'not-a-dir');
    fs.writeFileSync(blocker, '');
    expect(info({ XDG_CACHE_HOME: blocker, TMPDIR: blocker })).toBe(want);
    const xdg = path.join(dir, 'disabled');
    expect(info({ XDG_CACHE_HOME: xdg, NODE_DISABLE_COMPILE_CACHE: '1' })).toBe(want);
    expect(files(xdg).size).toBe(0);
  });
});
