/**
 * The MBR partition table (and the extended boot records of logical
 * partitions). Numbering is sfdisk's: primaries 1–4 by slot, logicals from 5
 * in chain order. An EBR chain is followed with a visited set and a count
 * limit, so a loop or an endless chain in a crafted image is an error, not a
 * hang.
 *
 *   MBR / EBR sector (512 bytes)
 *   0x000  boot code (446 bytes)
 *   0x1BE  4 × partition entry (16 bytes): status u8, CHS first (3), type u8,
 *          CHS last (3), lba_start u32 LE, num_sectors u32 LE
 *   0x1FE  signature 0x55 0xAA
 */
import type { Volume } from './volume.js';
import { u32 } from './volume.js';

export const MBR_SECTOR = 512;
/** Extended partition types (CHS, LBA, Linux extended). */
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** Most logical partitions followed (Linux stops far earlier in practice). */
export const MAX_LOGICAL = 256;

export interface MbrEntry {
  /** Slot 0–3. */
  slot: number;
  status: number;
  type: number;
  /** First sector (LBA, absolute for primaries, relative to the EBR for logicals). */
  lbaStart: number;
  numSectors: number;
}

/** One partition of an MBR disk, with absolute byte positions. */
export interface MbrPartition {
  number: number;
  type: number;
  bootable: boolean;
  extended: boolean;
  start: number;
  size: number;
  /** Where the entry describing it lives (for messages). */
  entryOffset: number;
}

/** Parses the four entries of an MBR or EBR sector; null when the 0x55AA signature is absent. */
export function parseMbrSector(sector: Uint8Array): MbrEntry[] | null {
  if (sector[510] !== 0x55 || sector[511] !== 0xaa) return null;
  const out: MbrEntry[] = [];
  for (let slot = 0; slot < 4; slot++) {
    const o = 0x1be + slot * 16;
    out.push({ slot, status: sector[o]!, type: sector[o + 4]!, lbaStart: u32(sector, o + 8), numSectors: u32(sector, o + 12) });
  }
  return out;
}

/** True when the sector is a plausible MBR: signature, status bytes 0x00/0x80 and at least one used entry. */
export function looksLikeMbr(sector: Uint8Array): boolean {
  const entries = parseMbrSector(sector);
  if (!entries) return false;
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80)) return false;
  return entries.some((e) => e.type !== 0 && e.numSectors !== 0);
}

export interface MbrTable {
  partitions: MbrPartition[];
  /** Per-item problems (an EBR chain that loops, an entry beyond the disk): the rest is still listed. */
  errors: string[];
  protective: boolean;
}

/** Reads the MBR at sector 0 of `vol` and follows extended partitions' EBR chains. */
export async function readMbr(vol: Volume, sector0: Uint8Array): Promise<MbrTable> {
  const entries = parseMbrSector(sector0) ?? [];
  const partitions: MbrPartition[] = [];
  const errors: string[] = [];
  let protective = false;
  let ext: MbrEntry | undefined;
  for (const e of entries) {
    if (e.type === 0 || e.numSectors === 0) continue;
    if (e.type === MBR_TYPE_GPT_PROTECTIVE) protective = true;
    const extended = EXTENDED_TYPES.has(e.type);
    if (extended && !ext) ext = e;
    partitions.push({
      number: e.slot + 1,
      type: e.type,
      bootable: e.status === 0x80,
      extended,
      start: e.lbaStart * MBR_SECTOR,
      size: e.numSectors * MBR_SECTOR,
      entryOffset: 0x1be + e.slot * 16,
    });
  }
  if (ext) await readLogicals(vol, ext, partitions, errors);
  return { partitions, errors, protective };
}

async function readLogicals(vol: Volume, ext: MbrEntry, out: MbrPartition[], errors: string[]): Promise<void> {
  const extStart = ext.lbaStart;
  const seen = new Set<number>();
  let ebr = extStart;
  let number = 5;
  for (;;) {
    const at = ebr * MBR_SECTOR;
    if (seen.has(ebr)) {
      errors.push(`${vol.name}: extended boot record at ${hexOf(at)} links back to an earlier one (a loop); logical partitions after ${number - 1} are not listed`);
      return;
    }
    if (seen.size >= MAX_LOGICAL) {
      errors.push(`${vol.name}: more than ${MAX_LOGICAL} logical partitions; the chain is cut at the EBR at ${hexOf(at)}`);
      return;
    }
    seen.add(ebr);
    if (at + MBR_SECTOR > vol.size) {
      errors.push(`${vol.name}: extended boot record at ${hexOf(at)} is beyond the end of the disk (${vol.size} bytes)`);
      return;
    }
    const sector = await vol.read(at, MBR_SECTOR, 'extended boot record');
    const entries = parseMbrSector(sector);
    if (!entries) {
      errors.push(`${vol.name}: extended boot record at ${hexOf(at)} has no 0x55AA signature`);
      return;
    }
    const [data, next] = entries as [MbrEntry, MbrEntry];
    if (data.type !== 0 && data.numSectors !== 0) {
      out.push({
        number: number++,
        type: data.type,
        bootable: data.status === 0x80,
        extended: false,
        start: (ebr + data.lbaStart) * MBR_SECTOR,
        size: data.numSectors * MBR_SECTOR,
        entryOffset: at + 0x1be,
      });
    }
    if (next.type === 0 || next.numSectors === 0 || !EXTENDED_TYPES.has(next.type)) return;
    ebr = extStart + next.lbaStart;
  }
}

function hexOf(n: number): string {
  return '0x' + n.toString(16);
}
