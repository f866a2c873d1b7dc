/**
 * The GUID Partition Table (UEFI spec, chapter 5): the header at LBA 1 with
 * its CRC-32, the partition entry array with its own CRC-32, and the backup
 * header at the disk's last LBA (found through the primary's AlternateLBA, or
 * the last sector when the primary is unreadable). A primary that fails its
 * checks falls back to the backup, with a warning naming what failed.
 *
 *   header (92 bytes used, HeaderSize)
 *   0   Signature "EFI PART"        8   Revision u32      12  HeaderSize u32
 *   16  HeaderCRC32 u32 (computed with this field zero)    20  Reserved u32
 *   24  MyLBA u64      32  AlternateLBA u64    40  FirstUsableLBA u64
 *   48  LastUsableLBA u64   56  DiskGUID (16)  72  PartitionEntryLBA u64
 *   80  NumberOfPartitionEntries u32   84  SizeOfPartitionEntry u32
 *   88  PartitionEntryArrayCRC32 u32
 *   entry (SizeOfPartitionEntry, 128 × 2^n)
 *   0   PartitionTypeGUID (16)   16  UniquePartitionGUID (16)
 *   32  StartingLBA u64   40  EndingLBA u64 (inclusive)   48  Attributes u64
 *   56  PartitionName (72 bytes, UTF-16LE)
 */
import { crc32 } from '../codecs/crc32.js';
import type { Volume } from './volume.js';
import { ascii, u32, u64 } from './volume.js';

export const GPT_SIGNATURE = 'EFI PART';
/** Largest entry array we read (the spec's minimum is 16 KiB; 1 MiB covers any real disk). */
export const MAX_GPT_ARRAY = 1024 * 1024;

export interface GptHeader {
  revision: number;
  headerSize: number;
  headerCrc32: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  partitionEntryLba: number;
  numberOfPartitionEntries: number;
  sizeOfPartitionEntry: number;
  partitionEntryArrayCrc32: number;
}

export interface GptEntry {
  /** Index in the array + 1, as sfdisk numbers GPT partitions. */
  number: number;
  partitionTypeGuid: string;
  uniquePartitionGuid: string;
  startingLba: number;
  endingLba: number;
  attributes: number;
  partitionName: string;
}

export interface GptTable {
  header: GptHeader;
  entries: GptEntry[];
  sectorSize: number;
  /** 'primary' or 'backup': which header the entries came from. */
  used: 'primary' | 'backup';
  /** Problems found on the way (a bad primary, a bad backup). */
  warnings: string[];
}

/** A GUID in its textual form (mixed-endian, upper case as sfdisk prints). */
export function guidToString(b: Uint8Array, o: number): string {
  const h = (i: number): string => b[o + i]!.toString(16).padStart(2, '0');
  const s = [3, 2, 1, 0].map(h).join('') + '-' + [5, 4].map(h).join('') + '-' + [7, 6].map(h).join('') + '-' + [8, 9].map(h).join('') + '-' + [10, 11, 12, 13, 14, 15].map(h).join('');
  return s.toUpperCase();
}

/** Parses a header sector; null when the signature is absent. Checks nothing else. */
export function parseGptHeader(b: Uint8Array): GptHeader | null {
  if (ascii(b, 0, 8) !== GPT_SIGNATURE) return null;
  return {
    revision: u32(b, 8),
    headerSize: u32(b, 12),
    headerCrc32: u32(b, 16),
    myLba: u64(b, 24),
    alternateLba: u64(b, 32),
    firstUsableLba: u64(b, 40),
    lastUsableLba: u64(b, 48),
    diskGuid: guidToString(b, 56),
    partitionEntryLba: u64(b, 72),
    numberOfPartitionEntries: u32(b, 80),
    sizeOfPartitionEntry: u32(b, 84),
    partitionEntryArrayCrc32: u32(b, 88),
  };
}

/** Parses one entry; null for an unused one (zero type GUID). */
export function parseGptEntry(b: Uint8Array, o: number, number: number): GptEntry | null {
  let used = false;
  for (let i = 0; i < 16; i++) if (b[o + i] !== 0) used = true;
  if (!used) return null;
  let name = '';
  for (let i = 0; i < 36; i++) {
    const c = b[o + 56 + i * 2]! | (b[o + 57 + i * 2]! << 8);
    if (c === 0) break;
    name += String.fromCharCode(c);
  }
  return {
    number,
    partitionTypeGuid: guidToString(b, o),
    uniquePartitionGuid: guidToString(b, o + 16),
    startingLba: u64(b, o + 32),
    endingLba: u64(b, o + 40),
    attributes: u64(b, o + 48),
    partitionName: name,
  };
}

/** Checks a header read at `lba`; answers what is wrong, or null. */
function headerProblem(b: Uint8Array, h: GptHeader, lba: number, sectorSize: number, diskSectors: number): string | null {
  if (h.headerSize < 92 || h.headerSize > sectorSize) return `HeaderSize ${h.headerSize} is outside 92..${sectorSize}`;
  const copy = b.slice(0, h.headerSize);
  copy.fill(0, 16, 20);
  const crc = crc32(copy);
  if (crc !== h.headerCrc32) return `HeaderCRC32 is 0x${h.headerCrc32.toString(16)}, the header's CRC-32 is 0x${crc.toString(16)}`;
  if (h.myLba !== lba) return `MyLBA is ${h.myLba}, the header is at LBA ${lba}`;
  if (h.sizeOfPartitionEntry < 128 || (h.sizeOfPartitionEntry & (h.sizeOfPartitionEntry - 1)) !== 0) {
    return `SizeOfPartitionEntry ${h.sizeOfPartitionEntry} is not 128 × 2^n`;
  }
  if (h.numberOfPartitionEntries * h.sizeOfPartitionEntry > MAX_GPT_ARRAY) {
    return `the partition entry array (${h.numberOfPartitionEntries} × ${h.sizeOfPartitionEntry} bytes) is larger than ${MAX_GPT_ARRAY} bytes`;
  }
  const arraySectors = Math.ceil((h.numberOfPartitionEntries * h.sizeOfPartitionEntry) / sectorSize);
  if (h.partitionEntryLba + arraySectors > diskSectors) return `the partition entry array at LBA ${h.partitionEntryLba} runs beyond the end of the disk`;
  if (h.firstUsableLba > h.lastUsableLba + 1 || h.lastUsableLba >= diskSectors) return `usable LBAs ${h.firstUsableLba}..${h.lastUsableLba} do not fit the disk (${diskSectors} sectors)`;
  return null;
}

interface Candidate {
  header: GptHeader;
  entries: GptEntry[];
}

async function readAt(vol: Volume, lba: number, sectorSize: number, which: string): Promise<Candidate | string> {
  const diskSectors = Math.floor(vol.size / sectorSize);
  if (lba < 1 || lba >= diskSectors) return `${which} GPT header LBA ${lba} is outside the disk`;
  const b = await vol.read(lba * sectorSize, sectorSize, `${which} GPT header`);
  const h = parseGptHeader(b);
  if (!h) return `${which} GPT header at LBA ${lba} has no "EFI PART" signature`;
  const bad = headerProblem(b, h, lba, sectorSize, diskSectors);
  if (bad) return `${which} GPT header at LBA ${lba}: ${bad}`;
  const arrayBytes = h.numberOfPartitionEntries * h.sizeOfPartitionEntry;
  const arr = await vol.read(h.partitionEntryLba * sectorSize, arrayBytes, `${which} GPT partition entry array`);
  const crc = crc32(arr);
  if (crc !== h.partitionEntryArrayCrc32) {
    return `${which} GPT partition entry array at LBA ${h.partitionEntryLba}: PartitionEntryArrayCRC32 is 0x${h.partitionEntryArrayCrc32.toString(16)}, the array's CRC-32 is 0x${crc.toString(16)}`;
  }
  const entries: GptEntry[] = [];
  for (let i = 0; i < h.numberOfPartitionEntries; i++) {
    const e = parseGptEntry(arr, i * h.sizeOfPartitionEntry, i + 1);
    if (e) entries.push(e);
  }
  return { header: h, entries };
}

/** Sector sizes tried, in order (512-byte disks first; 4Kn disks put the header at byte 4096). */
export const GPT_SECTOR_SIZES = [512, 4096];

/** True when LBA 1 (of either sector size) carries the GPT signature. */
export async function hasGptSignature(vol: Volume): Promise<number | null> {
  for (const ss of GPT_SECTOR_SIZES) {
    if (vol.size < ss * 2) continue;
    if (ascii(await vol.read(ss, 8, 'GPT header'), 0, 8) === GPT_SIGNATURE) return ss;
  }
  return null;
}

/**
 * Reads the GPT of `vol`: the primary header, else the backup. `sectorSize`
 * from hasGptSignature (or 512 when only a protective MBR says GPT).
 * Returns the table, or the reasons neither header could be used.
 */
export async function readGpt(vol: Volume, sectorSize: number): Promise<GptTable | { errors: string[] }> {
  const warnings: string[] = [];
  const diskSectors = Math.floor(vol.size / sectorSize);
  const primary = await readAt(vol, 1, sectorSize, 'primary');
  let backupLba = diskSectors - 1;
  if (typeof primary !== 'string') {
    backupLba = primary.header.alternateLba;
    const backup = await readAt(vol, backupLba, sectorSize, 'backup');
    if (typeof backup === 'string') warnings.push(`${vol.name}: ${backup}`);
    return { ...primary, sectorSize, used: 'primary', warnings };
  }
  warnings.push(`${vol.name}: ${primary}; using the backup header`);
  const backup = await readAt(vol, backupLba, sectorSize, 'backup');
  if (typeof backup === 'string') return { errors: [...warnings, `${vol.name}: ${backup}`] };
  return { ...backup, sectorSize, used: 'backup', warnings };
}

/** Short names for the common partition type GUIDs (sfdisk's names). */
export const GPT_TYPE_NAMES: Record<string, string> = {
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI System',
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'Linux home',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 'Microsoft reserved',
  'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC': 'Windows recovery environment',
  '48465300-0000-11AA-AA11-00306543ECAC': 'Apple HFS/HFS+',
};
