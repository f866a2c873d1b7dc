/**
 * The `blkdebug` filter, as QEMU's: error injection and breakpoints driven by
 * the debug events the drivers above raise (src/block/debug-event.ts).
 *
 * Rules come from a config file (`config`, or `blkdebug:CONFIG:IMAGE`) with
 * `[inject-error]` / `[set-state]` sections, and from the `inject-error.N.*`
 * / `set-state.N.*` options. The node has a state (1 at open). When an event
 * is raised, the rules for it whose `state` is 0 or the current state run:
 * inject-error rules become the active set (replacing the previous set),
 * set-state rules pick the state the node moves to once every rule ran. A
 * request (read, write, write-zeroes, discard, flush, block-status) fails with
 * the first active rule whose `sector` (any, by default) falls in it and whose
 * `iotype` matches (all but block-status by default); a `once` rule is
 * deleted when it fires.
 *
 * Breakpoints (qemu-io's `break EVENT TAG`) are suspend rules: the request
 * that raises the event is held until `resume TAG`. `align`, `max-transfer`,
 * `opt-write-zero`, `max-write-zero`, `opt-discard` and `max-discard` give the
 * node request limits, so the layers above get exercised with them.
 */
import { BlockError, describeCode, type BlockErrorCode } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { filterFile, filterPassThrough } from './pass-through.js';
import { debugMessage, isBlkdebugEvent, notifyRequestSuspended, type BlkdebugEvent, type DebugEventDriver } from '../block/debug-event.js';
import { isTree, optBool, optNumber, optSize, optString, type OptionsTree, type OptionValue } from '../block/options-tree.js';
import { openContext } from '../block/open.js';
import { BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW } from '../block/status.js';

/** QAPI's BlkdebugIOType. */
const IO_TYPES = ['read', 'write', 'write-zeroes', 'discard', 'flush', 'block-status'] as const;
type IoType = (typeof IO_TYPES)[number];
const DEFAULT_IO_TYPES: ReadonlySet<IoType> = new Set(['read', 'write', 'write-zeroes', 'discard', 'flush']);

interface InjectRule {
  action: 'inject-error';
  event: BlkdebugEvent;
  state: number;
  errno: number;
  once: boolean;
  immediately: boolean;
  /** Byte offset the request must cover, or -1 for any. */
  offset: number;
  iotypes: ReadonlySet<IoType>;
}
interface SetStateRule {
  action: 'set-state';
  event: BlkdebugEvent;
  state: number;
  newState: number;
}
interface SuspendRule {
  action: 'suspend';
  event: BlkdebugEvent;
  state: 0;
  tag: string;
}
type Rule = InjectRule | SetStateRule | SuspendRule;

interface Suspended {
  tag: string;
  resume: () => void;
}

interface BlkdebugState {
  state: number;
  /** Rules by event, newest first (QEMU inserts at the head). */
  rules: Map<BlkdebugEvent, Rule[]>;
  active: InjectRule[];
  suspended: Suspended[];
  /** Says what a breakpoint does (qemu-io prints it). */
  print: (line: string) => void;
}

function st(bs: BlockNode): BlkdebugState {
  return bs.state<BlkdebugState>();
}

/** errno values as Linux numbers them, for the codes blocktab has. */
const ERRNO: Record<number, BlockErrorCode> = {
  1: 'EPERM', 2: 'ENOENT', 5: 'EIO', 12: 'ENOMEM', 13: 'EACCES', 16: 'EBUSY', 17: 'EEXIST',
  22: 'EINVAL', 27: 'EFBIG', 28: 'ENOSPC', 30: 'EROFS', 40: 'ELOOP', 95: 'ENOTSUP', 123: 'ENOMEDIUM', 125: 'ECANCELED',
};


// ------------------------------------------------------------ rules

function eventOf(group: OptionsTree): BlkdebugEvent {
  const name = optString(group, 'event');
  if (name === undefined) throw new BlockError('EINVAL', 'Missing event name for rule');
  if (!isBlkdebugEvent(name)) throw new BlockError('EINVAL', `Invalid parameter '${name}'`);
  return name;
}

function injectRule(group: OptionsTree): InjectRule {
  const iotype = optString(group, 'iotype');
  if (iotype !== undefined && !(IO_TYPES as readonly string[]).includes(iotype)) {
    throw new BlockError('EINVAL', `Invalid parameter '${iotype}'`);
  }
  const sector = optNumber(group, 'sector') ?? -1;
  return {
    action: 'inject-error',
    event: eventOf(group),
    state: optNumber(group, 'state') ?? 0,
    errno: optNumber(group, 'errno') ?? 5,
    once: optBool(group, 'once') ?? false,
    immediately: optBool(group, 'immediately') ?? false,
    offset: sector === -1 ? -1 : sector * 512,
    iotypes: iotype ? new Set([iotype as IoType]) : DEFAULT_IO_TYPES,
  };
}

function setStateRule(group: OptionsTree): SetStateRule {
  // Without `state` the rule applies in every state (0), as for inject-error.
  return { action: 'set-state', event: eventOf(group), state: optNumber(group, 'state') ?? 0, newState: optNumber(group, 'new_state') ?? 0 };
}

/** The groups of one kind in the options: a list, or a single dict. */
function groups(v: OptionValue | undefined): OptionsTree[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((g) => {
    if (!isTree(g)) throw new BlockError('EINVAL', 'Invalid rule: expected a dict of options');
    return g;
  });
}

/**
 * A blkdebug config file (QEMU's qemu_config_parse): `[inject-error]` and
 * `[set-state]` sections of `key = "value"` lines; `#` starts a comment.
 */
export function parseBlkdebugConfig(text: string, name: string): { inject: OptionsTree[]; setState: OptionsTree[] } {
  const inject: OptionsTree[] = [];
  const setState: OptionsTree[] = [];
  let cur: OptionsTree | undefined;
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const section = /^\[([a-z-]+)(?:\s+"[^"]*")?\]$/.exec(line);
    if (section) {
      cur = {};
      if (section[1] === 'inject-error') inject.push(cur);
      else if (section[1] === 'set-state') setState.push(cur);
      else throw new BlockError('EINVAL', `${name}:${i + 1}: There is no option group '${section[1]}'`);
      return;
    }
    const kv = /^([A-Za-z0-9_.-]+)\s*=\s*"([^"]*)"$/.exec(line);
    if (!kv || !cur) throw new BlockError('EINVAL', `${name}:${i + 1}: Parse error`);
    cur[kv[1]!] = kv[2]!;
  });
  return { inject, setState };
}

function addRule(s: BlkdebugState, rule: Rule): void {
  let list = s.rules.get(rule.event);
  if (!list) s.rules.set(rule.event, (list = []));
  list.unshift(rule);
}

function removeRule(s: BlkdebugState, rule: Rule): void {
  const list = s.rules.get(rule.event);
  const i = list?.indexOf(rule) ?? -1;
  if (i >= 0) list!.splice(i, 1);
  const a = s.active.indexOf(rule as InjectRule);
  if (a >= 0) s.active.splice(a, 1);
}

/** The request fails here when an active rule covers it (QEMU's rule_check). */
function ruleCheck(bs: BlockNode, offset: number, bytes: number, iotype: IoType): void {
  const s = st(bs);
  const rule = s.active.find(
    (r) => (r.offset === -1 || (bytes > 0 && r.offset >= offset && r.offset < offset + bytes)) && r.iotypes.has(iotype),
  );
  if (!rule || rule.errno === 0) return;
  if (rule.once) removeRule(s, rule);
  const code = ERRNO[rule.errno] ?? 'EIO';
  // The injected errno is the whole story: QEMU's callers print its strerror.
  throw new BlockError(code, describeCode(code));
}

// ------------------------------------------------------------ limits

function checkLimit(value: number | undefined, name: string, multipleOf: number): number {
  if (value === undefined || value === 0) return 0;
  if (value < 0 || value >= 0x7fffffff || value % multipleOf !== 0) {
    throw new BlockError('EINVAL', `Cannot meet constraints with ${name} ${value}`);
  }
  return value;
}

function applyLimits(bs: BlockNode, o: OptionsTree): void {
  const align = optSize(o, 'align') ?? 0;
  if (align && (align < 0 || align >= 0x7fffffff || (align & (align - 1)) !== 0)) {
    throw new BlockError('EINVAL', `Cannot meet constraints with align ${align}`);
  }
  const maxTransfer = checkLimit(optSize(o, 'max-transfer'), 'max-transfer', Math.max(align, 512));
  const optWriteZero = checkLimit(optSize(o, 'opt-write-zero'), 'opt-write-zero', Math.max(align, 1));
  const maxWriteZero = checkLimit(optSize(o, 'max-write-zero'), 'max-write-zero', Math.max(optWriteZero, align, 1));
  const optDiscard = checkLimit(optSize(o, 'opt-discard'), 'opt-discard', Math.max(align, 1));
  const maxDiscard = checkLimit(optSize(o, 'max-discard'), 'max-discard', Math.max(optDiscard, align, 1));
  const below = bs.file!.node.limits;
  bs.limits = {
    requestAlignment: align || below.requestAlignment,
    maxTransfer: maxTransfer || below.maxTransfer,
    pwriteZeroesAlignment: optWriteZero || undefined,
    pdiscardAlignment: optDiscard || undefined,
    maxPwriteZeroes: maxWriteZero || undefined,
    maxPdiscard: maxDiscard || undefined,
  };
}

// ------------------------------------------------------------ the driver

const file = filterFile;

async function readConfigFile(bs: BlockNode, path: string): Promise<string> {
  const ctx = openContext(bs);
  if (!ctx) throw new BlockError('EINVAL', `Could not read blkdebug config file: no storage to read '${path}' from`);
  let node: BlockNode;
  try {
    node = await ctx.storage.openProtocol(path, { readOnly: true });
  } catch (e) {
    const why = e instanceof BlockError ? e.message.replace(/^.*: /, '') : String(e);
    throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `Could not read blkdebug config file: ${why}`);
  }
  try {
    const buf = new Uint8Array(node.totalBytes);
    await bdrvPread(node, 0, buf.length, buf);
    // A host file's length counts in whole sectors: the tail past its real end reads as zeros.
    const end = buf.indexOf(0);
    return new TextDecoder().decode(end < 0 ? buf : buf.subarray(0, end));
  } finally {
    node.closed = true;
    await node.driver.close?.(node);
  }
}

const debugHooks: DebugEventDriver = {
  debugEvent(bs, event) {
    const s = st(bs);
    const rules = s.rules.get(event);
    if (!rules || rules.length === 0) return undefined;
    let newState = s.state;
    let injected = false;
    const holds: Promise<void>[] = [];
    for (const rule of [...rules]) {
      if (rule.state !== 0 && rule.state !== s.state) continue;
      if (rule.action === 'inject-error') {
        if (!injected) s.active = [];
        injected = true;
        s.active.unshift(rule);
      } else if (rule.action === 'set-state') {
        newState = rule.newState;
      } else {
        removeRule(s, rule);
        holds.push(
          new Promise<void>((resume) => {
            s.suspended.unshift({ tag: rule.tag, resume });
            s.print(`blkdebug: Suspended request '${rule.tag}'`);
            notifyRequestSuspended();
          }),
        );
      }
    }
    s.state = newState;
    return holds.length ? Promise.all(holds).then(() => undefined) : undefined;
  },
  debugBreakpoint(bs, event, tag) {
    if (!isBlkdebugEvent(event)) throw new BlockError('ENOENT', 'No such file or directory');
    addRule(st(bs), { action: 'suspend', event, state: 0, tag });
  },
  debugRemoveBreakpoint(bs, tag) {
    const s = st(bs);
    let found = false;
    for (const r of s.suspended.filter((r) => r.tag === tag)) {
      resume(s, r);
      found = true;
    }
    for (const list of s.rules.values()) {
      for (const rule of list.filter((r) => r.action === 'suspend' && r.tag === tag)) {
        removeRule(s, rule);
        found = true;
      }
    }
    if (!found) throw new BlockError('ENOENT', 'No such file or directory');
  },
  debugResume(bs, tag) {
    const s = st(bs);
    const r = s.suspended.find((r) => r.tag === tag);
    if (!r) throw new BlockError('ENOENT', 'No such file or directory');
    resume(s, r);
  },
  debugIsSuspended(bs, tag) {
    return st(bs).suspended.some((r) => r.tag === tag);
  },
};

function resume(s: BlkdebugState, r: Suspended): void {
  s.print(`blkdebug: Resuming request '${r.tag}'`);
  s.suspended.splice(s.suspended.indexOf(r), 1);
  r.resume();
}

/** Options that change what blkdebug does (QEMU's blkdebug_refresh_filename keeps a plain name only without them). */
const STRONG_OPTIONS = /^(inject-error|set-state|align|max-transfer|opt-write-zero|max-write-zero|opt-discard|max-discard|take-child-perms|unshare-child-perms)(\.|$)/;

export const blkdebugDriver: BlockDriver & DebugEventDriver = {
  name: 'blkdebug',
  kind: 'filter',
  ...debugHooks,
  hasExactFilename: (options) => !Object.keys(options).some((k) => STRONG_OPTIONS.test(k)),
  async open(bs, options) {
    const o = options as OptionsTree;
    const s: BlkdebugState = { state: 1, rules: new Map(), active: [], suspended: [], print: debugMessage };
    const config = optString(o, 'config');
    const fromFile = config ? parseBlkdebugConfig(await readConfigFile(bs, config), config) : { inject: [], setState: [] };
    for (const g of [...fromFile.inject, ...groups(o['inject-error'])]) addRule(s, injectRule(g));
    for (const g of [...fromFile.setState, ...groups(o['set-state'])]) addRule(s, setStateRule(g));
    bs.opaque = s;
    applyLimits(bs, o);
    bs.totalBytes = await bdrvGetLength(file(bs));
  },
  async preadv(bs, offset, bytes, buf) {
    ruleCheck(bs, offset, bytes, 'read');
    await bdrvPread(file(bs), offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    ruleCheck(bs, offset, bytes, 'write');
    await bdrvPwrite(file(bs), offset, bytes, buf, flags);
    bs.totalBytes = Math.max(bs.totalBytes, file(bs).totalBytes);
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    // Requests below the preferred alignment go back to the core's explicit zeros, so that fallback gets exercised.
    const align = Math.max(bs.limits.requestAlignment, bs.limits.pwriteZeroesAlignment ?? 1);
    if (bytes < align) throw new BlockError('ENOTSUP', `${bs.filename}: write-zeroes below the alignment`);
    ruleCheck(bs, offset, bytes, 'write-zeroes');
    await bdrvPwriteZeroes(file(bs), offset, bytes, flags);
    bs.totalBytes = Math.max(bs.totalBytes, file(bs).totalBytes);
  },
  async pdiscard(bs, offset, bytes) {
    // Every piece passes through (the node below may act on part of a small one); a piece as large as the
    // alignment must lie on it, or the block layer cut the request wrongly.
    const align = Math.max(bs.limits.requestAlignment, bs.limits.pdiscardAlignment ?? 1);
    const max = bs.limits.maxPdiscard;
    if ((bytes >= align && (offset % align !== 0 || bytes % align !== 0)) || (max && bytes > max)) {
      throw new BlockError('EINVAL', `${bs.filename}: discard at ${offset} (+${bytes} bytes) breaks the limits (alignment ${align}, max ${max ?? 'none'})`);
    }
    ruleCheck(bs, offset, bytes, 'discard');
    await bdrvPdiscard(file(bs), offset, bytes);
  },
  async flush(bs) {
    ruleCheck(bs, 0, 0, 'flush');
    await bdrvFlush(file(bs));
  },
  async blockStatus(bs, _wantZero, offset, bytes) {
    ruleCheck(bs, offset, bytes, 'block-status');
    // A filter: the data is where the file has it (QEMU's bdrv_co_block_status_from_file).
    return { status: BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, pnum: bytes, map: offset, file: file(bs) };
  },
  ...filterPassThrough,
  getDriverInfo: () => undefined,
};

registerDriver(blkdebugDriver);
