/**
 * What partition table a disk holds and its partitions, as sfdisk lists them:
 * GPT (a protective or hybrid MBR in front of it is recognised as such), MBR
 * with logical partitions, or none (a file system on the whole disk). Each
 * partition can be opened as a `raw` node with `offset` and `size` over the
 * disk node, as QEMU's raw driver takes them, so everything that reads a
 * node (file systems, convert, the hex view) reads a partition too.
 *
 * Problems with one partition (beyond the end of the disk, overlapping
 * another) are reported on that partition; the others are still listed.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { openContext, openFormatOn } from '../block/open.js';
import { GPT_TYPE_NAMES, hasGptSignature, readGpt } from './gpt.js';
import { looksLikeMbr, MBR_SECTOR, MBR_TYPE_GPT_PROTECTIVE, parseMbrSector, readMbr } from './mbr.js';
import { Volume } from './volume.js';
import { probeFileSystem } from './fs/registry.js';

export type TableKind = 'gpt' | 'mbr' | 'none';

export interface Partition {
  /** sfdisk's number: GPT entry index + 1; MBR slot 1–4, logicals from 5. */
  number: number;
  /** Bytes from the start of the disk. */
  start: number;
  size: number;
  /** GPT: the type GUID; MBR: the type byte in hex without 0x (sfdisk's spelling, "83", "c"). */
  type: string;
  /** GPT partition name, or the type's name for MBR. */
  name: string;
  /** blkid's TYPE of what the partition holds (vfat, ext4, iso9660, ntfs…), when known. */
  filesystem?: string;
  /** GPT unique partition GUID. */
  uuid?: string;
  bootable?: boolean;
  /** An MBR extended partition (a container of logicals, holds no file system). */
  extended?: boolean;
  /** What is wrong with this entry, when something is; the partition is not opened. */
  error?: string;
}

export interface PartitionTable {
  table: TableKind;
  /** 'protective' or 'hybrid' for the MBR in front of a GPT. */
  mbr?: 'protective' | 'hybrid';
  sectorSize: number;
  /** GPT: which header was used. */
  gptHeader?: 'primary' | 'backup';
  diskGuid?: string;
  partitions: Partition[];
  /** Table-level warnings (a bad primary GPT header, an EBR loop). */
  warnings: string[];
  /** The file system on the whole disk, when there is no table. */
  filesystem?: string;
}

const MBR_TYPE_NAMES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'HPFS/NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: "W95 Ext'd (LBA)",
  0x82: 'Linux swap / Solaris',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xee: 'GPT',
  0xef: 'EFI (FAT-12/16/32)',
  0xfd: 'Linux raid autodetect',
};

/** Marks entries beyond the disk and overlaps (by start order), without dropping them. */
function checkBounds(vol: Volume, parts: Partition[]): void {
  for (const p of parts) {
    if (p.size <= 0) p.error = `${vol.name}: partition ${p.number} is empty or ends before it starts`;
    else if (p.start + p.size > vol.size) {
      p.error = `${vol.name}: partition ${p.number} (bytes ${p.start}..${p.start + p.size}) runs beyond the end of the disk (${vol.size} bytes)`;
    }
  }
  const data = parts.filter((p) => !p.extended && !p.error).sort((a, b) => a.start - b.start);
  for (let i = 1; i < data.length; i++) {
    const prev = data[i - 1]!;
    const cur = data[i]!;
    if (cur.start < prev.start + prev.size) {
      cur.error = `${vol.name}: partition ${cur.number} (from byte ${cur.start}) overlaps partition ${prev.number} (bytes ${prev.start}..${prev.start + prev.size})`;
    }
  }
}

async function fillFilesystems(vol: Volume, parts: Partition[]): Promise<void> {
  for (const p of parts) {
    if (p.error || p.extended) continue;
    const found = await probeFileSystem(vol.window(`${vol.name} partition ${p.number}`, p.start, p.size));
    if (found) p.filesystem = found.type;
  }
}

/** Reads the partition table of the disk `vol`. */
export async function readPartitionTable(vol: Volume): Promise<PartitionTable> {
  const sector0 = vol.size >= MBR_SECTOR ? await vol.read(0, MBR_SECTOR, 'MBR') : new Uint8Array(MBR_SECTOR);
  const mbrEntries = parseMbrSector(sector0);
  const gptSector = await hasGptSignature(vol);
  const protectiveSlot = mbrEntries?.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE) ?? false;
  if (gptSector !== null || protectiveSlot) {
    const gpt = await readGpt(vol, gptSector ?? 512);
    if ('errors' in gpt) {
      if (gptSector !== null) throw new BlockError('ECORRUPT', gpt.errors.join('; '));
    } else {
      const others = mbrEntries?.filter((e) => e.type !== 0 && e.numSectors !== 0 && e.type !== MBR_TYPE_GPT_PROTECTIVE) ?? [];
      const ss = gpt.sectorSize;
      const partitions: Partition[] = gpt.entries.map((e) => ({
        number: e.number,
        start: e.startingLba * ss,
        size: (e.endingLba - e.startingLba + 1) * ss,
        type: e.partitionTypeGuid,
        name: e.partitionName,
        uuid: e.uniquePartitionGuid,
      }));
      for (const p of partitions) {
        const lba = p.start / ss;
        const endLba = lba + p.size / ss - 1;
        if (p.size > 0 && (lba < gpt.header.firstUsableLba || endLba > gpt.header.lastUsableLba)) {
          p.error = `${vol.name}: partition ${p.number} (LBA ${lba}..${endLba}) is outside the usable LBAs ${gpt.header.firstUsableLba}..${gpt.header.lastUsableLba}`;
        }
      }
      checkBounds(vol, partitions);
      await fillFilesystems(vol, partitions);
      return {
        table: 'gpt',
        mbr: !mbrEntries || !protectiveSlot ? undefined : others.length ? 'hybrid' : 'protective',
        sectorSize: ss,
        gptHeader: gpt.used,
        diskGuid: gpt.header.diskGuid,
        partitions,
        warnings: gpt.warnings,
      };
    }
  }
  // A FAT or NTFS boot sector carries 0x55AA too: a file system on the whole disk wins over an MBR look-alike.
  const whole = await probeFileSystem(vol);
  if (whole || !looksLikeMbr(sector0)) {
    return { table: 'none', sectorSize: MBR_SECTOR, partitions: [], warnings: [], filesystem: whole?.type };
  }
  const mbr = await readMbr(vol, sector0);
  const partitions: Partition[] = mbr.partitions.map((p) => ({
    number: p.number,
    start: p.start,
    size: p.size,
    type: p.type.toString(16),
    name: MBR_TYPE_NAMES[p.type] ?? 'Unknown',
    bootable: p.bootable || undefined,
    extended: p.extended || undefined,
  }));
  checkBounds(vol, partitions);
  await fillFilesystems(vol, partitions);
  return { table: 'mbr', sectorSize: MBR_SECTOR, partitions, warnings: mbr.errors };
}

/** A readable name for a partition's type. */
export function typeName(table: TableKind, type: string): string {
  if (table === 'gpt') return GPT_TYPE_NAMES[type] ?? type;
  return MBR_TYPE_NAMES[parseInt(type, 16)] ?? type;
}

/**
 * Opens partition `p` of `disk` as a read-only `raw` node with offset and
 * size over the disk node. Close it with closeNode(node, (c) => c === disk)
 * to keep the disk open.
 */
export async function openPartition(disk: BlockNode, p: Partition): Promise<BlockNode> {
  if (p.error) throw new BlockError('ECORRUPT', p.error);
  const ctx = openContext(disk) ?? { storage: undefined as never, warn: () => {} };
  return openFormatOn(ctx, disk, `${disk.filename} partition ${p.number}`, {
    format: 'raw',
    readOnly: true,
    driverOptions: { offset: p.start, size: p.size },
  });
}
