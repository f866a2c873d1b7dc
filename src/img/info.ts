/**
 * qemu-img info as a function: the facts about one image, shaped and keyed as
 * QEMU's QAPI ImageInfo, so the CLI and the web app print the same thing and
 * `--output=json` is a straight serialisation (src/img/qobject.ts).
 */
import type { BlockNode } from '../block/node.js';
import { bdrvDirname, hasProtocol } from '../block/open.js';
import { qdictText } from '../block/options-tree.js';
import type { QDict } from './qobject.js';
import type { SnapshotInfo } from '../block/info.js';

/** QAPI SnapshotInfo (keys in schema order). */
export interface SnapshotInfoQapi extends QDict {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/** A driver's snapshot as QAPI SnapshotInfo (qemu-img info's `snapshots`, snapshot -l, the QMP replies). */
export function snapshotInfoQapi(sn: SnapshotInfo): SnapshotInfoQapi {
  return {
    id: sn.id,
    name: sn.name,
    'vm-state-size': sn.vmStateSize,
    'date-sec': sn.dateSec,
    'date-nsec': sn.dateNsec,
    'vm-clock-sec': Math.floor(sn.vmClockNsec / 1e9),
    'vm-clock-nsec': sn.vmClockNsec % 1e9,
    ...(sn.icount === undefined ? {} : { icount: sn.icount }),
  };
}

/** QAPI ImageInfo (keys in schema order, which decides QDict order on collisions). */
export interface ImageInfo extends QDict {
  filename: string;
  format: string;
  'dirty-flag'?: boolean;
  'actual-size'?: number;
  'virtual-size': number;
  'cluster-size'?: number;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfoQapi[];
  'format-specific'?: QDict;
}

/**
 * Bytes `bs` takes in its storage (QEMU 7.2's bdrv_get_allocated_file_size):
 * the driver's answer, else its file child's (an external data file is not
 * counted, as in qemu-img 7.2); undefined when nobody knows.
 */
export async function allocatedFileSize(bs: BlockNode): Promise<number | undefined> {
  if (bs.driver.getAllocatedFileSize) return bs.driver.getAllocatedFileSize(bs);
  if (bs.driver.kind === 'protocol' || !bs.file) return undefined;
  return allocatedFileSize(bs.file.node);
}

/**
 * The options that would open `bs` again (the part of QEMU's
 * bdrv_refresh_filename that blocktab's graphs need): a protocol node's
 * filename, a format's file and a backing node other than the one its header
 * names, a filter's file.
 */
function nodeOptions(bs: BlockNode): Record<string, unknown> {
  if (bs.dataChildren.length > 0) {
    // A list of children (quorum): its strong options and every child's.
    const o: Record<string, unknown> = { driver: bs.driver.name, children: bs.dataChildren.map((c) => nodeOptions(c.node)) };
    for (const k of bs.driver.strongRuntimeOpts ?? []) if (bs.options[k] !== undefined) o[k] = bs.options[k];
    return o;
  }
  if (bs.driver.kind === 'protocol' || !bs.file) return { driver: bs.driver.name, filename: bs.filename };
  const o: Record<string, unknown> = { driver: bs.driver.name, file: nodeOptions(bs.file.node) };
  for (const k of bs.driver.strongRuntimeOpts ?? []) if (bs.options[k] !== undefined) o[k] = bs.options[k];
  const backing = bs.driver.kind === 'filter' ? null : bs.backing?.node;
  if (backing && backing.filename !== (bs.autoBackingFile ?? bs.backingFile)) o.backing = nodeOptions(backing);
  // The header names a backing file the node goes without (blockdev-reopen's backing: null).
  else if (!backing && bs.driver.kind === 'format' && bs.backingFile && bs.backingDropped) o.backing = null;
  return o;
}

/**
 * The name QEMU shows for a node: its filename, or the `json:` options that
 * open it when the filename alone would not (a filter; a format whose backing
 * node is not the one its header names; a key secret given to open it, 198).
 */
export function displayFilename(bs: BlockNode): string {
  if (bs.dataChildren.length > 0) return `json:${qdictText(nodeOptions(bs))}`;
  if (bs.driver.kind === 'protocol' || !bs.file) return bs.filename;
  const o = nodeOptions(bs);
  const strong = bs.driver.strongRuntimeOpts?.some((k) => k in o);
  return bs.driver.kind === 'filter' || 'backing' in o || strong || !reconstructable(bs.file.node) ? `json:${qdictText(o)}` : bs.filename;
}

/**
 * Whether a plain name opens `bs` as it is (QEMU's exact_filename is set):
 * a protocol node; a filter or format whose driver's own check passes
 * (hasExactFilename: blkdebug without options but a config file) and that
 * has no strong options, over such a node. A quorum never is. A format over
 * a node that is not has only a json:{…} name too.
 */
function reconstructable(bs: BlockNode): boolean {
  if (bs.dataChildren.length > 0) return false;
  if (bs.driver.kind === 'protocol' || !bs.file) return true;
  if (bs.driver.hasExactFilename?.(bs.options) === false) return false;
  if (bs.driver.strongRuntimeOpts?.some((k) => bs.options[k] !== undefined)) return false;
  return reconstructable(bs.file.node);
}

/**
 * The backing file name resolved against the image's directory (QEMU's
 * bdrv_get_full_backing_filename), or undefined where the image has no
 * single directory (a quorum below it): info then says "cannot determine
 * actual path".
 */
function fullBackingFilename(bs: BlockNode, backing: string): string | undefined {
  if (bs.fullBackingFilename) return bs.fullBackingFilename;
  if (backing === '' || backing.startsWith('/') || hasProtocol(backing)) return backing;
  try {
    return bdrvDirname(bs) + backing;
  } catch {
    return undefined;
  }
}

/** Information about `bs` alone (its backing chain is not visited). */
export async function imageInfo(bs: BlockNode): Promise<ImageInfo> {
  const drv = bs.driver;
  // A filter without its own answer passes its child's on, as QEMU's bdrv_get_info does.
  const filtered = drv.kind === 'filter' ? bs.file?.node : undefined;
  const dinfo = drv.getDriverInfo?.(bs) ?? filtered?.driver.getDriverInfo?.(filtered);
  const info: ImageInfo = {
    filename: displayFilename(bs),
    format: drv.name,
    // qemu-img prints dirty-flag only when the driver answers bdrv_get_info (dmg, cloop, bochs, parallels do not).
    'dirty-flag': dinfo ? (dinfo.isDirty ?? false) : undefined,
    'actual-size': await allocatedFileSize(bs),
    // QEMU's bdrv_getlength counts whole 512-byte sectors; a protocol node shows its file's length rounded up so.
    'virtual-size': drv.kind === 'protocol' ? Math.ceil(bs.totalBytes / 512) * 512 : bs.totalBytes,
    'cluster-size': dinfo?.clusterSize ? dinfo.clusterSize : undefined,
    encrypted: bs.encrypted || undefined,
  };
  if (bs.backingFile) {
    info['backing-filename'] = bs.backingFile;
    const full = fullBackingFilename(bs, bs.backingFile);
    if (full !== undefined) info['full-backing-filename'] = full;
    if (bs.backingFormat) info['backing-filename-format'] = bs.backingFormat;
  }
  const snaps = drv.listSnapshots?.(bs) ?? [];
  if (snaps.length > 0) {
    info.snapshots = snaps.map(snapshotInfoQapi);
  }
  const spec = drv.getInfo?.(bs);
  if (spec) info['format-specific'] = { type: spec.type, data: spec.data as QDict };
  return info;
}

/**
 * QEMU's size_to_str: binary units, three significant digits ("977 KiB",
 * "1.5 MiB", "0 B"), switching unit once the number reaches 1000.
 */
export function sizeToStr(val: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  const x = val / (1000 / 1024);
  // frexp's exponent: floor(log2(x)) + 1 (0 for 0).
  const exp = x === 0 ? 0 : Math.floor(Math.log2(x)) + 1;
  const i = Math.trunc((exp - 1) / 10);
  const div = 2 ** (i * 10);
  return `${formatG3(val / div)} ${suffixes[i]}B`;
}

/**
 * printf("%0.3g"): three significant digits, trailing zeros dropped, exponent
 * form from 1e3. Rounds as glibc does, to nearest with ties to even on the
 * exact binary value (980.5 KiB prints as "980"), so the digits come from the
 * exact decimal expansion rather than toPrecision's ties-away rounding.
 */
function formatG3(v: number): string {
  if (v === 0) return '0';
  const m = /^(\d+)(?:\.(\d*))?$/.exec(v.toFixed(60 - Math.max(0, Math.floor(Math.log10(v)))).replace(/^0+(?=\d)/, ''));
  if (!m) return v.toPrecision(3);
  const intPart = m[1]!;
  const all = (intPart === '0' ? '' : intPart) + (m[2] ?? '');
  // Exponent of the first significant digit.
  const lead = all.search(/[1-9]/);
  let exp = intPart === '0' ? -(lead + 1) : intPart.length - 1;
  const sig = all.slice(lead);
  let digits = Number(sig.slice(0, 3).padEnd(3, '0'));
  const rest = sig.slice(3);
  const first = rest.charCodeAt(0) - 48;
  const beyond = /[1-9]/.test(rest.slice(1));
  if (first > 5 || (first === 5 && (beyond || digits % 2 === 1))) digits++;
  if (digits === 1000) {
    digits = 100;
    exp++;
  }
  const d = String(digits);
  if (exp < -4 || exp >= 3) {
    const mant = (d[0]! + '.' + d.slice(1)).replace(/0+$/, '').replace(/\.$/, '');
    return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  // Fixed notation with 3 significant digits.
  let text: string;
  if (exp >= 2) text = d;
  else if (exp >= 0) text = d.slice(0, exp + 1) + '.' + d.slice(exp + 1);
  else text = '0.' + '0'.repeat(-exp - 1) + d;
  if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  return text;
}
