/**
 * Disk images with partitions and file systems, built at test time with
 * Debian's tools (sfdisk, sgdisk, mke2fs -d, mkfs.vfat + mtools, xorriso,
 * genisoimage) from a small seeded source tree, so tests compare what
 * blocktab reads with what the tools were given.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { seededBytes } from './random.js';

export const MiB = 1024 * 1024;

export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): string {
  return execFileSync(cmd, args, { cwd: opts.cwd, input: opts.input, encoding: 'utf8', stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
}

/** The files of the source tree: path → bytes (directories implied). */
export type Tree = Map<string, Uint8Array>;

/**
 * A tree with small text files, a long name, a file crossing indirect blocks
 * (300 KB), a nested directory and, with `many`, a directory of `many` files
 * (enough to make an ext4 directory indexed after e2fsck -D).
 */
export function sourceTree(seed: number, many = 0): Tree {
  const t: Tree = new Map();
  const enc = new TextEncoder();
  t.set('hello.txt', enc.encode(`hello ${seed}\n`));
  t.set('A Long File Name With Spaces.txt', enc.encode('long name\n'));
  t.set('docs/readme.md', enc.encode('# readme\n'.repeat(50)));
  t.set('docs/deep/er/leaf.bin', seededBytes(5000, seed + 1));
  t.set('big.bin', seededBytes(300_000, seed + 2));
  t.set('empty', new Uint8Array(0));
  for (let i = 0; i < many; i++) t.set(`many/file-${String(i).padStart(4, '0')}.txt`, enc.encode(`file ${i}\n`));
  return t;
}

export function writeTree(dir: string, t: Tree): void {
  for (const [p, b] of t) {
    fs.mkdirSync(path.join(dir, path.dirname(p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), b);
  }
}

/** Every directory the tree implies ("docs", "docs/deep", …). */
export function treeDirs(t: Tree): string[] {
  const dirs = new Set<string>();
  for (const p of t.keys()) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort();
}

/** An ext2/3/4 image of `sizeMiB` filled from `srcDir` with mke2fs -d. */
export function makeExt(file: string, srcDir: string, sizeMiB: number, type: 'ext2' | 'ext3' | 'ext4', extra: string[] = []): void {
  fs.rmSync(file, { force: true });
  sh('mke2fs', ['-q', '-F', '-t', type, ...extra, '-d', srcDir, file, `${sizeMiB}M`], { input: '' });
}

/** A FAT image (mkfs.vfat -F bits) filled from `srcDir` with mcopy. */
export function makeFat(file: string, srcDir: string, sizeMiB: number, bits: 12 | 16 | 32, label = 'BLOCKTAB'): void {
  fs.rmSync(file, { force: true });
  // One sector per cluster: a small FAT16/32 still has the cluster count its type needs.
  sh('mkfs.vfat', ['-C', '-F', String(bits), ...(bits === 12 ? [] : ['-s', '1']), '-n', label, file, String(sizeMiB * 1024)]);
  const entries = fs.readdirSync(srcDir).map((e) => path.join(srcDir, e));
  if (entries.length) sh('mcopy', ['-s', '-m', '-i', file, ...entries, '::/']);
}

/** Copies `src` into `disk` at byte `offset` without truncating it. */
export function placeAt(disk: string, src: string, offset: number): void {
  const fd = fs.openSync(disk, 'r+');
  try {
    fs.writeSync(fd, fs.readFileSync(src), 0, undefined, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** A blank disk file partitioned by sfdisk from `script`. */
export function partition(disk: string, sizeMiB: number, script: string): void {
  fs.rmSync(disk, { force: true });
  fs.writeFileSync(disk, '');
  fs.truncateSync(disk, sizeMiB * MiB);
  sh('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', disk], { input: script });
}

/** sfdisk --json's partitions of a disk file. */
export function sfdiskJson(disk: string): { label: string; partitions: Array<{ node: string; start: number; size: number; type: string; name?: string; uuid?: string }> } {
  return (JSON.parse(sh('sfdisk', ['--json', disk])) as { partitiontable: ReturnType<typeof sfdiskJson> }).partitiontable;
}
