/**
 * Path-level operations over any FileSystem: walk a path, list a directory
 * (or a tree, with a depth limit and a visited set so a directory that
 * contains itself is reported once, not followed forever), stream a file in
 * bounded chunks, and make a name from an image safe to use on the host.
 */
import { BlockError } from '../../block/errors.js';
import type { FileSystem, FsNode } from './types.js';

/** Deepest tree listed recursively. */
export const MAX_DEPTH = 128;
/** Symlinks followed while walking one path (as Linux's 40). */
export const MAX_SYMLINKS = 40;
/** Bytes read per step when streaming a file. */
export const CHUNK = 1024 * 1024;

function split(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}

/** Joins a symlink target to the directory holding it. */
function resolveLink(dirParts: string[], target: string): string[] {
  const base = target.startsWith('/') ? [] : [...dirParts];
  for (const p of split(target)) {
    if (p === '..') base.pop();
    else base.push(p);
  }
  return base;
}

/**
 * Finds the node at `path` ("/" or "" is the root). Intermediate symlinks are
 * followed; the last component is followed only with `follow`.
 */
export async function lookup(fs: FileSystem, path: string, follow = true): Promise<FsNode> {
  let parts = split(path);
  let links = 0;
  for (;;) {
    let node = fs.root();
    const walked: string[] = [];
    let restart: string[] | null = null;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (part === '..') {
        walked.pop();
        restart = [...walked, ...parts.slice(i + 1)];
        break;
      }
      if (node.type !== 'dir') throw new BlockError('ENOENT', `${fs.volume.name}: ${'/' + walked.join('/')}: Not a directory`);
      const entries = await fs.readdir(node);
      const next = entries.find((e) => e.name === part);
      if (!next) throw new BlockError('ENOENT', `${fs.volume.name}: ${'/' + [...walked, part].join('/')}: No such file or directory`);
      const last = i === parts.length - 1;
      if (next.type === 'symlink' && (!last || follow) && fs.readlink) {
        if (++links > MAX_SYMLINKS) throw new BlockError('ELOOP', `${fs.volume.name}: ${path}: Too many levels of symbolic links`);
        restart = [...resolveLink(walked, await fs.readlink(next)), ...parts.slice(i + 1)];
        break;
      }
      walked.push(part);
      node = next;
    }
    if (!restart) return node;
    parts = restart;
  }
}

/** The entries of the directory at `path`, sorted by name (a file path lists that file). */
export async function listPath(fs: FileSystem, path: string): Promise<FsNode[]> {
  const node = await lookup(fs, path);
  if (node.type !== 'dir') return [{ ...node, name: split(path).pop() ?? node.name }];
  const entries = await fs.readdir(node);
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface TreeEntry {
  /** Path from the listed directory, "/"-separated. */
  path: string;
  node: FsNode;
  /** Why this directory's contents are missing (a loop, a corrupt block), when they are. */
  error?: string;
}

function refKey(n: FsNode): string {
  return JSON.stringify(n.ref);
}

/**
 * Every entry under `dir`, depth first, in name order. A directory that
 * cannot be read, or that was already visited (a loop), is listed with an
 * error and the walk goes on.
 */
export async function walkTree(fs: FileSystem, dir: FsNode, visit: (e: TreeEntry) => void | Promise<void>): Promise<void> {
  const seen = new Set<string>([refKey(dir)]);
  const rec = async (d: FsNode, prefix: string, depth: number): Promise<void> => {
    const entries = (await fs.readdir(d)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = prefix + e.name;
      if (e.type !== 'dir') {
        await visit({ path, node: e });
        continue;
      }
      const key = refKey(e);
      if (seen.has(key)) {
        await visit({ path, node: e, error: `${fs.volume.name}: directory ${path} is already listed (a directory loop)` });
        continue;
      }
      if (depth >= MAX_DEPTH) {
        await visit({ path, node: e, error: `${fs.volume.name}: directory ${path} is deeper than ${MAX_DEPTH} levels` });
        continue;
      }
      seen.add(key);
      try {
        await rec(e, path + '/', depth + 1);
        await visit({ path, node: e });
      } catch (err) {
        await visit({ path, node: e, error: err instanceof Error ? err.message : String(err) });
      }
    }
  };
  await rec(dir, '', 0);
}

/** Streams the file's bytes to `sink` in chunks of at most CHUNK bytes. */
export async function readFileChunks(fs: FileSystem, file: FsNode, sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void> {
  if (file.type === 'dir') throw new BlockError('EINVAL', `${fs.volume.name}: ${file.name}: Is a directory`);
  for (let off = 0; off < file.size; off += CHUNK) {
    await sink(await fs.read(file, off, Math.min(CHUNK, file.size - off)));
  }
}

/** The whole file in memory (for previews and tests; the CLI streams). */
export async function readWholeFile(fs: FileSystem, file: FsNode, limit = 256 * 1024 * 1024): Promise<Uint8Array> {
  if (file.size > limit) throw new BlockError('EFBIG', `${fs.volume.name}: ${file.name} is ${file.size} bytes, more than ${limit} to hold in memory`);
  const out = new Uint8Array(file.size);
  let pos = 0;
  await readFileChunks(fs, file, (c) => {
    out.set(c, pos);
    pos += c.length;
  });
  return out;
}

/**
 * A name from an image made safe as one host path component: no "/", "\\",
 * NUL or control characters, never "." or ".." or empty, so a downloaded or
 * extracted file can never land outside its folder.
 */
export function safeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  const s = name.replace(/[/\\\u0000-\u001f]/g, '_');
  if (s === '' || s === '.' || s === '..') return s.replace(/\./g, '_') || '_';
  return s;
}
