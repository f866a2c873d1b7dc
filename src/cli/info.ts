/** `blocktab info`: qemu-img info's options, human and JSON output. */
import { imageInfo, sizeToStr, type ImageInfo, type SnapshotInfoQapi } from '../img/info.js';
import { dumpHuman, toJsonPretty, type QDict } from '../img/qobject.js';
import { closeNode } from '../block/open.js';
import { BlockError } from '../block/errors.js';
import { flag, outputFormat, parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

export async function runInfo(args: string[], out: Output): Promise<number> {
  const p = parseCommand('info', args, {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    'backing-chain': { type: 'boolean' },
    'force-share': { type: 'boolean', short: 'U' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const fmt = outputFormat(p);
  const chain = flag(p, 'backing-chain');

  // As qemu-img: each image is opened alone (no backing), and the chain is followed by name.
  const infos: ImageInfo[] = [];
  const seen = new Set<string>();
  let filename: string | undefined = p.positionals[0]!;
  let format = str(p, 'format');
  while (filename !== undefined) {
    if (seen.has(filename)) throw new BlockError('ELOOP', `Backing file '${filename}' creates an infinite loop.`);
    seen.add(filename);
    // Only the first name is an --image-opts list; the backing names followed are file names.
    const bs = await openForCli(filename, { format, backing: false, driverOptions: { noIo: true }, plainName: infos.length > 0 });
    try {
      const info = await imageInfo(bs);
      infos.push(info);
      if (!chain) break;
      filename = info['full-backing-filename'];
      format = info['backing-filename-format'];
    } finally {
      await closeNode(bs);
    }
  }

  if (fmt === 'json') {
    out.stdout(toJsonPretty(chain ? infos : infos[0]!) + '\n');
  } else {
    out.stdout(infos.map(humanInfo).join('\n'));
  }
  return 0;
}

/** bdrv_image_info_dump, line for line. */
export function humanInfo(info: ImageInfo): string {
  let s =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)\n` +
    `disk size: ${info['actual-size'] === undefined ? 'unavailable' : sizeToStr(info['actual-size'])}\n`;
  if (info.encrypted) s += 'encrypted: yes\n';
  if (info['cluster-size'] !== undefined) s += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag']) s += 'cleanly shut down: no\n';
  if (info['backing-filename'] !== undefined) {
    s += `backing file: ${info['backing-filename']}`;
    const full = info['full-backing-filename'];
    if (full === undefined) s += ' (cannot determine actual path)';
    else if (full !== info['backing-filename']) s += ` (actual path: ${full})`;
    s += '\n';
    if (info['backing-filename-format'] !== undefined) s += `backing file format: ${info['backing-filename-format']}\n`;
  }
  if (info.snapshots) {
    s += 'Snapshot list:\n';
    s += snapshotHeader() + '\n';
    for (const sn of info.snapshots) s += snapshotLine(sn) + '\n';
  }
  const spec = info['format-specific'];
  if (spec) s += 'Format specific information:\n' + dumpHuman(spec.data as QDict, 1);
  return s;
}

const pad = (t: string, w: number) => t.padEnd(w);
const padl = (t: string, w: number) => t.padStart(w);

/** bdrv_snapshot_dump(NULL): the column titles. */
export function snapshotHeader(): string {
  return pad('ID', 10) + pad('TAG', 17) + padl('VM SIZE', 8) + padl('DATE', 20) + padl('VM CLOCK', 13) + padl('ICOUNT', 11);
}

/** bdrv_snapshot_dump(sn): one snapshot, date in local time. */
export function snapshotLine(sn: SnapshotInfoQapi): string {
  const d = new Date(sn['date-sec'] * 1000);
  const two = (n: number) => String(n).padStart(2, '0');
  const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  const secs = sn['vm-clock-sec'];
  const ms = Math.floor(sn['vm-clock-nsec'] / 1e6) % 1000;
  const clock = `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.${String(ms).padStart(3, '0')}`;
  const icount = sn.icount === undefined ? '' : String(sn.icount);
  return `${pad(sn.id, 9)} ${pad(sn.name, 16)} ${padl(sizeToStr(sn['vm-state-size']), 8)}${padl(date, 20)}${padl(clock, 13)}${padl(icount, 11)}`;
}
