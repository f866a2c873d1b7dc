/**
 * `blocktab qmp [--blockdev OPTIONS]... [--drive OPTIONS]... [--object OPTIONS]...`:
 * a QMP monitor on stdin/stdout over an Engine with the host's files, as
 * `qemu-system-x86_64 -machine none -nodefaults -qmp stdio` with the same
 * -blockdev / -drive / -object options (one dash or two).
 *
 * - `--blockdev` takes blockdev-add's arguments as JSON (`{"driver": …}`) or
 *   as QEMU's dotted keys (`driver=qcow2,node-name=n0,file.driver=file,file.filename=x.qcow2`).
 * - `--drive` makes a named BlockBackend (a "device" in query-block and
 *   query-blockstats) as QEMU's `-drive if=none`: file, format (probed when
 *   absent), id, node-name, read-only, rerror, werror, detect-zeroes, copy-on-read,
 *   discard, throttling.* and the legacy bps/iops names, stats-intervals.N,
 *   stats-account-invalid, stats-account-failed, backing (off: no chain).
 * - `--object throttle-group,id=ID,limits.bps-total=N,…` (and `secret`).
 * - `--device ide-cd,drive=NAME,id=ID`: a CD drive model on a --drive, with a
 *   tray (DEVICE_TRAY_MOVED); QEMU needs `-machine pc` for it.
 *
 * The monitor ends on `quit` (SHUTDOWN, then exit 0) or at the end of its
 * input; either way every image is flushed and closed first.
 */
import '../../node.js';
import { FileStorage } from '../../protocols/file.js';
import { Engine } from '../../engine/engine.js';
import { toQmpError } from '../../engine/qmp-error.js';
import type { ErrorAction } from '../../block/backend.js';
import { UsageError } from '../args.js';
import { takeObjectOptions } from '../objects.js';
import { parseKeyValues } from '../qemu-io/open-commands.js';
import { QmpMonitor } from './monitor.js';
import { humanMonitorCommand } from './hmp.js';
import type { Output } from '../main.js';

const USAGE = `usage: blocktab qmp [--blockdev OPTIONS]... [--drive OPTIONS]... [--object OPTIONS]... [--device ide-cd,drive=NAME,id=ID]...
A QMP monitor on stdin/stdout, as qemu-system-x86_64 -machine none -nodefaults -qmp stdio.
`;

/** Keys whose values stay strings in dotted --blockdev options (everything else: numbers and on/off are typed). */
const STRING_KEYS = /(^|\.)(filename|node-name|driver|url|file|backing|throttle-group|key-secret|id|data-file)$/;

/** QEMU's keyval: "a.b=1,c=x" → { a: { b: 1 }, c: 'x' }, scalars typed as blockdev-add wants them. */
export function keyvalToDict(text: string): Record<string, unknown> {
  const kv = parseKeyValues(text);
  if (typeof kv === 'string') throw new UsageError(kv);
  const out: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(kv)) {
    const path = key.split('.');
    let at = out;
    for (const p of path.slice(0, -1)) at = (at[p] ??= {}) as Record<string, unknown>;
    let v: unknown = raw;
    if (!STRING_KEYS.test(key)) {
      if (/^-?\d+$/.test(raw)) v = Number(raw);
      else if (raw === 'on' || raw === 'true') v = true;
      else if (raw === 'off' || raw === 'false') v = false;
    }
    at[path[path.length - 1]!] = v;
  }
  return out;
}

const onOff = (v: string | undefined, name: string): boolean | undefined => {
  if (v === undefined) return undefined;
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  throw new UsageError(`Parameter '${name}' expects 'on' or 'off'`);
};

const ERROR_ACTIONS = ['report', 'ignore', 'enospc', 'stop'];

/** QEMU's legacy -drive throttling names → ThrottleLimits members. */
const DRIVE_THROTTLE: Record<string, string> = {
  bps: 'bps-total',
  bps_rd: 'bps-read',
  bps_wr: 'bps-write',
  iops: 'iops-total',
  iops_rd: 'iops-read',
  iops_wr: 'iops-write',
  bps_max: 'bps-total-max',
  bps_rd_max: 'bps-read-max',
  bps_wr_max: 'bps-write-max',
  iops_max: 'iops-total-max',
  iops_rd_max: 'iops-read-max',
  iops_wr_max: 'iops-write-max',
  iops_size: 'iops-size',
};

let driveIndex = 0;

/** -drive if=none: open the image, make the named backend, set its error policy, limits and statistics. */
async function addDrive(engine: Engine, text: string): Promise<void> {
  const kv = parseKeyValues(text, 'file');
  if (typeof kv === 'string') throw new UsageError(kv);
  const iface = kv.if ?? 'none';
  if (iface !== 'none') throw new UsageError(`--drive if=${iface}: there are no machines here; use if=none`);
  const file = kv.file;
  if (file === undefined) throw new UsageError('--drive needs file=FILENAME');
  const id = kv.id ?? `none${driveIndex++}`;
  for (const k of ['rerror', 'werror']) {
    if (kv[k] !== undefined && !ERROR_ACTIONS.includes(kv[k]!)) throw new UsageError(`'${kv[k]}' invalid ${k === 'rerror' ? 'read' : 'write'} error action`);
  }
  if (kv['detect-zeroes'] !== undefined && !['off', 'on', 'unmap'].includes(kv['detect-zeroes']!)) {
    throw new UsageError(`Parameter 'detect-zeroes' does not accept value '${kv['detect-zeroes']}'`);
  }
  const nodeName = await engine.open('file', file, {
    format: kv.format,
    readOnly: onOff(kv['read-only'], 'read-only') ?? false,
    nodeName: kv['node-name'],
    backing: onOff(kv.backing, 'backing'),
    device: id,
    backend: {
      // QEMU's -drive defaults: rerror=report, werror=enospc.
      rerror: (kv.rerror as ErrorAction | undefined) ?? 'report',
      werror: (kv.werror as ErrorAction | undefined) ?? 'enospc',
      accountInvalid: onOff(kv['stats-account-invalid'], 'stats-account-invalid'),
      accountFailed: onOff(kv['stats-account-failed'], 'stats-account-failed'),
      copyOnRead: onOff(kv['copy-on-read'], 'copy-on-read'),
    },
  });
  const bs = engine.findNode(nodeName)!;
  if (kv['detect-zeroes'] !== undefined) bs.detectZeroes = kv['detect-zeroes'] as 'off' | 'on' | 'unmap';
  const blk = engine.device(id)!.backend;
  for (let i = 0; kv[`stats-intervals.${i}`] !== undefined; i++) {
    const n = Number(kv[`stats-intervals.${i}`]);
    if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError('Invalid interval length');
    blk.stats.addInterval(n);
  }
  // Limits: throttling.<limit> and the legacy names, then block_set_io_throttle's checks and groups.
  const limits: Record<string, number> = {};
  for (const [k, v] of Object.entries(kv)) {
    const name = k.startsWith('throttling.') ? k.slice('throttling.'.length) : DRIVE_THROTTLE[k] !== undefined ? DRIVE_THROTTLE[k]! : undefined;
    if (name === undefined || name === 'group') continue;
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new UsageError(`Parameter '${k}' expects a number`);
    limits[name] = n;
  }
  if (Object.keys(limits).length > 0) {
    const args: Record<string, unknown> = { device: id, bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
    for (const [bucket, n] of Object.entries(limits)) {
      const legacy = Object.keys(DRIVE_THROTTLE).find((k) => DRIVE_THROTTLE[k] === bucket);
      if (legacy) args[legacy] = n;
      else if (bucket.endsWith('-max-length')) {
        const base = Object.keys(DRIVE_THROTTLE).find((k) => DRIVE_THROTTLE[k] === bucket.slice(0, -'-max-length'.length));
        if (!base) throw new UsageError(`Invalid parameter 'throttling.${bucket}'`);
        args[`${base}_max_length`] = n;
      } else throw new UsageError(`Invalid parameter 'throttling.${bucket}'`);
    }
    if (kv['throttling.group'] !== undefined) args.group = kv['throttling.group'];
    await engine.execute('block_set_io_throttle', args);
  }
}

async function addObject(engine: Engine, text: string): Promise<void> {
  const comma = text.indexOf(',');
  const type = comma < 0 ? text : text.slice(0, comma);
  if (type !== 'throttle-group') {
    takeObjectOptions(['--object', text]); // secrets
    return;
  }
  await engine.execute('object-add', { 'qom-type': type, ...keyvalToDict(comma < 0 ? '' : text.slice(comma + 1)) });
}

/** `--device ide-cd,drive=NAME,id=ID`: a CD drive model with a tray on a -drive (QEMU needs a machine with an IDE bus for it). */
function addDevice(engine: Engine, text: string): void {
  const kv = parseKeyValues(text, 'driver');
  if (typeof kv === 'string') throw new UsageError(kv);
  if (kv.driver !== 'ide-cd') throw new UsageError(`--device ${kv.driver ?? ''}: only ide-cd (a drive with a tray) is modelled`);
  if (kv.drive === undefined || kv.id === undefined) throw new UsageError('--device ide-cd needs drive=NAME and id=ID');
  engine.attachTrayDevice(kv.drive, kv.id);
}

type OptionKind = 'blockdev' | 'drive' | 'object' | 'device';

/** The options in the order QEMU applies its command line. */
function parseOptions(args: string[]): { kind: OptionKind; value: string }[] {
  const out: { kind: OptionKind; value: string }[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--?(blockdev|drive|object|device)(?:=(.*))?$/.exec(args[i]!);
    if (!m) throw new UsageError(`Invalid option '${args[i]}'\n${USAGE}`);
    const value = m[2] ?? args[++i];
    if (value === undefined) throw new UsageError(`option '--${m[1]}' requires an argument`);
    out.push({ kind: m[1] as OptionKind, value });
  }
  // QEMU's order: objects, then every -blockdev, then every -drive, then the devices (each kind in command-line order).
  const rank = { object: 0, blockdev: 1, drive: 2, device: 3 };
  return out.sort((a, b) => rank[a.kind] - rank[b.kind]);
}

export async function runQmp(args: string[], out: Output): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    out.stdout(USAGE);
    return 0;
  }
  const options = parseOptions(args);
  const engine = new Engine({ storages: { file: new FileStorage() }, warn: (m) => out.stderr(`${m}\n`) });
  engine.registerCommand('human-monitor-command', humanMonitorCommand);
  try {
    for (const o of options) {
      try {
        if (o.kind === 'blockdev') await engine.execute('blockdev-add', o.value.trimStart().startsWith('{') ? JSON.parse(o.value) : keyvalToDict(o.value));
        else if (o.kind === 'drive') await addDrive(engine, o.value);
        else if (o.kind === 'device') addDevice(engine, o.value);
        else await addObject(engine, o.value);
      } catch (e) {
        if (e instanceof UsageError) throw e;
        throw new UsageError(`--${o.kind} ${o.value}: ${toQmpError(e).desc}`);
      }
    }
    const monitor = new QmpMonitor(engine, (line) => out.stdout(line + '\n'));
    await new Promise<void>((resolve) => {
      process.stdin.setEncoding('utf8');
      const onData = (chunk: string) => {
        void monitor.feed(chunk).then(() => {
          if (monitor.quitRequested) finish();
        });
      };
      const finish = () => {
        process.stdin.off('data', onData);
        process.stdin.pause();
        resolve();
      };
      process.stdin.on('data', onData);
      process.stdin.on('end', () => void monitor.close().then(finish));
    });
    await monitor.close();
    return 0;
  } finally {
    await engine.dispose();
  }
}
