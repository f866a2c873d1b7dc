/**
 * blockdev-create (QEMU's qmp_blockdev_create): makes an image with QAPI's
 * BlockdevCreateOptions, as a job of type "create" (JOB_STATUS_CHANGE events,
 * query-jobs; it stays "concluded" until job-dismiss, as QEMU's create job is
 * manually dismissed). The work runs at once — the job is there so clients
 * written for QEMU see what they expect.
 *
 * Drivers:
 * - a storage's name (`opfs`, `memory`, `file`, …; QEMU's `file`): creates
 *   `filename` with `size` bytes (BlockdevCreateOptionsFile).
 * - a format driver with a `create` hook (qcow2, raw, …, found in the
 *   registry): writes a new image into `file`, a node-name of a protocol node
 *   opened read-write and used by nothing else (or a nested
 *   `{ driver: <storage>, filename }`). The format's QAPI members come from
 *   its creation options (OptionDesc.qapi: `cluster_size` is `cluster-size`,
 *   qcow2's `compat` is `version`, a `ref` option such as `data-file` names a
 *   node given the same way as `file`). raw is not in QEMU, whose raw images
 *   are made by `file`; here it sets the length of `file`.
 */
import { BlockError } from '../../block/errors.js';
import { bdrvFlush, bdrvTruncate } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { closeNode, type Storage } from '../../block/open.js';
import { findDriver, type BlockDriver, type PreallocMode } from '../../block/driver.js';
import { appendOptionLists, PROTOCOL_CREATE_OPTS, type OptionDesc, type OptionValues } from '../../block/options.js';
import type { Engine } from '../engine.js';
import { checkArgs, isDict, type ArgSpec, type Args, type QapiType } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import { startJob } from './jobs.js';
import type { QmpCommandTable } from './types.js';

const PREALLOC = { enum: ['off', 'metadata', 'falloc', 'full'] } as const;

/** QAPI BlockdevCreateOptionsFile (for every storage). */
const FILE: ArgSpec = { driver: 'str', filename: 'str', size: 'int', '*preallocation': PREALLOC, '*nocow': 'bool', '*extent-size-hint': 'int' };

/** A format's creation options as QAPI members: the option, its member name and type. */
interface QapiMember {
  desc: OptionDesc;
  name: string;
  type: QapiType;
}

function qapiMembers(drv: BlockDriver): QapiMember[] {
  const out: QapiMember[] = [];
  for (const desc of appendOptionLists(drv.createOptions ?? [], PROTOCOL_CREATE_OPTS)) {
    if (desc.qapi === false || desc.name === 'size') continue;
    const q = desc.qapi ?? {};
    const name = q.name ?? desc.name.replace(/_/g, '-');
    const type: QapiType = q.ref ? 'BlockdevRef' : q.any ? 'any' : q.enum ? { enum: q.enum } : desc.type === 'bool' ? 'bool' : desc.type === 'str' ? 'str' : 'int';
    out.push({ desc, name, type });
  }
  return out;
}

/** BlockdevCreateOptions<Format>: driver, file, size and the format's members. */
function qapiSpec(members: QapiMember[]): ArgSpec {
  const spec: Record<string, QapiType> = { driver: 'str', file: 'BlockdevRef', size: 'int' };
  for (const m of members) spec[`*${m.name}`] = m.type;
  return spec;
}

/** A protocol node to write the image into: an existing node, or one opened for the job (closed after it). */
async function protocolNode(engine: Engine, ref: string | Args, what: string): Promise<{ bs: BlockNode; temporary: boolean }> {
  if (typeof ref === 'string') {
    const bs = engine.lookup(ref);
    if (bs.driver.kind !== 'protocol') throw genericError(`'${what}' must be a protocol node (node '${ref}' is ${bs.driver.name})`);
    if (bs.readOnly) throw genericError(`Block node '${ref}' is read-only`, 'EROFS');
    // QEMU's permission system: the create job needs write and resize, which a format node on top shares with nobody.
    if (bs.parents.length > 0) throw genericError(`Node '${ref}' is in use: close the format node on it first`, 'EBUSY');
    return { bs, temporary: false };
  }
  checkArgs({ driver: 'str', filename: 'str' }, ref, `${what}.`);
  const storage = engine.storage(ref.driver as string);
  if (!storage) throw genericError(`Parameter '${what}.driver' does not accept value '${ref.driver as string}'`);
  return { bs: await storage.openProtocol(ref.filename as string, { readOnly: false }), temporary: true };
}

async function createOnStorage(storage: Storage, filename: string, size: number, prealloc: PreallocMode): Promise<void> {
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: the ${storage.name} storage cannot create files`);
  await storage.createFile(filename);
  const bs = await storage.openProtocol(filename, { readOnly: false });
  try {
    if (size > 0) await bdrvTruncate(bs, size, true, prealloc === 'metadata' ? 'off' : prealloc);
    await bdrvFlush(bs);
  } finally {
    await closeNode(bs);
  }
}

/** The creation job for a format driver: QAPI members become option values, `ref` members nodes. */
async function createFormatOn(engine: Engine, drv: BlockDriver, members: QapiMember[], o: Args): Promise<void> {
  const size = o.size as number;
  const values: OptionValues = new Map([['size', String(size)]]);
  const file = await protocolNode(engine, o.file as string | Args, 'file');
  const refs = new Map<string, { bs: BlockNode; temporary: boolean }>();
  try {
    for (const m of members) {
      const v = o[m.name];
      if (v === undefined) continue;
      if (m.type === 'BlockdevRef') {
        const ref = await protocolNode(engine, v as string | Args, m.name);
        refs.set(m.desc.name, ref);
        // The image stores the further file's name as the node has it.
        values.set(m.desc.name, ref.bs.filename);
        await bdrvTruncate(ref.bs, 0, true);
      } else {
        values.set(m.desc.name, typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v));
      }
    }
    // The image starts empty, as QEMU's create opens the node with a fresh length of 0 (BDRV_O_RESIZE and a truncate).
    await bdrvTruncate(file.bs, 0, true);
    await drv.create!(file.bs, {
      filename: file.bs.filename,
      size,
      values,
      origin: 'blockdev-create',
      async openFile(option) {
        const ref = refs.get(option);
        if (!ref) throw genericError(`'${option}' names no node`);
        return ref.bs;
      },
    });
    for (const ref of refs.values()) await bdrvFlush(ref.bs);
    await bdrvFlush(file.bs);
  } finally {
    for (const ref of refs.values()) if (ref.temporary) await closeNode(ref.bs);
    if (file.temporary) await closeNode(file.bs);
  }
}

/** Checks BlockdevCreateOptions against its driver's branch (at command time, as QAPI does) and returns the job's work. */
function plan(engine: Engine, o: Args): () => Promise<void> {
  checkArgs({ driver: 'str' }, o, 'options.', true);
  const driver = o.driver as string;
  const drv = findDriver(driver);
  if (drv?.kind === 'format' && drv.create) {
    const members = qapiMembers(drv);
    checkArgs(qapiSpec(members), o, 'options.');
    return () => createFormatOn(engine, drv, members, o);
  }
  const storage = engine.storage(driver === 'https' ? 'http' : driver);
  if (storage) {
    checkArgs(FILE, o, 'options.');
    const prealloc = (o.preallocation as PreallocMode | undefined) ?? 'off';
    return () => createOnStorage(storage, o.filename as string, o.size as number, prealloc);
  }
  // A name that is no driver at all fails QAPI's check of the union's discriminator (named without its path, as QEMU 7.2).
  if (!drv) throw genericError(`Parameter 'driver' does not accept value '${driver}'`);
  throw genericError(`Driver '${driver}' does not support blockdev-create`, 'ENOTSUP');
}

export const createCommands: QmpCommandTable = {
  'blockdev-create': {
    args: { 'job-id': 'str', options: 'any' },
    run(engine, args) {
      const options = args.options;
      if (!isDict(options)) throw genericError("Invalid parameter type for 'options', expected: object");
      const work = plan(engine, options);
      startJob(engine, {
        id: args['job-id'] as string,
        type: 'create',
        device: args['job-id'] as string,
        // QEMU's create job is manually dismissed.
        autoDismiss: false,
        options: { work },
      });
    },
  },
};
