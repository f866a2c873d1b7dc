/**
 * Broken and hostile images through the CLI: every command must fail with
 * exit code 1 and exactly one line on stderr, `blocktab: ...`, naming the
 * image, without a stack trace or a hang. One row per case.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo, repoRoot, tmpDir } from '../helpers/qemu.js';

interface BadCase {
  name: string;
  /** Makes the image in `dir`; returns its name. */
  make(dir: string): string;
  /** Commands to run (image appended, or placed by the function). Default: info, map, convert. */
  commands?: (image: string) => string[][];
  /** What every message must name (default: the image). */
  names?: string;
}

/** A small valid qcow2 (64 KiB clusters, data in its first cluster) to break. */
function base(dir: string, name = 'bad.qcow2'): string {
  qemuImg(['create', '-f', 'qcow2', name, '1M'], { cwd: dir });
  qemuIo(name, ['write -P 1 0 64k'], undefined, { cwd: dir });
  return name;
}

/** Overwrites header fields: [offset, bytes (4 or 8), value]. */
function patch(dir: string, name: string, fields: [number, 4 | 8, number][]): void {
  const fd = fs.openSync(path.join(dir, name), 'r+');
  for (const [off, size, value] of fields) {
    const b = Buffer.alloc(size);
    if (size === 4) b.writeUInt32BE(value);
    else b.writeBigUInt64BE(BigInt(value));
    fs.writeSync(fd, b, 0, size, off);
  }
  fs.closeSync(fd);
}

// qcow2 header field offsets (docs/interop/qcow2.txt).
const CLUSTER_BITS = 20;
const L1_SIZE = 36;
const L1_TABLE_OFFSET = 40;
const REFCOUNT_TABLE_OFFSET = 48;
const REFCOUNT_TABLE_CLUSTERS = 56;
const NB_SNAPSHOTS = 60;
const SNAPSHOTS_OFFSET = 64;
const HEADER_LENGTH = 100;

const readCmds = (img: string) => [
  ['info', img],
  ['map', '--output=json', img],
  ['convert', '-O', 'raw', img, 'out.raw'],
];

const cases: BadCase[] = [
  {
    name: 'truncated header',
    make: (d) => {
      const n = base(d);
      fs.truncateSync(path.join(d, n), 50);
      return n;
    },
    commands: (img) => [['info', '-f', 'qcow2', img], ['convert', '-f', 'qcow2', '-O', 'raw', img, 'out.raw']],
  },
  {
    name: 'L1 table beyond EOF',
    make: (d) => {
      const n = base(d);
      patch(d, n, [[L1_TABLE_OFFSET, 8, 0x1000000000]]);
      return n;
    },
  },
  {
    name: 'refcount table beyond EOF',
    make: (d) => {
      const n = base(d);
      patch(d, n, [[REFCOUNT_TABLE_OFFSET, 8, 0x1000000000]]);
      return n;
    },
  },
  {
    name: 'unaligned L1 table offset',
    make: (d) => {
      const n = base(d);
      patch(d, n, [[L1_TABLE_OFFSET, 8, 0x30200]]);
      return n;
    },
  },
  {
    name: 'unaligned refcount table offset',
    make: (d) => {
      const n = base(d);
      patch(d, n, [[REFCOUNT_TABLE_OFFSET, 8, 0x10200]]);
      return n;
    },
  },
  { name: 'cluster_bits too small (8)', make: (d) => (patch(d, base(d), [[CLUSTER_BITS, 4, 8]]), 'bad.qcow2') },
  { name: 'cluster_bits too large (22)', make: (d) => (patch(d, base(d), [[CLUSTER_BITS, 4, 22]]), 'bad.qcow2') },
  { name: 'oversized L1 table', make: (d) => (patch(d, base(d), [[L1_SIZE, 4, 0x10000000]]), 'bad.qcow2') },
  { name: 'oversized refcount table', make: (d) => (patch(d, base(d), [[REFCOUNT_TABLE_CLUSTERS, 4, 0x1000000]]), 'bad.qcow2') },
  {
    name: 'oversized snapshot table',
    make: (d) => (patch(d, base(d), [[NB_SNAPSHOTS, 4, 0x10000000], [SNAPSHOTS_OFFSET, 8, 0x10000]]), 'bad.qcow2'),
  },
  { name: 'header_length larger than a cluster', make: (d) => (patch(d, base(d), [[HEADER_LENGTH, 4, 0x20000]]), 'bad.qcow2') },
  {
    name: 'backing file loop',
    make: (d) => {
      qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'loop-b.qcow2', '-F', 'qcow2', 'loop-a.qcow2', '1M'], { cwd: d });
      qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'loop-a.qcow2', '-F', 'qcow2', 'loop-b.qcow2', '1M'], { cwd: d });
      return 'loop-a.qcow2';
    },
    commands: (img) => [['info', '--backing-chain', img], ['map', img], ['convert', '-O', 'raw', img, 'out.raw'], ['compare', img, img]],
  },
  {
    name: 'missing backing file',
    make: (d) => {
      qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '1M'], { cwd: d });
      return 'orphan.qcow2';
    },
    commands: (img) => [['map', img], ['convert', '-O', 'raw', img, 'out.raw'], ['info', '--backing-chain', img]],
    names: 'gone.qcow2',
  },
  {
    name: 'unknown format name',
    make: (d) => base(d),
    commands: (img) => [['info', '-f', 'foo', img], ['map', '-f', 'foo', img], ['convert', '-f', 'foo', '-O', 'raw', img, 'out.raw']],
  },
  {
    name: 'missing image',
    make: () => 'nothing-here.qcow2',
    commands: (img) => [['info', img], ['map', img], ['convert', '-O', 'raw', img, 'out.raw']],
  },
];

/** Runs the built CLI with a time limit (qemu-img itself hangs on some of these). */
function run(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist/cli/main.js'), ...args], { cwd, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describe('bad input through the CLI', () => {
  for (const c of cases) {
    it(c.name, () => {
      const dir = tmpDir();
      const image = c.make(dir);
      const cmds = c.commands ? c.commands(image) : readCmds(image);
      for (const args of cmds) {
        const r = run(args, dir);
        const what = `blocktab ${args.join(' ')}`;
        expect(r.signal, `${what} was killed (hang?)`).toBeNull();
        // compare reports open failures with its own code, 2.
        expect(r.status, `${what}: ${r.stderr}`).toBe(args[0] === 'compare' ? 2 : 1);
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        expect(lines, what).toHaveLength(1);
        expect(lines[0]!, what).toMatch(/^blocktab: /);
        expect(lines[0]!, what).toContain(c.names ?? image.replace(/-[ab]\.qcow2$/, ''));
        if (process.env.BLOCKTAB_SHOW_ERRORS) console.log(`${what}\n  ${lines[0]}`);
        expect(r.stderr, what).not.toMatch(/\n\s+at /);
        expect(r.stderr, what).not.toMatch(/internal error/);
      }
    });
  }
});
