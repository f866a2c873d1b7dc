/**
 * The VMDK descriptor: a small text file (or a text area inside a sparse
 * extent) with `key=value` lines, the extent lines and the disk database:
 *
 *   version=1
 *   CID=7e1b6f4a
 *   parentCID=ffffffff
 *   createType="twoGbMaxExtentSparse"
 *   parentFileNameHint="base.vmdk"
 *   RW 4194304 SPARSE "disk-s001.vmdk"
 *   RW 2048 FLAT "disk-flat.vmdk" 0
 *   ddb.adapterType = "ide"
 *
 * Reading follows QEMU's leniency where it matters for interop: extent lines
 * whose access is not RW, or whose type is unknown, are skipped; a FLAT line
 * needs its offset and a VMFS line must not have one; CID values are hex.
 */
import { BlockError } from '../../block/errors.js';

export type ExtentType = 'FLAT' | 'SPARSE' | 'VMFS' | 'VMFSSPARSE' | 'SESPARSE';
const EXTENT_TYPES: readonly string[] = ['FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'SESPARSE'];

/** Create types a descriptor file may have (QEMU's list); monolithic sparse types embed theirs. */
export const DESCRIPTOR_FILE_CREATE_TYPES = ['monolithicFlat', 'vmfs', 'vmfsSparse', 'seSparse', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'];

export interface ExtentLine {
  access: string;
  /** Size in sectors. */
  sectors: number;
  type: ExtentType;
  fileName: string;
  /** Sector offset inside the file (FLAT and VMFS only). */
  offset: number;
  /** The line as written, for messages. */
  line: string;
}

export interface Descriptor {
  version: number | undefined;
  /** Content id (CID), or undefined when the descriptor has none. */
  cid: number | undefined;
  parentCid: number | undefined;
  createType: string | undefined;
  parentFileNameHint: string | undefined;
  extents: ExtentLine[];
  /** ddb.* entries in order (ddb.adapterType, ddb.virtualHWVersion, …). */
  ddb: [string, string][];
}

/** Largest descriptor we read (QEMU reads at most 1 MiB - 1). */
export const MAX_DESCRIPTOR_BYTES = (1 << 20) - 1;

const EXTENT_RE = /^\s*(\S{1,10})\s+([+-]?\d+)\s+(\S{1,10})\s+"([^\n\r"]{1,511})"(?:\s+([+-]?\d+))?/;

function quoted(v: string): string {
  const m = /^"([^"]*)"/.exec(v);
  return m ? m[1]! : v;
}

/**
 * Parses descriptor text (NUL-terminated text is cut at the NUL). `where`
 * names the image and offset for messages.
 */
export function parseDescriptor(text: string, where: string): Descriptor {
  const nul = text.indexOf('\0');
  if (nul >= 0) text = text.slice(0, nul);
  const d: Descriptor = { version: undefined, cid: undefined, parentCid: undefined, createType: undefined, parentFileNameHint: undefined, extents: [], ddb: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const t = line.trim();
    if (t === '' || t.startsWith('#')) continue;
    const ext = EXTENT_RE.exec(line);
    if (ext) {
      const [, access, sectorsText, type, fileName, offsetText] = ext;
      if (access !== 'RW') continue;
      const sectors = Number(sectorsText);
      let offset = offsetText === undefined ? -1 : Number(offsetText);
      if (type === 'FLAT') {
        if (offsetText === undefined || offset < 0) throw new BlockError('EINVAL', `${where}: Invalid extent line: ${line}`, { qemuMessage: `Invalid extent line: ${line}` });
      } else if (type === 'VMFS') {
        if (offsetText !== undefined) throw new BlockError('EINVAL', `${where}: Invalid extent line: ${line}`, { qemuMessage: `Invalid extent line: ${line}` });
        offset = 0;
      } else if (offsetText !== undefined) {
        throw new BlockError('EINVAL', `${where}: Invalid extent line: ${line}`, { qemuMessage: `Invalid extent line: ${line}` });
      }
      if (!(sectors > 0) || !EXTENT_TYPES.includes(type!)) continue;
      if (!Number.isSafeInteger(sectors * 512) || !Number.isSafeInteger(Math.max(offset, 0) * 512)) {
        throw new BlockError('EFBIG', `${where}: extent size or offset too large: ${line}`);
      }
      d.extents.push({ access: access!, sectors, type: type as ExtentType, fileName: fileName!, offset: Math.max(offset, 0), line });
      continue;
    }
    const eq = t.indexOf('=');
    if (eq < 0) continue;
    const key = t.slice(0, eq).trim();
    const value = t.slice(eq + 1).trim();
    if (key.startsWith('ddb.')) {
      d.ddb.push([key, quoted(value)]);
      continue;
    }
    switch (key) {
      case 'version':
        d.version = Number(value);
        break;
      case 'CID':
        if (d.cid === undefined) d.cid = parseHex32(value);
        break;
      case 'parentCID':
        if (d.parentCid === undefined) d.parentCid = parseHex32(value);
        break;
      case 'createType':
        d.createType = quoted(value);
        break;
      case 'parentFileNameHint':
        d.parentFileNameHint = quoted(value);
        break;
    }
  }
  return d;
}

/** Leading hex digits as an unsigned 32-bit number (sscanf %x), or undefined. */
function parseHex32(v: string): number | undefined {
  const m = /^(?:0x)?([0-9a-f]+)/i.exec(v);
  if (!m) return undefined;
  return Number.parseInt(m[1]!.slice(-8), 16) >>> 0;
}

/** Serializes a descriptor the way QEMU lays one out (comments, extents, then the disk database). */
export function serializeDescriptor(d: Descriptor): string {
  const lines = ['# Disk DescriptorFile', `version=${d.version ?? 1}`];
  lines.push(`CID=${(d.cid ?? 0).toString(16).padStart(8, '0')}`);
  lines.push(`parentCID=${(d.parentCid ?? 0xffffffff).toString(16).padStart(8, '0')}`);
  lines.push(`createType="${d.createType ?? 'monolithicSparse'}"`);
  if (d.parentFileNameHint !== undefined) lines.push(`parentFileNameHint="${d.parentFileNameHint}"`);
  lines.push('', '# Extent description');
  for (const e of d.extents) {
    lines.push(`${e.access} ${e.sectors} ${e.type} "${e.fileName}"${e.type === 'FLAT' ? ` ${e.offset}` : ''}`);
  }
  lines.push('', '# The Disk Data Base', '#DDB', '');
  for (const [k, v] of d.ddb) lines.push(`${k} = "${v}"`);
  return lines.join('\n') + '\n';
}
