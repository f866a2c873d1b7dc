/**
 * Opening images: storage → protocol node → format node → backing chain.
 *
 * Where bytes come from is a `Storage` (the Node file system, OPFS, IndexedDB,
 * an HTTP origin, memory): it opens protocol nodes by name and resolves the
 * names images store for each other (backing files, data files) inside its own
 * namespace, so a name inside an image never reaches outside it.
 *
 * The format is probed from the first bytes unless given; raw is only a
 * fallback, and a guessed raw image gets QEMU's warning and may not have its
 * first sector overwritten with another format's header. Backing chains are
 * opened to any depth, with a loop check and a depth limit, so a malicious
 * chain cannot hang or exhaust memory.
 */
import { BlockError, describeCode, fromHostError } from './errors.js';
import { loadDriver, probeFormat, PROBE_BUF_SIZE, type OpenOptions } from './driver.js';
import { BlockNode } from './node.js';
import { bdrvFlush, bdrvPread } from './io.js';
import type { ChildRole } from './child.js';
import { releaseNamedDirtyBitmaps } from './dirty-bitmap.js';

export interface Storage {
  /** Short name for messages and info (`file`, `opfs`, `idb`, `http`, `memory`, `blob`). */
  readonly name: string;
  /**
   * Opens the protocol node for `filename`. Throws ENOENT for a missing file.
   * `forceShare` (read-only only, qemu-img's -U): open even while another
   * user writes the image, for storages that lock images (OPFS).
   */
  openProtocol(filename: string, options: { readOnly: boolean; create?: boolean; forceShare?: boolean }): Promise<BlockNode>;
  /** Creates (or truncates to zero) the file `filename`. */
  createFile?(filename: string): Promise<void>;
  /** Removes a file, where the storage can. */
  removeFile?(filename: string): Promise<void>;
  /**
   * Resolves a reference stored inside the image `from` (a backing file
   * name) to a name in this storage. Relative references are relative to the
   * directory of `from`, as QEMU's path_combine.
   */
  resolve(from: string, reference: string): string;
  /** The name made absolute where the storage has a working directory (host files), to compare names. */
  absolute?(filename: string): string;
}

/** How a node was opened; kept on the node so drivers can open sibling files (data files). */
export interface OpenContext {
  storage: Storage;
  /** Receives warnings (raw guessed, …) as QEMU prints them; 'report' marks an error_report line (the tool's name goes first). */
  warn: (message: string, kind?: 'report') => void;
}

export interface OpenImageOptions {
  /** Format name (`qcow2`, `raw`); probed when absent. */
  format?: string;
  readOnly?: boolean;
  /** Open the backing chain (default true). qemu-img's -U / no-backing cases turn it off. */
  backing?: boolean;
  /** Driver options for the format node (raw's offset/size, qcow2's l2-cache-size, …). */
  driverOptions?: Record<string, unknown>;
  /** Receives warnings; by default they are dropped. */
  warn?: (message: string, kind?: 'report') => void;
  /** Node name for the top node. */
  nodeName?: string;
  /** The backing image's format, overriding the one the image names (QEMU's `backing.driver` option). */
  backingFormat?: string;
  /** Read-only opens of the image and its chain ignore other users' locks (qemu-img's -U, QEMU's force-share). */
  forceShare?: boolean;
}

/** Deepest backing chain we open (QEMU has no limit; a bound keeps a crafted chain from exhausting memory). */
export const MAX_BACKING_DEPTH = 1000;

const contexts = new WeakMap<BlockNode, OpenContext>();

export function openContext(bs: BlockNode): OpenContext | undefined {
  return contexts.get(bs);
}

/** Whether a name starts with a URL scheme or protocol prefix (`https:`, `opfs:`, `json:`…). */
export function hasProtocol(name: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(name);
}

/** Joins a relative reference to the directory of `from`, as QEMU's path_combine (no normalisation beyond that). */
export function pathCombine(from: string, reference: string): string {
  if (reference === '' || reference.startsWith('/') || hasProtocol(reference)) return reference;
  const slash = from.lastIndexOf('/');
  return slash < 0 ? reference : from.slice(0, slash + 1) + reference;
}

async function openProtocol(storage: Storage, filename: string, readOnly: boolean, forceShare = false): Promise<BlockNode> {
  try {
    return await storage.openProtocol(filename, forceShare ? { readOnly, forceShare } : { readOnly });
  } catch (e) {
    if (e instanceof BlockError) throw e;
    throw fromHostError(e, `Could not open '${filename}'`);
  }
}

/** Opens `filename` with its format driver (probed unless given), and its backing chain. */
export async function openImage(storage: Storage, filename: string, options: OpenImageOptions = {}): Promise<BlockNode> {
  const ctx: OpenContext = { storage, warn: options.warn ?? (() => {}) };
  return openChain(ctx, filename, options, [filename]);
}

async function openChain(ctx: OpenContext, filename: string, options: OpenImageOptions, chain: string[]): Promise<BlockNode> {
  const readOnly = options.readOnly ?? false;
  const proto = await openProtocol(ctx.storage, filename, readOnly, options.forceShare);
  let bs: BlockNode | undefined;
  try {
    bs = await openFormatOn(ctx, proto, filename, options);
    if (bs.driver.supportsBacking && bs.backingFile && options.backing !== false) {
      await openBacking(ctx, bs, chain, options.backingFormat, options.forceShare);
    }
    return bs;
  } catch (e) {
    if (bs) await closeNode(bs);
    else await closeNode(proto);
    throw e;
  }
}

/** Puts a format node on top of an already open protocol node (probing the format unless given). */
export async function openFormatOn(
  ctx: OpenContext,
  proto: BlockNode,
  filename: string,
  options: OpenImageOptions,
): Promise<BlockNode> {
  const readOnly = options.readOnly ?? false;
  let driverName = options.format;
  let guessed = false;
  if (!driverName) {
    const n = Math.min(PROBE_BUF_SIZE, proto.totalBytes);
    const head = new Uint8Array(n);
    await bdrvPread(proto, 0, n, head);
    const probed = probeFormat(head, filename);
    driverName = probed.driver.name;
    guessed = probed.guessed;
  }
  const drv = await loadDriver(driverName);
  if (!drv || drv.kind === 'protocol') {
    throw new BlockError('EINVAL', `Unknown driver '${driverName}'`);
  }
  if (guessed && !readOnly) {
    // As QEMU: only a writable open warns (block 0's writes are what the guess restricts).
    ctx.warn(
      `WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
        `         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n` +
        `         Specify the 'raw' format explicitly to remove the restrictions.`,
    );
  }
  const opts: OpenOptions = { ...(options.driverOptions ?? {}), readOnly };
  const bs = new BlockNode(drv, filename, opts, options.nodeName);
  bs.probedAsRaw = guessed;
  contexts.set(bs, ctx);
  bs.attach(proto, 'file');
  await drv.open(bs, opts);
  return bs;
}

/**
 * The key secrets a node's options give its backing image (`backing.encrypt.key-secret`,
 * `backing.key-secret`, deeper `backing.backing.…`), as the backing node's own options.
 */
function backingKeyOptions(options: Record<string, unknown>): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) {
    if (/^backing\.(backing\.)*(encrypt\.key-secret|key-secret)$/.test(k)) out[k.slice('backing.'.length)] = v;
  }
  return Object.keys(out).length ? out : undefined;
}

/** Opens the backing file named in `bs`'s header, as openImage does for each image of a chain. */
export function openHeaderBacking(ctx: OpenContext, bs: BlockNode): Promise<void> {
  return openBacking(ctx, bs, [bs.filename]);
}

/**
 * Opens a backing name that stands for options (`json:{…}`, `blkdebug:…`)
 * rather than a file; src/block/open-tree.ts installs it. Undefined: the
 * name is an ordinary file name.
 */
export type OptionsNameOpener = (ctx: OpenContext, name: string, format: string | undefined) => Promise<BlockNode> | undefined;
let optionsNameOpener: OptionsNameOpener | undefined;
export function setOptionsNameOpener(opener: OptionsNameOpener): void {
  optionsNameOpener = opener;
}

async function openBacking(ctx: OpenContext, bs: BlockNode, chain: string[], backingFormat?: string, forceShare?: boolean): Promise<void> {
  const ref = bs.backingFile!;
  const special = optionsNameOpener?.(ctx, ref, bs.backingFormat ?? undefined);
  if (special) {
    let backing: BlockNode;
    try {
      backing = await special;
    } catch (e) {
      const why = e instanceof BlockError ? e.message : describeCode(fromHostError(e, '').code);
      throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `${bs.filename}: Could not open backing file: ${why}`, { cause: e });
    }
    bs.fullBackingFilename = ref;
    bs.attach(backing, 'backing');
    return;
  }
  const resolved = ctx.storage.resolve(bs.filename, ref);
  bs.fullBackingFilename = resolved;
  if (chain.includes(resolved)) {
    throw new BlockError(
      'ELOOP',
      `${chain[0]}: backing chain loop: ${[...chain, resolved].map((n) => `'${n}'`).join(' -> ')}`,
    );
  }
  if (chain.length >= MAX_BACKING_DEPTH) {
    throw new BlockError('ELOOP', `${chain[0]}: backing chain deeper than ${MAX_BACKING_DEPTH} images at '${resolved}'`);
  }
  let backing: BlockNode;
  try {
    backing = await openChain(
      ctx,
      resolved,
      { format: backingFormat ?? bs.backingFormat ?? undefined, readOnly: true, forceShare, driverOptions: backingKeyOptions(bs.options) },
      [...chain, resolved],
    );
  } catch (e) {
    if (e instanceof BlockError && e.code === 'ELOOP') throw e;
    const why = e instanceof BlockError ? e.message : describeCode(fromHostError(e, '').code);
    throw new BlockError(
      e instanceof BlockError ? e.code : 'EIO',
      `${bs.filename}: Could not open backing file: ${why}`,
      { cause: e },
    );
  }
  bs.attach(backing, 'backing');
  bs.autoBackingFile = backing.filename;
}

/**
 * QEMU's bdrv_dirname: the directory relative names stored in `bs` resolve
 * against (the part of its innermost file's name up to the last slash).
 * Throws, with QEMU's text, where no single directory exists (a quorum below).
 */
export function bdrvDirname(bs: BlockNode): string {
  for (let n = bs; ; n = n.file.node) {
    if (n.driver.dirname) return n.driver.dirname(n);
    if (!n.file) {
      if (n.driver.kind !== 'protocol') throw new BlockError('EINVAL', `Cannot generate a base directory for ${n.driver.name} nodes`);
      return n.filename.slice(0, n.filename.lastIndexOf('/') + 1);
    }
  }
}

/**
 * Opens a file that `bs` refers to (an external data file) through the same
 * storage, as a protocol node attached under `role`. QEMU opens the name as
 * written (a relative name from the working directory); a name not found
 * that way is looked for beside the image, where blocktab used to make them,
 * and a miss reports the name as written, as QEMU does.
 */
export async function openFileChild(bs: BlockNode, reference: string, role: ChildRole): Promise<BlockNode> {
  const ctx = contexts.get(bs);
  if (!ctx) throw new BlockError('EINVAL', `${bs.filename}: no storage to open '${reference}' from`);
  let node: BlockNode;
  try {
    node = await openProtocol(ctx.storage, reference, bs.readOnly);
  } catch (e) {
    const beside = ctx.storage.resolve(bs.filename, reference);
    if (!(e instanceof BlockError) || e.code !== 'ENOENT' || beside === reference) throw e;
    node = await openProtocol(ctx.storage, beside, bs.readOnly).catch(() => {
      throw e;
    });
  }
  bs.attach(node, role);
  return node;
}

/**
 * Opens a further file that `bs`'s image names (a VMDK extent) through the
 * same storage, as a protocol node the driver owns: it is not attached under
 * a role, and the driver closes it with closeNode in its `close`.
 */
export async function openOwnedFile(bs: BlockNode, reference: string): Promise<BlockNode> {
  const ctx = contexts.get(bs);
  if (!ctx) throw new BlockError('EINVAL', `${bs.filename}: no storage to open '${reference}' from`);
  const resolved = ctx.storage.resolve(bs.filename, reference);
  return openProtocol(ctx.storage, resolved, bs.readOnly);
}

/**
 * Closes `bs` and every child no other parent still uses. Children for which
 * `keep` answers true are detached but left open (the Engine keeps nodes the
 * user added by name until the user deletes them).
 */
export async function closeNode(bs: BlockNode, keep?: (child: BlockNode) => boolean): Promise<void> {
  if (bs.closed) return;
  if (bs.parents.length > 0) return;
  try {
    // As QEMU's bdrv_close, a failed flush does not stop the driver's close (which may report what it
    // could not write, as qcow2's "Failed to flush the L2 table cache"); the caller still gets the error.
    let flushError: unknown = null;
    if (!bs.readOnly) await bdrvFlush(bs).catch((e: unknown) => (flushError = e ?? new Error('flush failed')));
    bs.closed = true;
    await bs.driver.close?.(bs);
    releaseNamedDirtyBitmaps(bs);
    if (flushError) throw flushError;
  } finally {
    for (const role of ['backing', 'data-file', 'file'] as const) {
      const child = bs.detach(role);
      if (child && !keep?.(child)) await closeNode(child, keep);
    }
    for (const child of bs.detachDataChildren()) if (!keep?.(child)) await closeNode(child, keep);
  }
}

/** The chain from `top` down: [top, backing, backing's backing, …]. */
export function backingChain(top: BlockNode): BlockNode[] {
  const out: BlockNode[] = [];
  for (let p: BlockNode | null = top; p; p = p.backing?.node ?? null) out.push(p);
  return out;
}
