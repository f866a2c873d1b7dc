/**
 * Looking inside disks made by Debian's tools: partition tables compared with
 * sfdisk --json, every file and directory of ext2/ext4 (inline data, htree,
 * 64bit, flex_bg, block maps), FAT12/16/32 (long names) and ISO 9660 (Rock
 * Ridge, Joliet) compared with the tree the tools were given, byte for byte,
 * through qcow2 images with an internal snapshot and an overlay; a GPT whose
 * primary header is corrupt read from the backup; NTFS/btrfs detected and
 * refused; hostile structures reported per item with the rest still listed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { closeNode, openImage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { snapshotLoadTmp } from '../../src/img/snapshot.js';
import {
  lookup,
  openVolumeFileSystem,
  readPartitionTable,
  readWholeFile,
  safeName,
  Volume,
  walkTree,
  type FileSystem,
  type TreeEntry,
} from '../../src/inspect/index.js';
import { blocktab, qemuImg, tmpDir } from '../helpers/qemu.js';
import { makeExt, makeFat, MiB, partition, placeAt, sfdiskJson, sh, sourceTree, treeDirs, writeTree, type Tree } from '../helpers/disk-images.js';

const storage = new FileStorage();
let dir: string;
const open: BlockNode[] = [];

async function openDisk(file: string, snapshot?: string): Promise<BlockNode> {
  const bs = await openImage(storage, file, { readOnly: true });
  open.push(bs);
  if (snapshot) await snapshotLoadTmp(bs, snapshot);
  return bs;
}

async function walk(fsys: FileSystem): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  await walkTree(fsys, fsys.root(), (e) => void out.push(e));
  return out;
}

/** The file system's files and directories equal the tree's, and every file's bytes equal the source's. */
async function expectTree(fsys: FileSystem, tree: Tree, ignore: string[] = ['lost+found']): Promise<void> {
  const entries = (await walk(fsys)).filter((e) => !ignore.some((i) => e.path === i || e.path.startsWith(i + '/')));
  expect(entries.filter((e) => e.error)).toEqual([]);
  expect(entries.filter((e) => e.node.type === 'dir').map((e) => e.path).sort()).toEqual(treeDirs(tree));
  const files = entries.filter((e) => e.node.type === 'file');
  expect(files.map((e) => e.path).sort()).toEqual([...tree.keys()].sort());
  for (const f of files) {
    const want = tree.get(f.path)!;
    expect(f.node.size, f.path).toBe(want.length);
    const got = await readWholeFile(fsys, f.node);
    expect(Buffer.compare(Buffer.from(got), Buffer.from(want)), f.path).toBe(0);
  }
}

const tree1 = sourceTree(1, 300);
const tree2 = sourceTree(2);
const tree3 = sourceTree(3);

beforeAll(() => {
  dir = tmpDir('blocktab-inspect-');
  for (const [n, t] of [['src1', tree1], ['src2', tree2], ['src3', tree3]] as const) writeTree(path.join(dir, n), t);
  fs.symlinkSync('hello.txt', path.join(dir, 'src2', 'link-to-hello'));
});

afterAll(async () => {
  for (const bs of open.splice(0)) await closeNode(bs);
});

describe('GPT disk: ext4 + FAT16 + ext2, qcow2 with a snapshot and an overlay', () => {
  let disk: string;
  beforeAll(() => {
    const d = (n: string): string => path.join(dir, n);
    // ext4 with inline data and 64bit; e2fsck -D indexes the 300-entry directory (htree).
    makeExt(d('p1.img'), d('src1'), 16, 'ext4', ['-b', '1024', '-O', 'inline_data,64bit,flex_bg,metadata_csum']);
    sh('e2fsck', ['-fyD', d('p1.img')]);
    makeFat(d('p2a.img'), d('src2'), 8, 16);
    makeFat(d('p2b.img'), d('src3'), 8, 16);
    makeExt(d('p3.img'), d('src2'), 4, 'ext2', ['-b', '1024']);
    partition(d('disk.img'), 32, 'label: gpt\nstart=2048, size=16M, type=L, name="root fs"\nsize=8M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\nsize=4M, type=L, name=old\n');
    placeAt(d('disk.img'), d('p1.img'), MiB);
    placeAt(d('disk.img'), d('p2a.img'), 17 * MiB);
    placeAt(d('disk.img'), d('p3.img'), 25 * MiB);
    disk = d('disk.qcow2');
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', d('disk.img'), disk]);
    qemuImg(['snapshot', '-c', 'before', disk]);
    // The active state gets another FAT in partition 2; the snapshot keeps the first.
    placeAt(d('disk.img'), d('p2b.img'), 17 * MiB);
    qemuImg(['convert', '-n', '-f', 'raw', '-O', 'qcow2', d('disk.img'), disk]);
  });

  it('lists the partitions as sfdisk does, with their file systems', async () => {
    const t = await readPartitionTable(new Volume(await openDisk(disk), disk));
    const sf = sfdiskJson(path.join(dir, 'disk.img'));
    expect(t.table).toBe('gpt');
    expect(t.mbr).toBe('protective');
    expect(t.gptHeader).toBe('primary');
    expect(t.warnings).toEqual([]);
    expect(t.partitions.map((p) => ({ n: p.number, start: p.start, size: p.size, type: p.type, name: p.name, uuid: p.uuid }))).toEqual(
      sf.partitions.map((p, i) => ({ n: i + 1, start: p.start * 512, size: p.size * 512, type: p.type, name: p.name, uuid: p.uuid })),
    );
    expect(t.partitions.map((p) => p.filesystem)).toEqual(['ext4', 'vfat', 'ext2']);
  });

  it('reads ext4 (inline data, htree, 64bit, flex_bg) file for file', async () => {
    const v = await openVolumeFileSystem(await openDisk(disk), 1);
    expect(v.fs.type).toBe('ext4');
    // The 300-entry directory is indexed: its inode has EXT4_INDEX_FL (debugfs shows "Flags: 0x1000" or with extents 0x81000).
    expect(sh('debugfs', ['-R', 'stat /many', path.join(dir, 'p1.img')])).toMatch(/Flags: 0x[0-9a-f]*1[0-9a-f]{3}\b/);
    await expectTree(v.fs, tree1);
    await v.close();
  });

  it('reads ext2 with indirect blocks and a symlink', async () => {
    const v = await openVolumeFileSystem(await openDisk(disk), 3);
    expect(v.fs.type).toBe('ext2');
    await expectTree(v.fs, tree2, ['lost+found', 'link-to-hello']);
    const link = await lookup(v.fs, '/link-to-hello', false);
    expect(link.type).toBe('symlink');
    expect(await v.fs.readlink!(link)).toBe('hello.txt');
    const through = await lookup(v.fs, '/link-to-hello');
    expect(new TextDecoder().decode(await readWholeFile(v.fs, through))).toBe('hello 2\n');
    await v.close();
  });

  it('reads FAT16 long names in the active state and in the internal snapshot', async () => {
    const now = await openVolumeFileSystem(await openDisk(disk), 2);
    expect(now.fs.type).toBe('vfat');
    expect(now.fs.label).toBe('BLOCKTAB');
    await expectTree(now.fs, tree3);
    await now.close();
    const before = await openVolumeFileSystem(await openDisk(disk, 'before'), 2);
    // mcopy stores the symlink's target file (FAT has no links).
    await expectTree(before.fs, new Map([...tree2, ['link-to-hello', tree2.get('hello.txt')!]]));
    await before.close();
  });

  it('reads through an overlay: what the overlay changed', async () => {
    const ov = path.join(dir, 'overlay.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', disk, '-F', 'qcow2', ov]);
    // Only partition 3 changes in the overlay (qemu-io writes the new ext2 there).
    makeExt(path.join(dir, 'p3b.img'), path.join(dir, 'src3'), 4, 'ext2', ['-b', '1024']);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0 ${25 * MiB} ${4 * MiB}`, ov]);
    const raw = fs.readFileSync(path.join(dir, 'p3b.img'));
    // Write the new file system through qemu-img dd-free path: a raw copy of the disk, converted onto the overlay.
    const full = path.join(dir, 'disk-ov.img');
    qemuImg(['convert', '-O', 'raw', ov, full]);
    placeAt(full, path.join(dir, 'p3b.img'), 25 * MiB);
    qemuImg(['convert', '-n', '-f', 'raw', '-O', 'qcow2', '-B', disk, full, ov]);
    expect(raw.length).toBe(4 * MiB);
    const top = await openVolumeFileSystem(await openDisk(ov), 3);
    await expectTree(top.fs, tree3);
    await top.close();
    const base = await openVolumeFileSystem(await openDisk(disk), 3);
    await expectTree(base.fs, tree2, ['lost+found', 'link-to-hello']);
    await base.close();
  });

  it('the CLI: partitions, ls, cat, --snapshot, several file systems named', () => {
    const j = JSON.parse(blocktab(['partitions', '--output=json', disk]).stdout) as { table: string; partitions: Array<{ number: number; filesystem: string }> };
    expect(j.table).toBe('gpt');
    expect(j.partitions.map((p) => [p.number, p.filesystem])).toEqual([[1, 'ext4'], [2, 'vfat'], [3, 'ext2']]);
    const ls = JSON.parse(blocktab(['ls', '--output=json', '--partition', '2', '--snapshot', 'before', disk, '/docs']).stdout) as Array<{ name: string; type: string }>;
    expect(ls.map((e) => [e.name, e.type])).toEqual([['deep', 'dir'], ['readme.md', 'file']]);
    const cat = blocktab(['cat', '-p', '1', disk, '/hello.txt']);
    expect(cat.stdout).toBe('hello 1\n');
    const none = blocktab(['ls', disk]);
    expect(none.status).toBe(1);
    expect(none.stderr).toContain('several partitions hold file systems; choose one with --partition N: 1 (ext4), 2 (vfat), 3 (ext2)');
    const missing = blocktab(['cat', '-p', '1', disk, '/nope']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('/nope: No such file or directory');
  });
});

describe('MBR with logical partitions, whole-disk FAT32, FAT12', () => {
  it('lists primary and logical partitions as sfdisk does and reads each', async () => {
    const d = (n: string): string => path.join(dir, n);
    makeFat(d('m1.img'), d('src3'), 2, 12, 'SMALL');
    makeExt(d('m5.img'), d('src2'), 4, 'ext3', ['-b', '1024']);
    partition(d('mbr.img'), 16, 'label: dos\n1: start=2048, size=2M, type=1\n2: size=12M, type=5\n5: size=4M, type=83\n6: size=4M, type=83\n');
    const sf = sfdiskJson(d('mbr.img'));
    placeAt(d('mbr.img'), d('m1.img'), sf.partitions[0]!.start * 512);
    placeAt(d('mbr.img'), d('m5.img'), sf.partitions[2]!.start * 512);
    qemuImg(['convert', '-O', 'qcow2', d('mbr.img'), d('mbr.qcow2')]);
    const bs = await openDisk(d('mbr.qcow2'));
    const t = await readPartitionTable(new Volume(bs, 'mbr.qcow2'));
    expect(t.table).toBe('mbr');
    expect(t.partitions.map((p) => ({ node: `${d('mbr.img')}${p.number}`, start: p.start / 512, size: p.size / 512, type: p.type }))).toEqual(
      sf.partitions.map((p) => ({ node: p.node, start: p.start, size: p.size, type: p.type })),
    );
    expect(t.partitions.map((p) => p.filesystem ?? null)).toEqual(['vfat', null, 'ext3', null]);
    const fat12 = await openVolumeFileSystem(bs, 1);
    await expectTree(fat12.fs, tree3);
    await fat12.close();
    const ext3 = await openVolumeFileSystem(bs, 5);
    expect(ext3.fs.type).toBe('ext3');
    await expectTree(ext3.fs, tree2, ['lost+found', 'link-to-hello']);
    await ext3.close();
    // One partition holds a file system we know, and ls picks it (and there are two: so it does not).
    await expect(openVolumeFileSystem(bs)).rejects.toThrow(/several partitions hold file systems; choose one with --partition N: 1 \(vfat\), 5 \(ext3\)/);
  });

  it('reads a whole-disk FAT32 (no partition table)', async () => {
    const f = path.join(dir, 'fat32.img');
    makeFat(f, path.join(dir, 'src1'), 34, 32);
    const bs = await openDisk(f);
    const t = await readPartitionTable(new Volume(bs, f));
    expect(t).toMatchObject({ table: 'none', filesystem: 'vfat' });
    const v = await openVolumeFileSystem(bs);
    await expectTree(v.fs, tree1);
  });
});

describe('ISO 9660', () => {
  it('reads Rock Ridge (xorriso) and Joliet (genisoimage) names and files', async () => {
    const rr = path.join(dir, 'rr.iso');
    const jo = path.join(dir, 'joliet.iso');
    sh('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'RRVOL', '-o', rr, path.join(dir, 'src2')]);
    sh('genisoimage', ['-quiet', '-J', '-V', 'JOVOL', '-o', jo, path.join(dir, 'src1')]);
    const r = await openVolumeFileSystem(await openDisk(rr));
    expect(r.fs.type).toBe('iso9660');
    expect(r.fs.label).toBe('RRVOL');
    await expectTree(r.fs, tree2, ['link-to-hello']);
    const link = await lookup(r.fs, '/link-to-hello', false);
    expect(link.type).toBe('symlink');
    expect(await r.fs.readlink!(link)).toBe('hello.txt');
    const j = await openVolumeFileSystem(await openDisk(jo));
    await expectTree(j.fs, tree1);
  });

  it('reads plain ISO 9660 names (no Rock Ridge, no Joliet): upper case, without the ";1" version or a bare "."', async () => {
    const src = path.join(dir, 'plain-src');
    writeTree(src, new Map<string, Uint8Array>([
      ['readme.txt', new TextEncoder().encode('read me\n')],
      ['notes', new TextEncoder().encode('no extension\n')],
      ['sub/data.bin', Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)],
    ]));
    const iso = path.join(dir, 'plain.iso');
    sh('genisoimage', ['-quiet', '-V', 'PLAIN', '-o', iso, src]);
    const v = await openVolumeFileSystem(await openDisk(iso));
    expect(v.fs.type).toBe('iso9660');
    expect(v.fs.label).toBe('PLAIN');
    const names: string[] = [];
    await walkTree(v.fs, v.fs.root(), (e) => void names.push(e.path));
    expect(names.sort()).toEqual(['NOTES', 'README.TXT', 'SUB', 'SUB/DATA.BIN']);
    const data = await readWholeFile(v.fs, await lookup(v.fs, '/SUB/DATA.BIN'));
    expect(Buffer.compare(Buffer.from(data), fs.readFileSync(path.join(src, 'sub', 'data.bin')))).toBe(0);
    expect(new TextDecoder().decode(await readWholeFile(v.fs, await lookup(v.fs, '/NOTES')))).toBe('no extension\n');
  });
});

describe('GPT fallback and detection-only file systems', () => {
  it('a corrupt primary GPT header falls back to the backup', async () => {
    const g = path.join(dir, 'gpt.img');
    fs.writeFileSync(g, '');
    fs.truncateSync(g, 8 * MiB);
    sh('sgdisk', ['-n', '1:2048:+2M', '-c', '1:first', '-n', '2:0:+2M', '-t', '2:0700', g]);
    const want = sfdiskJson(g).partitions;
    // A hybrid MBR (sgdisk -h) in front of the GPT: still the GPT's partitions, the MBR named hybrid.
    sh('sgdisk', ['-h', '1', g]);
    const hybrid = await readPartitionTable(new Volume(await openDisk(g), 'gpt.img'));
    expect(hybrid).toMatchObject({ table: 'gpt', mbr: 'hybrid', gptHeader: 'primary' });
    expect(hybrid.partitions.map((p) => p.start / 512)).toEqual(want.map((p) => p.start));
    const b = fs.readFileSync(g);
    b[512 + 24] ^= 0xff; // MyLBA: the header CRC no longer matches
    fs.writeFileSync(g, b);
    const t = await readPartitionTable(new Volume(await openDisk(g), 'gpt.img'));
    expect(t.gptHeader).toBe('backup');
    expect(t.warnings.join('\n')).toMatch(/gpt\.img: primary GPT header at LBA 1: HeaderCRC32 is 0x[0-9a-f]+, the header's CRC-32 is 0x[0-9a-f]+; using the backup header/);
    expect(t.partitions.map((p) => [p.start / 512, p.size / 512, p.type, p.name])).toEqual(want.map((p) => [p.start, p.size, p.type, p.name ?? '']));
    // The partition entry array broken too in the backup: no table can be read, and the error says why.
    const arrLba = fs.readFileSync(g).readUInt32LE(8 * MiB - 512 + 72);
    const b2 = fs.readFileSync(g);
    b2[arrLba * 512 + 40] ^= 1;
    fs.writeFileSync(g, b2);
    const bs2 = await openImage(storage, g, { readOnly: true, format: 'raw' });
    open.push(bs2);
    await expect(readPartitionTable(new Volume(bs2, 'gpt.img'))).rejects.toThrow(/backup GPT partition entry array at LBA \d+: PartitionEntryArrayCRC32/);
  });

  it('NTFS and btrfs are named and refused with ENOTSUP', async () => {
    const n = path.join(dir, 'ntfs.img');
    const img = Buffer.alloc(1 * MiB);
    img.write('\xebR\x90NTFS    ', 0, 'latin1');
    img.writeUInt16LE(512, 11);
    img[510] = 0x55;
    img[511] = 0xaa;
    fs.writeFileSync(n, img);
    const bt = path.join(dir, 'btrfs.img');
    const img2 = Buffer.alloc(1 * MiB);
    img2.write('_BHRfS_M', 0x10040, 'latin1');
    fs.writeFileSync(bt, img2);
    for (const [f, name] of [[n, 'ntfs'], [bt, 'btrfs']] as const) {
      const bs = await openDisk(f);
      expect((await readPartitionTable(new Volume(bs, f))).filesystem).toBe(name);
      await expect(openVolumeFileSystem(bs)).rejects.toMatchObject({ code: 'ENOTSUP', message: expect.stringContaining(`${name} file system found; reading ${name} is not supported yet`) });
    }
  });
});

describe('hostile structures', () => {
  it('MBR entries beyond the disk and overlapping: an error on that partition, the others listed', async () => {
    const m = path.join(dir, 'bad-mbr.img');
    partition(m, 8, 'label: dos\nstart=2048, size=2M, type=83\nsize=2M, type=83\nsize=2M, type=83\n');
    const b = fs.readFileSync(m);
    b.writeUInt32LE(1_000_000, 0x1be + 16 + 12); // partition 2: far beyond the 8 MiB disk
    b.writeUInt32LE(2048 + 100, 0x1be + 32 + 8); // partition 3 starts inside partition 1
    fs.writeFileSync(m, b);
    const t = await readPartitionTable(new Volume(await openDisk(m), 'bad-mbr.img'));
    expect(t.partitions.map((p) => p.number)).toEqual([1, 2, 3]);
    expect(t.partitions[0]!.error).toBeUndefined();
    expect(t.partitions[1]!.error).toMatch(/bad-mbr\.img: partition 2 \(bytes \d+\.\.\d+\) runs beyond the end of the disk \(8388608 bytes\)/);
    expect(t.partitions[2]!.error).toMatch(/bad-mbr\.img: partition 3 \(from byte \d+\) overlaps partition 1/);
  });

  it('an EBR chain that loops is cut with an error', async () => {
    const m = path.join(dir, 'ebr-loop.img');
    partition(m, 8, 'label: dos\n1: start=2048, size=6M, type=5\n5: size=1M, type=83\n6: size=1M, type=83\n');
    const sf = sfdiskJson(m);
    const b = fs.readFileSync(m);
    // The second EBR's "next" entry points back at the first EBR (relative 0).
    const ebr2 = (sf.partitions[2]!.start - 2048) * 512;
    b.writeUInt32LE(0, ebr2 + 0x1be + 16 + 8);
    b[ebr2 + 0x1be + 16 + 4] = 5;
    b.writeUInt32LE(100, ebr2 + 0x1be + 16 + 12);
    fs.writeFileSync(m, b);
    const t = await readPartitionTable(new Volume(await openDisk(m), 'ebr-loop.img'));
    expect(t.partitions.map((p) => p.number)).toEqual([1, 5, 6]);
    expect(t.warnings.join('\n')).toMatch(/extended boot record at 0x100000 links back to an earlier one \(a loop\)/);
  });

  it('FAT: a cluster chain loop and a directory loop are reported, the rest of the tree listed', async () => {
    const f = path.join(dir, 'fat-loop.img');
    makeFat(f, path.join(dir, 'src3'), 8, 16);
    const b = fs.readFileSync(f);
    const rsvd = b.readUInt16LE(14);
    const fatSz = b.readUInt16LE(22);
    const rootEnt = b.readUInt16LE(17);
    const spc = b[13]!;
    const rootDir = (rsvd + 2 * fatSz) * 512;
    const dataStart = rootDir + rootEnt * 32;
    const findEntry = (from: number, to: number, short: string): number => {
      for (let o = from; o < to; o += 32) if (b.toString('latin1', o, o + 11) === short) return o;
      throw new Error(`no ${short}`);
    };
    const big = findEntry(rootDir, dataStart, 'BIG     BIN');
    const bigCluster = b.readUInt16LE(big + 26);
    b.writeUInt16LE(bigCluster, rsvd * 512 + bigCluster * 2); // big.bin's first cluster links to itself
    const docs = findEntry(rootDir, dataStart, 'DOCS       ');
    const docsCluster = b.readUInt16LE(docs + 26);
    const docsDir = dataStart + (docsCluster - 2) * spc * 512;
    const deep = findEntry(docsDir, docsDir + spc * 512, 'DEEP       ');
    b.writeUInt16LE(docsCluster, deep + 26); // docs/deep is docs again
    fs.writeFileSync(f, b);
    const v = await openVolumeFileSystem(await openDisk(f));
    const entries = await walk(v.fs);
    expect(entries.find((e) => e.path === 'docs/deep')?.error).toMatch(/directory docs\/deep is already listed \(a directory loop\)/);
    expect(entries.map((e) => e.path)).toContain('hello.txt');
    const bigNode = await lookup(v.fs, '/big.bin');
    await expect(readWholeFile(v.fs, bigNode)).rejects.toThrow(/fat-loop\.img: file big\.bin cluster chain at 0x[0-9a-f]+: cluster \d+ comes round again: longer than the volume's \d+ clusters \(a loop\)/);
    expect(new TextDecoder().decode(await readWholeFile(v.fs, await lookup(v.fs, '/hello.txt')))).toBe('hello 3\n');
  });

  it('ext4: an absurd extent count names the inode and offset; a name with "/" and ".." stays inside its folder', async () => {
    const e = path.join(dir, 'ext-bad.img');
    makeExt(e, path.join(dir, 'src3'), 4, 'ext4', ['-b', '1024', '-O', '^inline_data']);
    const imap = sh('debugfs', ['-R', 'imap /big.bin', e]);
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(imap)!;
    const inodeOff = Number(m[1]) * 1024 + parseInt(m[2]!, 16);
    const b = fs.readFileSync(e);
    expect(b.readUInt16LE(inodeOff + 40)).toBe(0xf30a);
    b.writeUInt16LE(0xffff, inodeOff + 40 + 2); // eh_entries
    const name = Buffer.from('hello.txt');
    const at = b.indexOf(name);
    b.write('a/../.txt', at, 'latin1');
    fs.writeFileSync(e, b);
    const v = await openVolumeFileSystem(await openDisk(e));
    const big = await lookup(v.fs, '/big.bin');
    await expect(readWholeFile(v.fs, big)).rejects.toThrow(/ext-bad\.img: ext inode \d+ extent node at 0x0: 65535 entries do not fit the node/);
    const names = (await v.fs.readdir(v.fs.root())).map((n) => n.name);
    expect(names).toContain('a/../.txt');
    expect(safeName('a/../.txt')).toBe('a_.._.txt');
    expect(safeName('..')).toBe('__');
    await expect(lookup(v.fs, '/a/../.txt')).rejects.toThrow(/No such file or directory/);
  });
});

describe("the app's inspect service (the worker side of 'Inside the disk')", () => {
  it('reads a snapshot view and lists what an overlay changed, by content when size and time agree', async () => {
    const { InspectService } = await import('../../src/engine/inspect.js');
    const ov = path.join(dir, 'overlay.qcow2');
    const disk = path.join(dir, 'disk.qcow2');
    const top = await openDisk(ov);
    const base = await openDisk(disk);
    const svc = new InspectService((name) => ({ ov: top, base })[name as 'ov' | 'base']!);
    const snap = await svc.list({ node: 'base', snapshot: 'before' }, 2, '/docs');
    expect(snap.map((e) => e.name)).toEqual(['deep', 'readme.md']);
    expect(new TextDecoder().decode(await svc.read({ node: 'base', snapshot: 'before' }, 2, '/hello.txt', 0, 100))).toBe('hello 2\n');
    expect(new TextDecoder().decode(await svc.read({ node: 'base' }, 2, '/hello.txt', 0, 100))).toBe('hello 3\n');
    // The same snapshot seen as a lower layer of the overlay's chain.
    expect(new TextDecoder().decode(await svc.read({ node: 'ov', layer: 1, snapshot: 'before' }, 2, '/hello.txt', 0, 100))).toBe('hello 2\n');
    expect(new TextDecoder().decode(await svc.read({ node: 'ov', layer: 1 }, 2, '/hello.txt', 0, 100))).toBe('hello 3\n');
    // A recursive listing (the app's zip of a folder): every path under /docs, with sizes.
    const tree = await svc.tree({ node: 'base' }, 2, '/docs');
    const want: string[] = [];
    const docs = await lookup((await openVolumeFileSystem(base, 2)).fs, '/docs');
    await walkTree((await openVolumeFileSystem(base, 2)).fs, docs, (e) => void want.push(`${e.path}:${e.node.type}:${e.node.type === 'file' ? e.node.size : ''}`));
    expect(tree.map((e) => `${e.path}:${e.type}:${e.type === 'file' ? e.size : ''}`)).toEqual(want);
    expect(tree.some((e) => e.path === 'readme.md' && e.type === 'file')).toBe(true);
    await expect(svc.tree({ node: 'base' }, 2, '/hello.txt')).rejects.toThrow(/hello\.txt: Not a directory/);
    // Layer 0 of the overlay holds partition 3 made from tree 3, layer 1 from tree 2 (plus its symlink).
    const d = await svc.diff({ node: 'ov' }, { node: 'ov', layer: 1 }, 3);
    expect(d.added).toEqual([]);
    expect(d.removed).toEqual(['link-to-hello']);
    const differ = [...tree3.keys()].filter((p) => Buffer.compare(Buffer.from(tree3.get(p)!), Buffer.from(tree2.get(p)!)) !== 0).sort();
    expect(differ.length).toBeGreaterThan(0);
    expect(d.changed.filter((p) => tree3.has(p))).toEqual(differ);
    await svc.release();
  });
});
