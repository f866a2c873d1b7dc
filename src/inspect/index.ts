/**
 * Look inside a disk: partition tables and read-only file systems over any
 * block node (any format, any layer of a chain, any loaded snapshot). This
 * file registers the file-system drivers and is what other layers import.
 */
import { registerFileSystem } from './fs/registry.js';
import { fatDriver } from './fs/fat.js';
import { extDriver } from './fs/ext.js';
import { isoDriver } from './fs/iso9660.js';
import { btrfsDriver, ntfsDriver } from './fs/detect-only.js';

// NTFS before FAT: both carry 0x55AA and a BPB; NTFS's OEM ID decides.
registerFileSystem(ntfsDriver);
registerFileSystem(fatDriver);
registerFileSystem(extDriver);
registerFileSystem(isoDriver);
registerFileSystem(btrfsDriver);

export { Volume } from './volume.js';
export { readPartitionTable, openPartition, typeName, type Partition, type PartitionTable } from './partitions.js';
export { openFileSystem, probeFileSystem, listFileSystems } from './fs/registry.js';
export { lookup, listPath, walkTree, readFileChunks, readWholeFile, safeName, type TreeEntry } from './fs/paths.js';
export type { FileSystem, FsNode, FsEntryType } from './fs/types.js';
export { openVolumeFileSystem, type OpenedVolume } from './select.js';
