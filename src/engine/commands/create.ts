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
 * - `qcow2` (BlockdevCreateOptionsQcow2): writes a new image into `file`, a
 *   node-name of a protocol node opened read-write and used by nothing else
 *   (or a nested `{ driver: <storage>, filename }`), with an optional
 *   `data-file` given the same way.
 * - `raw` (not in QEMU, whose raw images are made by `file`): sets the size
 *   of `file`.
 */
import { BlockError } from '../../block/errors.js';
import { bdrvFlush, bdrvTruncate } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { closeNode, type Storage } from '../../block/open.js';
import type { PreallocMode } from '../../block/driver.js';
import { createQcow2, type Qcow2CreateOptions } from '../../formats/qcow2/create.js';
import type { Engine } from '../engine.js';
import { checkArgs, isDict, type ArgSpec, type Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import { startJob } from './jobs.js';
import type { QmpCommandTable } from './types.js';

const PREALLOC = { enum: ['off', 'metadata', 'falloc', 'full'] } as const;

/** QAPI BlockdevCreateOptionsQcow2. */
const QCOW2: ArgSpec = {
  driver: 'str',
  file: 'BlockdevRef',
  '*data-file': 'BlockdevRef',
  '*data-file-raw': 'bool',
  '*extended-l2': 'bool',
  size: 'int',
  '*version': { enum: ['v2', 'v3'] },
  '*backing-file': 'str',
  '*backing-fmt': 'str',
  '*encrypt': 'any',
  '*cluster-size': 'int',
  '*preallocation': PREALLOC,
  '*lazy-refcounts': 'bool',
  '*refcount-bits': 'int',
  '*compression-type': { enum: ['zlib', 'zstd'] },
};

/** QAPI BlockdevCreateOptionsFile (for every storage). */
const FILE: ArgSpec = { driver: 'str', filename: 'str', size: 'int', '*preallocation': PREALLOC, '*nocow': 'bool', '*extent-size-hint': 'int' };

const RAW: ArgSpec = { driver: 'str', file: 'BlockdevRef', size: 'int', '*preallocation': PREALLOC };

/** A protocol node to write the image into: an existing node, or one opened for the job (closed after it). */
async function protocolNode(engine: Engine, ref: string | Args, what: string): Promise<{ bs: BlockNode; temporary: boolean }> {
  if (typeof ref === 'string') {
    const bs = engine.lookup(ref, 'node');
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

async function createQcow2On(engine: Engine, o: Args): Promise<void> {
  if (o.encrypt !== undefined) throw genericError('encrypted qcow2 images are not supported', 'ENOTSUP');
  const size = o.size as number;
  if (size < 0 || size % 512 !== 0) throw genericError('Image size must be a multiple of 512 bytes');
  if (o['backing-fmt'] !== undefined && o['backing-file'] === undefined) throw genericError('Backing format cannot be used without backing file');
  if (o['data-file-raw'] === true && o['data-file'] === undefined) throw genericError('data-file-raw requires data-file');
  const opts: Qcow2CreateOptions = {
    size,
    version: o.version === 'v2' ? 2 : o.version === 'v3' ? 3 : undefined,
    clusterSize: o['cluster-size'] as number | undefined,
    refcountBits: o['refcount-bits'] as number | undefined,
    lazyRefcounts: o['lazy-refcounts'] as boolean | undefined,
    extendedL2: o['extended-l2'] as boolean | undefined,
    compressionType: o['compression-type'] as 'zlib' | 'zstd' | undefined,
    preallocation: (o.preallocation as PreallocMode | undefined) ?? 'off',
    backingFile: o['backing-file'] as string | undefined,
    backingFormat: o['backing-fmt'] as string | undefined,
    dataFileRaw: o['data-file-raw'] as boolean | undefined,
  };
  const file = await protocolNode(engine, o.file as string | Args, 'file');
  let data: { bs: BlockNode; temporary: boolean } | undefined;
  try {
    if (o['data-file'] !== undefined) {
      data = await protocolNode(engine, o['data-file'] as string | Args, 'data-file');
      // The header stores the data file's name as the image names it.
      opts.dataFile = data.bs.filename;
      await bdrvTruncate(data.bs, 0, true);
    }
    // The image starts empty, as QEMU's create opens the node with a fresh length of 0 (BDRV_O_RESIZE and a truncate).
    await bdrvTruncate(file.bs, 0, true);
    await createQcow2(file.bs, opts, data?.bs);
    await bdrvFlush(file.bs);
  } finally {
    if (data?.temporary) await closeNode(data.bs);
    if (file.temporary) await closeNode(file.bs);
  }
}

/** Checks BlockdevCreateOptions against its driver's branch (at command time, as QAPI does) and returns the job's work. */
function plan(engine: Engine, o: Args): () => Promise<void> {
  checkArgs({ driver: 'str' }, o, 'options.', true);
  const driver = o.driver as string;
  const prealloc = (o.preallocation as PreallocMode | undefined) ?? 'off';
  if (driver === 'qcow2') {
    checkArgs(QCOW2, o, 'options.');
    return () => createQcow2On(engine, o);
  }
  if (driver === 'raw') {
    checkArgs(RAW, o, 'options.');
    return async () => {
      const file = await protocolNode(engine, o.file as string | Args, 'file');
      try {
        await bdrvTruncate(file.bs, o.size as number, true, prealloc === 'metadata' ? 'off' : prealloc);
        await bdrvFlush(file.bs);
      } finally {
        if (file.temporary) await closeNode(file.bs);
      }
    };
  }
  const storage = engine.storage(driver === 'https' ? 'http' : driver);
  if (storage) {
    checkArgs(FILE, o, 'options.');
    return () => createOnStorage(storage, o.filename as string, o.size as number, prealloc);
  }
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
