/**
 * qemu-img's `--object` and `--image-opts`, for the commands that open
 * images. `--object secret,id=ID,data=TEXT` (or `file=PATH`) registers a
 * secret that drivers look up by id (luks's `key-secret`). With
 * `--image-opts` an image name is an option list,
 * `driver=luks,key-secret=sec0,file.filename=disk.luks`; without it a
 * `json:{"driver": ..., "file": {"filename": ...}, ...}` name is read the
 * same way. Both become a format, a file name and driver options.
 */
import { fs } from '../protocols/node-fs.js';
import { registerSecret } from '../block/secrets.js';
import { BlockError } from '../block/errors.js';
import { UsageError } from './args.js';
import { crumple, isTree, parseJsonName, parseKeyValueList, type OptionsTree } from '../block/options-tree.js';

let imageOpts = false;

/** Key=value list with QEMU's ",," escape for a literal comma (options-tree's parser); a bad one is a usage error. */
function parseKeyValues(text: string): Record<string, string> {
  try {
    return parseKeyValueList(text);
  } catch (e) {
    if (e instanceof BlockError) throw new UsageError(e.message);
    throw e;
  }
}

/** Whether the command's arguments held `--image-opts` (taken out by takeObjectOptions). */
export function imageOptsGiven(): boolean {
  return imageOpts;
}

/** Defines one `--object` (qemu-img's and qemu-io's). */
export function defineObject(text: string): void {
  // "secret,id=...": the first element names the type unless it is a key=value itself (qom-type=...).
  const comma = text.indexOf(',');
  const head = comma < 0 ? text : text.slice(0, comma);
  const typed = !head.includes('=');
  const kv = parseKeyValues(typed ? (comma < 0 ? '' : text.slice(comma + 1)) : text);
  const type = typed ? head : kv['qom-type'];
  if (type !== 'secret') throw new UsageError(`--object: type '${type}' is not supported (only 'secret')`);
  if (!kv.id) throw new UsageError(`Parameter 'id' is missing`);
  if (kv.data !== undefined) registerSecret(kv.id, kv.data);
  else if (kv.file !== undefined) registerSecret(kv.id, new Uint8Array(fs.readFileSync(kv.file)));
  else throw new UsageError(`Either 'data' or 'file' must be provided`);
}

/**
 * Takes `--object` (any number) and `--image-opts` out of a command's
 * arguments, defining the objects; returns the remaining arguments.
 */
export function takeObjectOptions(args: string[]): string[] {
  imageOpts = false; // per command: main() may run several in one process
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a === '--object') {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`option '--object' requires an argument`);
      defineObject(v);
    } else if (a.startsWith('--object=')) defineObject(a.slice('--object='.length));
    else if (a === '--image-opts') imageOpts = true;
    else rest.push(a);
  }
  return rest;
}

export interface ImageSpec {
  /** The options tree the name stands for (src/block/options-tree.ts); a plain name is `{ filename }`. */
  tree: OptionsTree;
  /** The image's file, for messages: the innermost file name the tree names, or the name itself. */
  filename: string;
  /** The top node's driver, if the name gives one. */
  format?: string;
  /** The protocol's options (`file.*` besides the name and driver): curl's readahead, timeout, cookie… */
  fileOptions?: Record<string, unknown>;
  /** The protocol driver named by `file.driver` (`file`, `http`, `https`). */
  fileDriver?: string;
}

/** The innermost file name of a tree: down `file` / `image` children. */
export function innermostFilename(tree: OptionsTree): string | undefined {
  for (const key of ['file', 'image'] as const) {
    const c = tree[key];
    if (typeof c === 'string') return c;
    if (isTree(c)) return innermostFilename(c) ?? (typeof c.url === 'string' ? c.url : undefined);
  }
  return typeof tree.filename === 'string' ? tree.filename : undefined;
}

/**
 * The options tree an image name stands for: `--image-opts` key=value lists
 * and `json:{…}` names go through the block layer's one options parser;
 * plain names stand for themselves. `asImageOpts` false reads a name as a
 * name even under `--image-opts` (the backing files `info --backing-chain` follows).
 */
export function imageSpec(name: string, asImageOpts = imageOpts): ImageSpec {
  let tree: OptionsTree;
  try {
    if (asImageOpts) tree = crumple(parseKeyValueList(name));
    else if (name.startsWith('json:')) tree = parseJsonName(name);
    else return { tree: { filename: name }, filename: name };
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const filename = innermostFilename(tree);
  const file = isTree(tree.file) ? tree.file : undefined;
  const fileOptions: Record<string, unknown> = {};
  if (file) for (const [k, v] of Object.entries(file)) if (k !== 'filename' && k !== 'url' && k !== 'driver') fileOptions[k] = v;
  return {
    tree,
    filename: filename ?? name,
    format: typeof tree.driver === 'string' ? tree.driver : undefined,
    fileOptions,
    fileDriver: typeof file?.driver === 'string' ? file.driver : undefined,
  };
}
