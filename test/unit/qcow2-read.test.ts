import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage, openImage, bdrvPread, closeNode, type BlockNode } from '../../src/node.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('qcow2-read-');
const st = new FileStorage();
let n = 0;

function img(name: string): string {
  return path.join(dir, `${++n}-${name}`);
}

/** Reads the whole image in `chunk`-byte requests (odd sizes exercise partial clusters). */
async function readAll(bs: BlockNode, chunk: number): Promise<Uint8Array> {
  const out = new Uint8Array(bs.totalBytes);
  for (let o = 0; o < bs.totalBytes; o += chunk) {
    const k = Math.min(chunk, bs.totalBytes - o);
    await bdrvPread(bs, o, k, out.subarray(o, o + k));
  }
  return out;
}

/** Compares every byte of `file` read by blocktab with qemu-img convert -O raw. */
async function expectSameAsQemu(file: string, chunks = [1 << 20, 12345]): Promise<void> {
  const raw = file + '.raw';
  qemuImg(['convert', '-O', 'raw', file, raw], { cwd: path.dirname(file) });
  const expected = new Uint8Array(fs.readFileSync(raw));
  const bs = await openImage(st, file, { readOnly: true });
  try {
    expect(bs.totalBytes).toBe(expected.length);
    for (const c of chunks) {
      const got = await readAll(bs, c);
      // Compare without printing megabytes on failure.
      const diff = got.findIndex((b, i) => b !== expected[i]);
      expect(diff, `first differing byte with ${c}-byte reads`).toBe(-1);
    }
  } finally {
    await closeNode(bs);
  }
}

/** A mixed workload: data, zeros, compressed, discards, across cluster boundaries. */
function populate(file: string, clusterSize: number, opts: { compress?: boolean; zero?: boolean } = {}): void {
  const c = clusterSize;
  const cmds = [
    `write -P 0x11 0 ${3 * c}`,
    `write -P 0x22 ${5 * c + 512} ${2 * c}`,
    `write -P 0x33 ${20 * c - 1024} 4096`,
  ];
  if (opts.zero !== false) cmds.push(`write -z ${c} ${c}`, `write -z ${30 * c} ${2 * c}`);
  if (opts.compress) cmds.push(`write -c -P 0x44 ${10 * c} ${c}`, `write -c -P 0x55 ${11 * c} ${c}`, `write -c -P 0x66 ${40 * c} ${c}`);
  qemuIo(file, cmds, 'qcow2');
}

describe('qcow2 read path vs qemu-img convert', () => {
  for (const bits of [9, 12, 16, 21]) {
    const cs = 2 ** bits;
    it(`cluster size ${cs}, compat 1.1, zlib compressed and zero clusters`, async () => {
      const f = img(`cs${cs}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, f, String(64 * cs + 777 * 512)]);
      populate(f, cs, { compress: true });
      await expectSameAsQemu(f);
    }, 60_000);
  }

  it('compat 0.10 (zero writes become data or deallocation)', async () => {
    const f = img('v2.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', f, '8M']);
    populate(f, 65536, { compress: true });
    await expectSameAsQemu(f);
  });

  it('zstd compressed clusters', async () => {
    const f = img('zstd.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd,cluster_size=4096', f, '4M']);
    populate(f, 4096, { compress: true });
    // A whole compressed image too (many consecutive compressed clusters of varied content).
    const src = img('zsrc.raw');
    const data = new Uint8Array(2 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
    fs.writeFileSync(src, data);
    const f2 = img('zstd-all.qcow2');
    qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', src, f2]);
    await expectSameAsQemu(f);
    await expectSameAsQemu(f2);
  });

  it('extended L2 with subcluster-granular writes and zeros', async () => {
    const f = img('extl2.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=65536', f, '8M']);
    qemuIo(f, ['write -P 0x11 2048 2048', 'write -P 0x22 65536 8192', 'write -z 70000 4096', 'write -P 0x33 200704 131072', 'write -z 0 2048', 'discard 204800 4096'], 'qcow2');
    await expectSameAsQemu(f, [1 << 20, 777]);
  });

  for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
    it(`refcount_bits=${bits}`, async () => {
      const f = img(`rc${bits}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `refcount_bits=${bits}`, f, '4M']);
      populate(f, 65536, { compress: bits === 16 });
      await expectSameAsQemu(f);
    });
  }

  it('backing chain 3 deep with different cluster sizes, overlays larger and smaller than backing, raw base', async () => {
    const base = img('base.raw');
    fs.writeFileSync(base, new Uint8Array(3 << 20).fill(0xaa));
    const mid = img('mid.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', path.basename(base), '-F', 'raw', mid, '2M']);
    qemuIo(mid, ['write -P 0x11 4096 8192', 'write -z 65536 4096'], 'qcow2');
    const mid2 = img('mid2.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2097152', '-b', path.basename(mid), '-F', 'qcow2', mid2, '5M']);
    qemuIo(mid2, ['write -P 0x22 3145728 65536'], 'qcow2');
    const top = img('top.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', path.basename(mid2), '-F', 'qcow2', top, '7M']);
    qemuIo(top, ['write -P 0x33 0 1024', 'write -z 8192 512', 'write -P 0x44 6291456 1024'], 'qcow2');
    await expectSameAsQemu(top);
    const bs = await openImage(st, top, { readOnly: true });
    expect(bs.backingFile).toBe(path.basename(mid2));
    expect(bs.backingFormat).toBe('qcow2');
    expect(bs.backing?.node.backing?.node.backing?.node.driver.name).toBe('raw');
    await closeNode(bs);
  }, 60_000);

  it('external data file (and data_file_raw)', async () => {
    for (const raw of ['off', 'on']) {
      const f = img(`df-${raw}.qcow2`);
      const d = path.basename(f) + '.data';
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `data_file=${d},data_file_raw=${raw}`, f, '4M'], { cwd: dir });
      qemuIo(f, ['write -P 0x11 0 100000', 'write -P 0x22 1048576 65536', 'write -z 2097152 65536'], 'qcow2', { cwd: dir });
      await expectSameAsQemu(f);
      const bs = await openImage(st, f, { readOnly: true });
      expect(bs.dataFile?.node.filename).toBe(path.join(dir, d));
      const info = bs.driver.getInfo!(bs)!;
      expect(info.data['data-file']).toBe(d);
      expect(info.data['data-file-raw']).toBe(raw === 'on');
      await closeNode(bs);
    }
  });

  it('virtual size not a multiple of the cluster size, and a multi-TiB sparse image', async () => {
    const f = img('odd.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, String(65536 * 3 + 1536)]);
    qemuIo(f, ['write -P 0x7 196608 1536'], 'qcow2');
    await expectSameAsQemu(f, [65536, 1000]);

    const big = img('big.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', big, '4T']);
    qemuIo(big, ['write -P 0x5a 3298534883328 65536', 'write -P 0x5b 0 512'], 'qcow2');
    const bs = await openImage(st, big, { readOnly: true });
    expect(bs.totalBytes).toBe(4 * 2 ** 40);
    const buf = new Uint8Array(131072);
    await bdrvPread(bs, 3298534883328 - 65536, 131072, buf);
    expect(buf.subarray(0, 65536).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(65536).every((b) => b === 0x5a)).toBe(true);
    await bdrvPread(bs, 0, 1024, buf);
    expect(buf.subarray(0, 512).every((b) => b === 0x5b)).toBe(true);
    expect(buf.subarray(512, 1024).every((b) => b === 0)).toBe(true);
    await closeNode(bs);
  });

  it('a dirty lazy_refcounts image opens read-only and reports the dirty bit', async () => {
    const f = img('dirty.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, '4M']);
    qemuIo(f, ['write -P 0x9 0 65536'], 'qcow2');
    // Set the dirty bit (incompatible_features bit 0, the last byte of the u64 at 0x48).
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, new Uint8Array([1]), 0, 1, 0x4f);
    fs.closeSync(fd);
    expect(JSON.parse(qemuImg(['info', '-U', '--output=json', f]))['dirty-flag']).toBe(true);
    const bs = await openImage(st, f, { readOnly: true });
    expect(bs.driver.getDriverInfo!(bs).isDirty).toBe(true);
    expect(bs.driver.getInfo!(bs)!.data['lazy-refcounts']).toBe(true);
    const buf = new Uint8Array(65536);
    await bdrvPread(bs, 0, 65536, buf);
    expect(buf.every((b) => b === 9)).toBe(true);
    await closeNode(bs);
  });

  it('a small l2-cache-size still reads everything (LRU eviction)', async () => {
    const f = img('cache.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', f, '8M']);
    qemuIo(f, ['write -P 0x1 0 3M', 'write -P 0x2 5M 1M'], 'qcow2');
    const raw = f + '.raw';
    qemuImg(['convert', '-O', 'raw', f, raw]);
    const bs = await openImage(st, f, { readOnly: true, driverOptions: { 'l2-cache-size': 1024, 'l2-cache-entry-size': 512 } });
    const got = await readAll(bs, 300000);
    expect(Buffer.compare(Buffer.from(got), fs.readFileSync(raw))).toBe(0);
    await closeNode(bs);
  });
});
