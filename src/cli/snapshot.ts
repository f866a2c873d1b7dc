/** `blocktab snapshot`: qemu-img snapshot's options (-l, -c, -a, -d), listing and messages. */
import { closeNode } from '../block/open.js';
import { imgSnapshot, listSnapshots } from '../img/snapshot.js';
import { parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import { snapshotHeader, snapshotLine } from './info.js';
import { snapshotInfoQapi } from '../img/info.js';
import type { Output } from './main.js';

export async function runSnapshot(args: string[], out: Output): Promise<number> {
  const p = parseCommand('snapshot', args, {
    format: { type: 'string', short: 'f' },
    list: { type: 'boolean', short: 'l' },
    create: { type: 'string', short: 'c' },
    apply: { type: 'string', short: 'a' },
    delete: { type: 'string', short: 'd' },
    // qemu-img prints nothing but the list and errors; -q changes nothing it prints.
    quiet: { type: 'boolean', short: 'q' },
    'force-share': { type: 'boolean', short: 'U' },
    'image-opts': { type: 'boolean' },
    object: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  const actions = (['list', 'create', 'apply', 'delete'] as const).filter((k) => p.values[k] !== undefined && p.values[k] !== false);
  if (actions.length > 1) throw new UsageError("Cannot mix '-l', '-a', '-c', '-d'");
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const filename = p.positionals[0]!;
  const action = actions[0] ?? 'list';
  const readOnly = action === 'list';
  const bs = await openForCli(filename, { format: str(p, 'format'), readOnly, backing: false });
  let failed = false;
  try {
    if (action === 'list') {
      const list = listSnapshots(bs);
      if (list.length) {
        let s = 'Snapshot list:\n' + snapshotHeader() + '\n';
        for (const sn of list) {
          s +=
            snapshotLine(snapshotInfoQapi(sn)) + '\n';
        }
        out.stdout(s);
      }
      return 0;
    }
    failed = true;
    await imgSnapshot(bs, action, str(p, action)!);
    failed = false;
    return 0;
  } finally {
    // The operation's error is the one to report: closing a node whose file fails fails too (iotest 217).
    if (failed) await closeNode(bs).catch(() => {});
    else await closeNode(bs);
  }
}
