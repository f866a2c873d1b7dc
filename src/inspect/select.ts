/**
 * Which file system `ls`/`cat` read (DESIGN's rule): with a partition number,
 * that partition; without, the whole disk when it holds a file system, else
 * the one partition that does, and with several an error that lists them.
 * A chosen partition is opened as a raw node (offset/size) over the disk.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { closeNode } from '../block/open.js';
import { openPartition, readPartitionTable, type Partition, type PartitionTable } from './partitions.js';
import { openFileSystem } from './fs/registry.js';
import type { FileSystem } from './fs/types.js';
import { Volume } from './volume.js';

export interface OpenedVolume {
  fs: FileSystem;
  table: PartitionTable;
  partition?: Partition;
  /** Closes the partition's raw node (the disk node stays open). */
  close(): Promise<void>;
}

export async function openVolumeFileSystem(disk: BlockNode, partitionNumber?: number): Promise<OpenedVolume> {
  const table = await readPartitionTable(new Volume(disk, disk.filename));
  let part: Partition | undefined;
  if (partitionNumber !== undefined) {
    part = table.partitions.find((p) => p.number === partitionNumber);
    if (!part) {
      const have = table.partitions.map((p) => p.number).join(', ') || 'none';
      throw new BlockError('ENOENT', `${disk.filename}: no partition ${partitionNumber} (partitions: ${have})`);
    }
  } else if (table.table === 'none') {
    const fs = await openFileSystem(new Volume(disk, disk.filename));
    return { fs, table, close: async () => {} };
  } else {
    const withFs = table.partitions.filter((p) => p.filesystem && !p.error);
    if (withFs.length === 0) throw new BlockError('EINVAL', `${disk.filename}: no partition holds a file system we know`);
    if (withFs.length > 1) {
      throw new BlockError('EINVAL', `${disk.filename}: several partitions hold file systems; choose one with --partition N: ${withFs.map((p) => `${p.number} (${p.filesystem})`).join(', ')}`);
    }
    part = withFs[0]!;
  }
  const node = await openPartition(disk, part);
  try {
    const fs = await openFileSystem(new Volume(node, node.filename));
    return { fs, table, partition: part, close: () => closeNode(node, (c) => c === disk) };
  } catch (e) {
    await closeNode(node, (c) => c === disk);
    throw e;
  }
}
