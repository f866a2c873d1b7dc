/**
 * I/O throttling over QMP: block_set_io_throttle (a device's limits, in a
 * group named after the device unless `group` says otherwise) and the
 * throttle-group objects that `throttle` filter nodes use (object-add,
 * object-del, qom-get / qom-set of `limits`). Limits and their checks are
 * src/block/throttle.ts; groups and fairness src/block/throttle-group.ts.
 */
import { BlockError } from '../../block/errors.js';
import { checkConfig, configFromLimits, emptyConfig, limitsFromConfig, throttleEnabled, BUCKETS, type ThrottleLimits } from '../../block/throttle.js';
import type { Engine } from '../engine.js';
import { checkArgs, type ArgSpec, type Args } from '../qapi-args.js';
import { QmpError, genericError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

/** QAPI ThrottleLimits: every member optional. */
export const THROTTLE_LIMITS: ArgSpec = Object.fromEntries([
  ...BUCKETS.flatMap((n) => [`*${n}`, `*${n}-max`, `*${n}-max-length`]).map((k) => [k, 'int']),
  ['*iops-size', 'int'],
]);

const LEGACY: [string, string][] = [
  ['bps', 'bps-total'],
  ['bps_rd', 'bps-read'],
  ['bps_wr', 'bps-write'],
  ['iops', 'iops-total'],
  ['iops_rd', 'iops-read'],
  ['iops_wr', 'iops-write'],
];

/** QAPI BlockIOThrottle. */
const BLOCK_IO_THROTTLE: ArgSpec = {
  '*device': 'str',
  '*id': 'str',
  ...Object.fromEntries(LEGACY.map(([k]) => [k, 'int'])),
  ...Object.fromEntries(LEGACY.flatMap(([k]) => [`*${k}_max`, `*${k}_max_length`]).map((k) => [k, 'int'])),
  '*iops_size': 'int',
  '*group': 'str',
};

/** QEMU's id_wellformed. */
const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;

function bad(e: unknown): never {
  if (e instanceof BlockError && !(e instanceof QmpError)) throw genericError(e.message, e.code);
  throw e;
}

/** "/objects/ID" → the throttle group object ID. */
function objectAt(engine: Engine, path: string) {
  const m = /^\/objects\/([^/]+)$/.exec(path);
  const g = m && engine.throttleGroups.isObject(m[1]!) ? engine.throttleGroups.get(m[1]!) : undefined;
  if (!g) throw new QmpError('DeviceNotFound', `Device '${path}' not found`);
  return g;
}

export const throttleCommands: QmpCommandTable = {
  block_set_io_throttle: {
    args: BLOCK_IO_THROTTLE,
    run(engine, args) {
      const device = args.device as string | undefined;
      const id = args.id as string | undefined;
      if ((device === undefined) === (id === undefined)) throw genericError("Need exactly one of 'device' and 'id'");
      // Only BlockBackends made with -drive / --drive have names; there are no qdev ids here.
      const dev = device !== undefined ? engine.device(device) : undefined;
      if (!dev) throw new QmpError('DeviceNotFound', `Device '${device ?? id}' not found`);
      if (!dev.backend.hasMedium) throw genericError('Device has no medium', 'ENOMEDIUM');
      const limits: ThrottleLimits = {};
      for (const [k, bucket] of LEGACY) {
        limits[bucket] = args[k] as number;
        if (args[`${k}_max`] !== undefined) limits[`${bucket}-max`] = args[`${k}_max`] as number;
        if (args[`${k}_max_length`] !== undefined) limits[`${bucket}-max-length`] = args[`${k}_max_length`] as number;
      }
      if (args.iops_size !== undefined) limits['iops-size'] = args.iops_size as number;
      const cfg = configFromLimits(limits);
      try {
        checkConfig(cfg);
      } catch (e) {
        bad(e);
      }
      const blk = dev.backend;
      if (throttleEnabled(cfg)) {
        const group = (args.group as string | undefined) ?? blk.throttle?.group.name ?? device!;
        engine.setBackendThrottle(blk, group);
        blk.throttle!.group.configure(cfg);
      } else {
        engine.setBackendThrottle(blk, null);
      }
    },
  },

  'object-add': {
    args: { 'qom-type': { enum: ['throttle-group', 'secret', 'iothread'] }, id: 'str' },
    openArgs: true,
    run(engine, args) {
      const id = args.id as string;
      if (!ID_RE.test(id)) throw genericError("Parameter 'id' expects an identifier");
      if (args['qom-type'] !== 'throttle-group') throw genericError(`Object type '${String(args['qom-type'])}' is not supported here`, 'ENOTSUP');
      checkArgs({ 'qom-type': 'str', id: 'str', '*limits': { struct: THROTTLE_LIMITS } }, args, '');
      const cfg = configFromLimits((args.limits as ThrottleLimits | undefined) ?? {}, emptyConfig());
      try {
        checkConfig(cfg);
        engine.throttleGroups.addObject(id, cfg);
      } catch (e) {
        bad(e);
      }
    },
  },

  'object-del': {
    args: { id: 'str' },
    run(engine, args) {
      try {
        engine.throttleGroups.deleteObject(args.id as string);
      } catch (e) {
        bad(e);
      }
    },
  },

  'qom-get': {
    args: { path: 'str', property: 'str' },
    run(engine, args) {
      const g = objectAt(engine, args.path as string);
      if (args.property !== 'limits') throw genericError(`Property 'throttle-group.${String(args.property)}' not found`);
      return limitsFromConfig(g.config);
    },
  },

  'qom-set': {
    args: { path: 'str', property: 'str', value: 'any' },
    run(engine, args) {
      const g = objectAt(engine, args.path as string);
      if (args.property !== 'limits') throw genericError(`Property 'throttle-group.${String(args.property)}' not found`);
      const value = checkArgs(THROTTLE_LIMITS, args.value, 'value.') as Args;
      const cfg = configFromLimits(value as ThrottleLimits, g.config);
      try {
        checkConfig(cfg);
      } catch (e) {
        bad(e);
      }
      g.configure(cfg);
    },
  },
};
