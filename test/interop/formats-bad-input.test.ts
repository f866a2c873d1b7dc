/**
 * Broken and hostile vdi, vpc, qed, qcow and parallels images through the
 * CLI: tables beyond EOF, absurd sizes, bad block map entries, backing loops.
 * Every command must fail with exit code 1 and exactly one line on stderr
 * naming the image and what is wrong — no stack trace, no hang, no huge
 * allocation (a 4 GiB block map is refused before it is read).
 * Images are made by qemu-img and then patched at the spec's field offsets.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo, repoRoot, tmpDir } from '../helpers/qemu.js';
import { sampleCases } from '../helpers/sample.js';

type Field = [offset: number, size: 4 | 8, value: number];

function patch(d: string, name: string, fields: Field[], littleEndian: boolean): void {
  const fd = fs.openSync(path.join(d, name), 'r+');
  for (const [off, size, value] of fields) {
    const b = Buffer.alloc(size);
    if (size === 4) littleEndian ? b.writeUInt32LE(value) : b.writeUInt32BE(value);
    else littleEndian ? b.writeBigUInt64LE(BigInt(value)) : b.writeBigUInt64BE(BigInt(value));
    fs.writeSync(fd, b, 0, size, off);
  }
  fs.closeSync(fd);
}
const le = (d: string, n: string, f: Field[]) => patch(d, n, f, true);
const be = (d: string, n: string, f: Field[]) => patch(d, n, f, false);

function read(d: string, name: string, offset: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  const fd = fs.openSync(path.join(d, name), 'r');
  fs.readSync(fd, b, 0, bytes, offset);
  fs.closeSync(fd);
  return b;
}

/** Makes `name` with qemu-img (10 MiB) and writes data at offset 0 so a table or block exists. */
function make(d: string, fmt: string, name: string, opts: string[] = [], write = true): string {
  qemuImg(['create', '-q', '-f', fmt, ...opts, name, '10M'], { cwd: d });
  if (write) qemuIo(name, ['write -P 0x11 0 4k'], fmt, { cwd: d });
  return name;
}

interface BadCase {
  name: string;
  make(d: string): string;
  /** What the single stderr line must contain besides the image name. */
  says: string | RegExp;
  /** Commands to run; default info, map, convert. */
  commands?: (img: string) => string[][];
}

const readCmds = (img: string) => [['info', img], ['map', '--output=json', img], ['convert', '-O', 'raw', img, 'out.raw']];
const dataCmds = (img: string) => [['map', '--output=json', img], ['convert', '-O', 'raw', img, 'out.raw']];
const convertOnly = (img: string) => [['convert', '-O', 'raw', img, 'out.raw']];
// info alone does not open the backing chain (qemu-img info neither).
const loopCmds = (img: string) => [['info', '--backing-chain', img], ['map', '--output=json', img], ['convert', '-O', 'raw', img, 'out.raw']];

/** An image whose backing file is itself (qemu-img refuses to make one directly: made under another name, then renamed). */
function selfBacked(d: string, fmt: string, name: string): string {
  qemuImg(['create', '-q', '-f', fmt, '-u', '-b', name, '-F', fmt, `tmp-${name}`, '1M'], { cwd: d });
  fs.renameSync(path.join(d, `tmp-${name}`), path.join(d, name));
  return name;
}

// Field offsets from each format's header layout (see src/formats/<name>/header.ts).
const cases: BadCase[] = [
  // ---- vdi (little-endian)
  { name: 'vdi: block map beyond EOF', make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[340, 4, 0x10000000]]); return n; }, says: 'VDI block map at 0x10000000' },
  { name: 'vdi: absurd disk size', make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[368, 8, 2 ** 60]]); return n; }, says: 'Unsupported VDI image size' },
  { name: 'vdi: disk size larger than the block map', make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[368, 8, 11 * 1048576]]); return n; }, says: 'image bitmap has room for' },
  { name: 'vdi: block size other than 1 MiB', make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[376, 4, 4096]]); return n; }, says: 'block size 4096' },
  {
    name: 'vdi: block map entry beyond blocks_in_image',
    make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[512, 4, 5000]]); return n; },
    says: 'block map entry 0 (at 0x200) points at block 5000',
    commands: dataCmds,
  },
  {
    name: 'vdi: block map entry past the end of the file',
    make: (d) => { const n = make(d, 'vdi', 'a.vdi'); le(d, n, [[512 + 4, 4, 7]]); return n; },
    says: /VDI block 7 for guest offset 0x100000 at host offset 0x700400 .* extends beyond the end of the file/,
    commands: convertOnly,
  },
  // ---- vpc (big-endian; the footer copy at 0 has a checksum, the dynamic header at 512 is not checked by QEMU)
  { name: 'vpc: footer checksum', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[40, 8, 12345]]); return n; }, says: 'Incorrect header checksum' },
  { name: 'vpc: BAT beyond EOF', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[512 + 16, 8, 0x40000000]]); return n; }, says: 'VHD block allocation table at 0x40000000' },
  { name: 'vpc: absurd max_table_entries', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[512 + 28, 4, 0x7fffffff]]); return n; }, says: 'Max Table Entries too large' },
  { name: 'vpc: block size not a power of two', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[512 + 32, 4, 3000]]); return n; }, says: 'Invalid block size 3000' },
  { name: 'vpc: BAT entry past the end of the file', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[1536, 4, 0x100000]]); return n; }, says: 'BAT entry 0 (at 0x600) points at a block ending at' },
  { name: 'vpc: dynamic header magic', make: (d) => { const n = make(d, 'vpc', 'a.vhd'); be(d, n, [[512, 4, 0]]); return n; }, says: 'Invalid header magic' },
  // ---- qed (little-endian; L1 at 64 KiB)
  { name: 'qed: L1 table beyond EOF', make: (d) => { const n = make(d, 'qed', 'a.qed'); le(d, n, [[40, 8, 0x100000000]]); return n; }, says: 'invalid QED L1 table offset 0x100000000' },
  { name: 'qed: absurd image size', make: (d) => { const n = make(d, 'qed', 'a.qed'); le(d, n, [[48, 8, 2 ** 60]]); return n; }, says: 'invalid QED image size' },
  { name: 'qed: absurd cluster size', make: (d) => { const n = make(d, 'qed', 'a.qed'); le(d, n, [[4, 4, 0x80000000]]); return n; }, says: 'invalid QED cluster size' },
  { name: 'qed: unknown feature bit', make: (d) => { const n = make(d, 'qed', 'a.qed'); le(d, n, [[16, 8, 0x100]]); return n; }, says: 'Unsupported QED features: 100' },
  {
    name: 'qed: L1 entry beyond EOF',
    make: (d) => { const n = make(d, 'qed', 'a.qed'); le(d, n, [[65536, 8, 0x7fff0000]]); return n; },
    says: 'L1 entry 0 (at 0x10000) points at an invalid L2 table offset 0x7fff0000',
    commands: dataCmds,
  },
  {
    name: 'qed: L2 entry beyond EOF',
    make: (d) => {
      const n = make(d, 'qed', 'a.qed');
      const l2 = Number(read(d, n, 65536, 8).readBigUInt64LE());
      le(d, n, [[l2, 8, 0x7fff0000]]);
      return n;
    },
    says: 'invalid data cluster offset 0x7fff0000',
    commands: dataCmds,
  },
  {
    name: 'qed: backing file that is the image itself',
    make: (d) => selfBacked(d, 'qed', 'a.qed'),
    says: /infinite loop|backing chain loop: 'a.qed' -> 'a.qed'/,
    commands: loopCmds,
  },
  {
    name: 'qed: two images backing each other',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'qed', '-u', '-b', 'b.qed', '-F', 'qed', 'a.qed', '1M'], { cwd: d });
      qemuImg(['create', '-q', '-f', 'qed', '-u', '-b', 'a.qed', '-F', 'qed', 'b.qed', '1M'], { cwd: d });
      return 'a.qed';
    },
    says: /infinite loop|backing chain loop: 'a.qed' -> 'b.qed' -> 'a.qed'/,
    commands: loopCmds,
  },
  // ---- qcow (big-endian; 4 KiB clusters, 512 L2 entries)
  { name: 'qcow: L1 table beyond EOF', make: (d) => { const n = make(d, 'qcow', 'a.qcow'); be(d, n, [[40, 8, 0x100000000]]); return n; }, says: 'qcow L1 table at 0x100000000' },
  { name: 'qcow: absurd size', make: (d) => { const n = make(d, 'qcow', 'a.qcow'); be(d, n, [[24, 8, 2 ** 62]]); return n; }, says: 'Image too large' },
  { name: 'qcow: cluster_bits out of range', make: (d) => { const n = make(d, 'qcow', 'a.qcow'); const b = read(d, n, 32, 4); b[0] = 30; be(d, n, [[32, 4, b.readUInt32BE()]]); return n; }, says: 'Cluster size must be between 512 and 64k' },
  {
    name: 'qcow: L1 entry beyond EOF',
    make: (d) => { const n = make(d, 'qcow', 'a.qcow'); const l1 = Number(read(d, n, 40, 8).readBigUInt64BE()); be(d, n, [[l1, 8, 0x7fff0000]]); return n; },
    says: /qcow L2 table \(L1 entry 0 at 0x[0-9a-f]+\) at 0x7fff0000/,
    commands: dataCmds,
  },
  {
    name: 'qcow: garbage in a compressed cluster',
    make: (d) => {
      const n = make(d, 'qcow', 'a.qcow', [], false);
      qemuIo(n, ['write -c -P 0x41 0 4k'], 'qcow', { cwd: d });
      const l1 = Number(read(d, n, 40, 8).readBigUInt64BE());
      const l2 = Number(read(d, n, l1, 8).readBigUInt64BE());
      const entry = read(d, n, l2, 8).readBigUInt64BE();
      const coffset = Number(entry & ((1n << 51n) - 1n));
      const csize = Number((entry >> 51n) & 0xfffn);
      const fd = fs.openSync(path.join(d, n), 'r+');
      fs.writeSync(fd, Buffer.alloc(csize, 0xff), 0, csize, coffset);
      fs.closeSync(fd);
      return n;
    },
    says: 'could not decompress the qcow cluster for guest offset 0x0',
    commands: convertOnly,
  },
  {
    name: 'qcow: backing file that is the image itself',
    make: (d) => selfBacked(d, 'qcow', 'a.qcow'),
    says: /infinite loop|backing chain loop: 'a.qcow' -> 'a.qcow'/,
    commands: loopCmds,
  },
  // ---- parallels (little-endian; BAT at 64)
  { name: 'parallels: catalog too large', make: (d) => { const n = make(d, 'parallels', 'a.hdd'); le(d, n, [[32, 4, 0x7fffffff]]); return n; }, says: 'Catalog too large' },
  { name: 'parallels: BAT beyond EOF', make: (d) => { const n = make(d, 'parallels', 'a.hdd'); le(d, n, [[32, 4, 0x10000000]]); return n; }, says: 'parallels BAT at 0x40' },
  { name: 'parallels: zero sectors per track', make: (d) => { const n = make(d, 'parallels', 'a.hdd'); le(d, n, [[28, 4, 0]]); return n; }, says: 'Zero sectors per track' },
  {
    name: 'parallels: BAT entry past the end of the file',
    make: (d) => { const n = make(d, 'parallels', 'a.hdd'); le(d, n, [[64, 4, 0x1000]]); return n; },
    says: 'parallels cluster (BAT entry 0) for guest offset 0x0',
    commands: convertOnly,
  },
];

function run(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist/cli/main.js'), ...args], { cwd, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

describe('bad vdi, vpc, qed, qcow and parallels images through the CLI', () => {
  for (const c of sampleCases('formats bad input', cases, 0.5)) {
    it(c.name, () => {
      const dir = tmpDir('fmt-bad-');
      const image = c.make(dir);
      for (const args of (c.commands ?? readCmds)(image)) {
        const r = run(args, dir);
        const what = `blocktab ${args.join(' ')}`;
        expect(r.signal, `${what} was killed (hang?)`).toBeNull();
        expect(r.status, `${what}: ${r.stderr}`).toBe(1);
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        expect(lines, what).toHaveLength(1);
        expect(lines[0]!, what).toMatch(/^blocktab: /);
        expect(lines[0]!, what).toContain(image);
        if (typeof c.says === 'string') expect(lines[0]!, what).toContain(c.says);
        else expect(lines[0]!, what).toMatch(c.says);
      }
    });
  }
});

it('vdi: a 2 GiB block map (blocks_in_image at the maximum) in a small file opens as QEMU opens it, without reading 2 GiB (iotest 084)', () => {
  // QEMU reads the part of the map past the end of the file as zeros; blocktab holds only the part inside the file.
  const d = tmpDir('fmt-bad-');
  const n = make(d, 'vdi', 'a.vdi');
  le(d, n, [[384, 4, 0x1fffff80], [368, 8, 0x1fffff80 * 1048576]]);
  // (test/unit/formats-simple.test.ts checks that only the part inside the file is held.)
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist/cli/main.js'), 'info', '--output=json', n], { cwd: d, encoding: 'utf8', timeout: 20_000 });
  expect(r.signal).toBeNull();
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout).toBe(qemuImg(['info', '--output=json', n], { cwd: d }));
});
