import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  encodeHeaderFields,
  HEADER_FIELDS,
  parseHeader,
  serializeHeader,
  type HeaderField,
  type Qcow2Header,
  findExtension,
  QCOW2_EXT_MAGIC_BACKING_FORMAT,
  QCOW2_EXT_MAGIC_BITMAPS,
  QCOW2_EXT_MAGIC_DATA_FILE,
  QCOW2_EXT_MAGIC_FEATURE_TABLE,
  QEMU_FEATURE_TABLE,
} from '../../src/formats/qcow2/header.js';
import { qemuImg, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('qcow2-header-');

function headerCluster(file: string): Uint8Array {
  const all = fs.readFileSync(file);
  const bits = all.readUInt32BE(20);
  return new Uint8Array(all.subarray(0, 2 ** bits));
}

const cases: Array<{ name: string; opts: string[]; setup?: (f: string) => void }> = [
  { name: 'v3 default', opts: [] },
  { name: 'v2 (compat 0.10)', opts: ['-o', 'compat=0.10'] },
  { name: 'v2 with backing', opts: ['-o', 'compat=0.10', '-b', 'base.raw', '-F', 'raw'] },
  { name: 'v3 with backing and format', opts: ['-o', 'cluster_size=512', '-b', 'base.raw', '-F', 'raw'] },
  { name: 'zstd, extended L2, lazy refcounts, refcount_bits=64', opts: ['-o', 'compression_type=zstd,extended_l2=on,lazy_refcounts=on,refcount_bits=64'] },
  { name: 'external data file', opts: ['-o', 'data_file=hdr.data,data_file_raw=on'] },
  { name: 'persistent bitmap', opts: [], setup: (f) => qemuImg(['bitmap', '--add', f, 'bm0'], { cwd: dir }) },
  { name: '2 MiB clusters, refcount_bits=1', opts: ['-o', 'cluster_size=2M,refcount_bits=1'] },
  { name: 'with an internal snapshot', opts: [], setup: (f) => qemuImg(['snapshot', '-c', 'snap', f], { cwd: dir }) },
];

describe('qcow2 header parse/serialize', () => {
  fs.writeFileSync(path.join(dir, 'base.raw'), new Uint8Array(1 << 20));
  cases.forEach((c, i) => {
    it(`${c.name}: serialize(parse(qemu header)) is byte-identical and parse round-trips`, () => {
      const f = path.join(dir, `h${i}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', ...c.opts, f, '1G'], { cwd: dir });
      c.setup?.(f);
      const bytes = headerCluster(f);
      const h = parseHeader(bytes, f);
      const again = serializeHeader(h);
      expect(Buffer.compare(Buffer.from(again), Buffer.from(bytes))).toBe(0);
      expect(parseHeader(again, f)).toEqual(h);
    });
  });

  it('parses every field and extension with the spec meaning', () => {
    const f = path.join(dir, 'fields.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096,data_file=fields.data,compression_type=zstd', '-b', 'base.raw', '-F', 'raw', f, '3G'], { cwd: dir });
    qemuImg(['bitmap', '--add', '-g', '131072', f, 'b1'], { cwd: dir });
    const h = parseHeader(headerCluster(f), f);
    const info = JSON.parse(qemuImg(['info', '--output=json', f], { cwd: dir }));
    expect(h.version).toBe(3);
    expect(h.clusterBits).toBe(12);
    expect(h.size).toBe(3 * 2 ** 30);
    expect(h.backingFile).toBe('base.raw');
    expect(findExtension(h, QCOW2_EXT_MAGIC_BACKING_FORMAT)?.backingFormat).toBe('raw');
    expect(findExtension(h, QCOW2_EXT_MAGIC_DATA_FILE)?.dataFile).toBe(info['format-specific'].data['data-file']);
    // qemu-img 7.2 writes no feature-name table into images with an external data file…
    expect(findExtension(h, QCOW2_EXT_MAGIC_FEATURE_TABLE)).toBeUndefined();
    // …but does into plain version 3 images.
    const plain = path.join(dir, 'plain.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', plain, '1M']);
    expect(findExtension(parseHeader(headerCluster(plain), plain), QCOW2_EXT_MAGIC_FEATURE_TABLE)?.features).toEqual(QEMU_FEATURE_TABLE);
    expect(findExtension(h, QCOW2_EXT_MAGIC_BITMAPS)?.nbBitmaps).toBe(1);
    expect(h.compressionType).toBe(1);
    expect(h.refcountOrder).toBe(4);
    expect(h.headerLength).toBe(112);
  });

  it('keeps unknown extensions verbatim through a rewrite', () => {
    const f = path.join(dir, 'unk.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, '1M']);
    const h = parseHeader(headerCluster(f), f);
    const data = new Uint8Array([1, 2, 3, 4, 5]);
    h.extensions.push({ type: 0x12345678, data });
    h.backingFile = 'some/backing.qcow2';
    const h2 = parseHeader(serializeHeader(h), f);
    expect(h2.extensions.at(-1)).toEqual({ type: 0x12345678, data });
    expect(h2.backingFile).toBe('some/backing.qcow2');
    expect(h2.backingFileOffset).toBe(h.backingFileOffset);
  });

  it('refuses to serialize a header that does not fit in one cluster', () => {
    const f = path.join(dir, 'big.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', f, '1M']);
    const h = parseHeader(headerCluster(f), f);
    h.extensions.push({ type: 0x99, data: new Uint8Array(600) });
    expect(() => serializeHeader(h)).toThrow(/more than one cluster/);
  });

  it('encodes single fields exactly as they sit in the header qemu-img wrote, and refuses v3 fields in a v2 header', () => {
    for (const [i, opts] of [[], ['-o', 'compat=0.10'], ['-o', 'cluster_size=512,lazy_refcounts=on']].entries()) {
      const f = path.join(dir, `fields${i}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', ...opts, f, '5G'], { cwd: dir });
      const bytes = headerCluster(f);
      const h = parseHeader(bytes, f);
      for (const name of Object.keys(HEADER_FIELDS) as HeaderField[]) {
        const { offset, bytes: width } = HEADER_FIELDS[name];
        if (offset + width > (h.version === 2 ? 72 : h.headerLength)) {
          expect(() => encodeHeaderFields(h, [name]), name).toThrow(/not part of a version/);
          continue;
        }
        const got = encodeHeaderFields(h, [name]);
        expect(got.offset, name).toBe(offset);
        expect([...got.bytes], name).toEqual([...bytes.subarray(offset, offset + width)]);
      }
    }
  });

  it('writes the fields qemu-img changes (snapshot, resize, amend) byte for byte as qemu-img does', () => {
    const ops: Array<{ name: string; create: string[]; op: (f: string) => void }> = [
      { name: 'snapshot -c', create: [], op: (f) => qemuImg(['snapshot', '-c', 's1', f]) },
      { name: 'resize', create: ['-o', 'cluster_size=4096'], op: (f) => qemuImg(['resize', '-q', f, '+3G']) },
      { name: 'amend lazy_refcounts', create: [], op: (f) => qemuImg(['amend', '-o', 'lazy_refcounts=on', f]) },
      { name: 'amend refcount_bits', create: [], op: (f) => qemuImg(['amend', '-o', 'refcount_bits=64', f]) },
    ];
    for (const [i, o] of ops.entries()) {
      const f = path.join(dir, `op${i}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', ...o.create, f, '1G'], { cwd: dir });
      const before = parseHeader(headerCluster(f), f);
      o.op(f);
      const afterBytes = headerCluster(f);
      const after = parseHeader(afterBytes, f);
      const changed = (Object.keys(HEADER_FIELDS) as HeaderField[]).filter((k) => before[k] !== after[k]);
      expect(changed.length, o.name).toBeGreaterThan(0);
      const next: Qcow2Header = { ...before };
      for (const k of changed) (next as unknown as Record<string, unknown>)[k] = after[k];
      const { offset, bytes } = encodeHeaderFields(next, changed);
      expect(offset, o.name).toBe(Math.min(...changed.map((k) => HEADER_FIELDS[k].offset)));
      expect([...bytes], `${o.name}: ${changed.join(', ')}`).toEqual([...afterBytes.subarray(offset, offset + bytes.length)]);
    }
  });
});
