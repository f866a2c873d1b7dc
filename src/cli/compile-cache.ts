/**
 * A V8 code cache for the bundled CLI (dist/bin/), so that a command does not
 * parse and compile the same JavaScript at every start-up. Compiling the
 * engine's chunks was about half of what `blocktab info` cost beyond a bare
 * `node` (measured with callgrind: 276 M instructions without the cache,
 * 161 M with it, 84 M for an empty script).
 *
 * Node 22.1+ has this built in (module.enableCompileCache), used when present.
 * On Node 20 the bundle is CommonJS (vite.cli.config.ts) and this hooks
 * Module.prototype._compile for the bundle's own files only: each is compiled
 * as a vm.Script with the data the last run left (such a script has no
 * import(): Node 20 loses the callback for cached scripts, so the bundle
 * turns every import() into require()). Where there was none, or
 * V8 rejected it (another V8 version or other flags), fresh data is written
 * when the process exits, so it holds every function this run compiled, not
 * just the top level.
 *
 * Where: $XDG_CACHE_HOME/blocktab (else ~/.cache/blocktab), or when that
 * cannot be made, a directory of this user's under os.tmpdir() that nobody
 * else can write (cached bytecode runs as code: a directory others can
 * write is never read). One subdirectory per V8 version and bundle folder,
 * and in it one per command (commandKey);
 * chunk names carry a content hash and entries are keyed by source length as
 * well, and writing new entries removes those of chunks that are gone.
 * Any failure (no home, read-only or full disk) only means no cache, never
 * an error. NODE_DISABLE_COMPILE_CACHE=1 turns it off, as it does Node's.
 */
import Module, { createRequire } from 'node:module';
import * as vm from 'node:vm';
import * as path from 'node:path';
import * as os from 'node:os';
import { flagsKey, underUsualFlags } from './tier-up.js';

// require, not import: the ESM facade of node:fs loads the streams stack (see src/protocols/node-fs.ts).
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');

type Compile = (this: CompiledModule, content: string, filename: string) => unknown;
interface CompiledModule {
  exports: unknown;
  require(id: string): unknown;
}
interface ModuleInternals {
  enableCompileCache?: (dir?: string) => unknown;
  wrap(script: string): string;
  prototype: { _compile: Compile };
}

/** The cache root: XDG's cache home, else a private folder in the temporary directory; undefined when neither is usable. */
export function compileCacheRoot(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const xdg = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : env.HOME ? path.join(env.HOME, '.cache') : undefined;
  if (xdg) {
    const dir = path.join(xdg, 'blocktab');
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.accessSync(dir, fs.constants.W_OK);
      return dir;
    } catch {
      // fall through to the temporary directory
    }
  }
  const uid = process.getuid?.() ?? -1;
  const dir = path.join(os.tmpdir(), `blocktab-compile-cache-${uid}`);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch {
    // exists already (checked below), or cannot be made
  }
  return privateDir(dir, uid) ? dir : undefined;
}

/** A real directory (not a link) owned by `uid` that no one else can write. */
function privateDir(dir: string, uid: number): boolean {
  try {
    const st = fs.lstatSync(dir);
    return st.isDirectory() && (uid < 0 || st.uid === uid) && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** FNV-1a of a string, as 8 hex digits: names the bundle folder's subdirectory. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/**
 * The command this run serves (qemu-img's subcommand; `io` for qemu-io): each
 * has its own entries. An entry holds the functions the run that wrote it
 * compiled, and V8 keeps accepted data as it is, so a chunk first cached by
 * `info` (qcow2's driver, say) left every later convert compiling the read and
 * copy paths again (a small convert: 264 M instructions against 249 M with
 * convert's own entries).
 */
export function commandKey(argv: readonly string[] = process.argv): string {
  if (path.basename(argv[1] ?? '') === 'qemu-io') return 'io';
  const cmd = argv[2] ?? '';
  return /^[a-z][a-z-]{0,15}$/.test(cmd) ? cmd : 'other';
}

let installed = false;

/**
 * Caches compiled code for the CommonJS files in `bundleDir` (the bundled
 * CLI's folder). Call it once, first thing, from the bundle's entry: files
 * loaded before it are compiled as usual.
 */
export function installCompileCache(bundleDir: string): void {
  if (installed || process.env.NODE_DISABLE_COMPILE_CACHE) return;
  installed = true;
  const M = Module as unknown as ModuleInternals;
  if (typeof M.enableCompileCache === 'function') {
    try {
      const root = compileCacheRoot();
      if (root) M.enableCompileCache(root);
    } catch {
      // no cache
    }
    return;
  }
  if (typeof M.prototype._compile !== 'function') return;

  const prefix = bundleDir.endsWith(path.sep) ? bundleDir : bundleDir + path.sep;
  let dir: string | null | undefined; // undefined: not looked for yet; null: none
  const cacheDir = (): string | null => {
    if (dir === undefined) {
      const root = compileCacheRoot();
      dir = root ? path.join(root, `v8-${process.versions.v8}-${process.arch}-${fnv1a(bundleDir)}`, commandKey() + flagsKey()) : null;
    }
    return dir;
  };
  const pending: { script: vm.Script; file: string }[] = [];
  const original = M.prototype._compile;

  M.prototype._compile = function (this: CompiledModule, content: string, filename: string): unknown {
    const where = filename.startsWith(prefix) ? cacheDir() : null;
    if (!where) return original.call(this, content, filename);
    const file = path.join(where, `${path.basename(filename)}.${content.length}.cache`);
    let cachedData: Buffer | undefined;
    try {
      cachedData = fs.readFileSync(file);
    } catch {
      // not cached yet
    }
    const source = M.wrap(content.startsWith('#!') ? '//' + content : content);
    // V8 checks the data against its flags (tier-up.ts may have changed one meanwhile).
    const script = underUsualFlags(() => new vm.Script(source, { filename, cachedData }));
    if (!cachedData || script.cachedDataRejected) pending.push({ script, file });
    const fn = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: CompiledModule, filename: string, dirname: string) => unknown;
    return fn.call(this.exports, this.exports, createRequire(filename), this, filename, path.dirname(filename));
  };

  process.once('exit', () => {
    const where = dir;
    if (!pending.length || !where) return;
    try {
      fs.mkdirSync(where, { recursive: true, mode: 0o700 });
      removeStale(where, bundleDir);
      removeStale(path.dirname(where), bundleDir, true); // entries of the layout before commandKey
      for (const { script, file } of pending) {
        const tmp = `${file}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, script.createCachedData());
        fs.renameSync(tmp, file); // whole files only: another process may be reading
      }
    } catch {
      // no cache this time
    }
  });
}

/** Removes the entries of chunks that are no longer in the bundle (an older build's), or every entry (`all`). */
function removeStale(where: string, bundleDir: string, all = false): void {
  for (const name of fs.readdirSync(where)) {
    const m = /^(.+)\.\d+\.cache(\.\d+\.tmp)?$/.exec(name);
    if (m && (all || !fs.existsSync(path.join(bundleDir, m[1]!)))) fs.rmSync(path.join(where, name), { force: true });
  }
}
