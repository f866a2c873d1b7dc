/** query-named-block-nodes, query-block, query-blockstats, query-commands, block_resize. */
import { bdrvTruncate } from '../../block/io.js';
import { truncateDirtyBitmaps } from '../../block/dirty-bitmap.js';
import { genericError } from '../qmp-error.js';
import { blockingJob, jobFilterNodes, type JobFilterNode } from './jobs.js';
import { blockDeviceInfo, blockInfo, blockStats, jobFilterDeviceInfo } from '../query.js';
import { BlockNode } from '../../block/node.js';
import type { QmpCommandTable } from './types.js';

export const queryCommands: QmpCommandTable = {
  'query-named-block-nodes': {
    args: { '*flat': 'bool' },
    async run(engine, args) {
      const flat = args.flat === true;
      const filters = jobFilterNodes(engine);
      // Newest first, as QEMU 7.2 lists them (it prepends each node to the reply); running jobs' filter nodes among them.
      const all: (BlockNode | JobFilterNode)[] = [...engine.allNodes(), ...filters];
      all.sort((a, b) => engine.createdAt(b) - engine.createdAt(a));
      const out = [];
      for (const n of all) out.push(n instanceof BlockNode ? await blockDeviceInfo(engine, n, flat, filters) : await jobFilterDeviceInfo(n, flat, filters));
      return out;
    },
  },

  'query-block': {
    args: {},
    async run(engine) {
      const out = [];
      const filters = jobFilterNodes(engine);
      for (const name of engine.deviceNames()) out.push(await blockInfo(engine, name, engine.device(name)!, filters));
      return out;
    },
  },

  'query-blockstats': {
    args: { '*query-nodes': 'bool' },
    run: (engine, args) => blockStats(engine, args['query-nodes'] === true, jobFilterNodes(engine)),
  },

  'query-commands': {
    args: {},
    run: (engine) => [...engine.commands.keys()].map((name) => ({ name })),
  },

  block_resize: {
    args: { '*device': 'str', '*node-name': 'str', size: 'int' },
    async run(engine, args) {
      const device = args.device as string | undefined;
      const nodeName = args['node-name'] as string | undefined;
      const bs = engine.lookupBs(device, nodeName);
      // QEMU's op blocker for resizing, which names the `device` argument (absent: "(null)").
      if (blockingJob(engine, bs)) throw genericError(`Device '${device ?? '(null)'}' is in use`, 'EBUSY');
      const size = args.size as number;
      if (size < 0) throw genericError(`Parameter 'size' expects a >0 size`);
      if (bs.readOnly) throw genericError('Image is read-only', 'EPERM');
      await bdrvTruncate(bs, size, false, 'off');
      truncateDirtyBitmaps(bs, size);
    },
  },
};
