/**
 * `blocktab partitions`, `blocktab ls` and `blocktab cat`: look inside a disk
 * image (any format, any layer of a chain, an internal snapshot with
 * `--snapshot`), read-only. The shape is DESIGN's proposal:
 *   partitions [-f FMT] [--snapshot NAME] [--output=human|json] IMAGE
 *   ls [-f FMT] [--snapshot NAME] [--partition N] [-l] [-R] [--output=human|json] IMAGE [PATH]
 *   cat [-f FMT] [--snapshot NAME] [--partition N] IMAGE PATH
 */
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { snapshotLoadTmp } from '../img/snapshot.js';
import { listPath, lookup, openVolumeFileSystem, readFileChunks, readPartitionTable, typeName, Volume, walkTree, type FsNode } from '../inspect/index.js';
import { outputFormat, parseCommand, str, flag, UsageError, type OptionSpec } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

const COMMON: OptionSpec = {
  format: { type: 'string', short: 'f' },
  snapshot: { type: 'string', short: 's' },
  'image-opts': { type: 'boolean' },
  object: { type: 'string', multiple: true },
  'force-share': { type: 'boolean', short: 'U' },
  help: { type: 'boolean', short: 'h' },
};

async function openDisk(filename: string, format: string | undefined, snapshot: string | undefined): Promise<BlockNode> {
  const bs = await openForCli(filename, { format, readOnly: true });
  try {
    if (snapshot !== undefined) await snapshotLoadTmp(bs, snapshot);
    return bs;
  } catch (e) {
    await closeNode(bs);
    throw e;
  }
}

function partitionOption(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`Invalid partition number '${v}'`);
  return n;
}

export async function runPartitions(args: string[], out: Output): Promise<number> {
  const p = parseCommand('partitions', args, { ...COMMON, output: { type: 'string' } });
  const fmt = outputFormat(p);
  if (p.positionals.length !== 1) throw new UsageError('Expecting one image file name');
  const bs = await openDisk(p.positionals[0]!, str(p, 'format'), str(p, 'snapshot'));
  try {
    const t = await readPartitionTable(new Volume(bs, bs.filename));
    for (const w of t.warnings) out.stderr(`warning: ${w}\n`);
    if (fmt === 'json') {
      const parts = t.partitions.map((x) => ({
        number: x.number,
        start: x.start,
        size: x.size,
        type: x.type,
        name: x.name,
        filesystem: x.filesystem ?? null,
        ...(x.uuid ? { uuid: x.uuid } : {}),
        ...(x.bootable ? { bootable: true } : {}),
        ...(x.extended ? { extended: true } : {}),
        ...(x.error ? { error: x.error } : {}),
      }));
      const j: Record<string, unknown> = { table: t.table };
      if (t.mbr) j.mbr = t.mbr;
      if (t.gptHeader) j['gpt-header'] = t.gptHeader;
      if (t.table === 'none') j.filesystem = t.filesystem ?? null;
      j['sector-size'] = t.sectorSize;
      j.partitions = parts;
      out.stdout(JSON.stringify(j, null, 4) + '\n');
    } else {
      let s = `Partition table: ${t.table}${t.mbr ? ` (${t.mbr} MBR)` : ''}${t.gptHeader === 'backup' ? ' (from the backup header)' : ''}\n`;
      if (t.table === 'none') s += `File system: ${t.filesystem ?? 'none found'}\n`;
      else {
        const rows = [['Number', 'Start', 'Size', 'Type', 'Name', 'Filesystem']];
        for (const x of t.partitions) {
          rows.push([String(x.number), String(x.start), String(x.size), typeName(t.table, x.type), x.name, x.error ? `error: ${x.error}` : x.filesystem ?? '']);
        }
        const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        s += rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ').trimEnd()).join('\n') + '\n';
      }
      out.stdout(s);
    }
    return 0;
  } finally {
    await closeNode(bs);
  }
}

function modeString(n: FsNode): string {
  const t = n.type === 'dir' ? 'd' : n.type === 'symlink' ? 'l' : n.type === 'file' ? '-' : '?';
  const m = n.mode ?? (n.type === 'dir' ? 0o755 : 0o644);
  let s = t;
  for (let i = 8; i >= 0; i--) s += m & (1 << i) ? 'rwx'[(8 - i) % 3] : '-';
  return s;
}

/** The last time formatted: the files of a directory mostly share their minute. */
let lastTime: { t: number; s: string } | undefined;

function timeString(t: number | undefined): string {
  if (t === undefined) return '                ';
  if (lastTime?.t !== t) lastTime = { t, s: new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ') };
  return lastTime.s;
}

export async function runLs(args: string[], out: Output): Promise<number> {
  const p = parseCommand('ls', args, {
    ...COMMON,
    output: { type: 'string' },
    partition: { type: 'string', short: 'p' },
    long: { type: 'boolean', short: 'l' },
    recursive: { type: 'boolean', short: 'R' },
  });
  const fmt = outputFormat(p);
  if (p.positionals.length < 1 || p.positionals.length > 2) throw new UsageError('Expecting an image file name and an optional path');
  const [filename, path = '/'] = p.positionals as [string, string?];
  const bs = await openDisk(filename, str(p, 'format'), str(p, 'snapshot'));
  try {
    const vol = await openVolumeFileSystem(bs, partitionOption(str(p, 'partition')));
    try {
      const rows: Array<{ path: string; node: FsNode; error?: string }> = [];
      if (flag(p, 'recursive')) {
        const dir = await lookup(vol.fs, path);
        await walkTree(vol.fs, dir, (e) => void rows.push(e));
        rows.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      } else {
        for (const n of await listPath(vol.fs, path)) rows.push({ path: n.name, node: n });
      }
      for (const r of rows) {
        if (r.node.type === 'symlink' && r.node.target === undefined && vol.fs.readlink) {
          try {
            r.node = { ...r.node, target: await vol.fs.readlink(r.node) };
          } catch (e) {
            r.error = e instanceof Error ? e.message : String(e);
          }
        }
      }
      let errors = 0;
      for (const r of rows) if (r.error) errors++;
      if (fmt === 'json') {
        const j = rows.map((r) => ({
          name: r.path,
          type: r.node.type,
          size: r.node.size,
          mtime: r.node.mtime ?? null,
          ...(r.node.mode !== undefined ? { mode: r.node.mode } : {}),
          ...(r.node.target !== undefined ? { target: r.node.target } : {}),
          ...(r.error ? { error: r.error } : {}),
        }));
        out.stdout(JSON.stringify(j, null, 4) + '\n');
      } else {
        let s = '';
        for (const r of rows) {
          if (flag(p, 'long')) {
            s += `${modeString(r.node)} ${String(r.node.size).padStart(12)} ${timeString(r.node.mtime)} ${r.path}${r.node.target !== undefined ? ` -> ${r.node.target}` : ''}\n`;
          } else s += `${r.path}${r.node.type === 'dir' ? '/' : ''}\n`;
        }
        out.stdout(s);
        for (const r of rows) if (r.error) out.stderr(`blocktab: ${r.error}\n`);
      }
      return errors ? 1 : 0;
    } finally {
      await vol.close();
    }
  } finally {
    await closeNode(bs);
  }
}

/** Where cat's bytes go: process.stdout in the CLI (binary-safe), a collector in tests. */
export type ByteSink = (chunk: Uint8Array) => Promise<void>;

let byteSink: ByteSink = (chunk) =>
  new Promise((resolve, reject) => {
    process.stdout.write(chunk, (e) => (e ? reject(e) : resolve()));
  });

/** Tests replace the byte sink. */
export function setByteSink(s: ByteSink): void {
  byteSink = s;
}

export async function runCat(args: string[], _out: Output): Promise<number> {
  const p = parseCommand('cat', args, { ...COMMON, partition: { type: 'string', short: 'p' } });
  if (p.positionals.length !== 2) throw new UsageError('Expecting an image file name and a path');
  const [filename, path] = p.positionals as [string, string];
  const bs = await openDisk(filename, str(p, 'format'), str(p, 'snapshot'));
  try {
    const vol = await openVolumeFileSystem(bs, partitionOption(str(p, 'partition')));
    try {
      const node = await lookup(vol.fs, path);
      await readFileChunks(vol.fs, node, byteSink);
      return 0;
    } finally {
      await vol.close();
    }
  } finally {
    await closeNode(bs);
  }
}
