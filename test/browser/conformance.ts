/**
 * The storage conformance suite, as a function of a storage factory (the way
 * wa-sqlite's suites are): every Storage/protocol driver pair must pass the
 * same cases. It is plain code with worker-safe asserts, so the page runs it
 * for window-capable storages and the OPFS test worker runs it for OPFS.
 *
 * Writable storages get every case; read-only ones (blob, http) the subset
 * that reads prepared files.
 */
import type { Storage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../src/block/io.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { check, equal, rejects, sameBytes } from './assert.js';
import { conformanceFiles, seededBytes } from './fixtures.js';

export interface StorageFactory {
  name: string;
  writable: boolean;
  /**
   * A fresh namespace holding `files` (the conformanceFiles() set). Writable
   * storages store them; read-only ones return a namespace that already has
   * them (the served directory, Blobs).
   */
  make(files: Record<string, Uint8Array>): Promise<Storage>;
  /**
   * The storage normalises names ('.', '..', leading '/') and refuses names
   * that leave its namespace. MemoryStorage (a core test helper) keeps names
   * verbatim, so those checks do not apply to it.
   */
  namespaced?: boolean;
}

export interface Case {
  name: string;
  writableOnly: boolean;
  run(): Promise<void>;
}

async function readAll(bs: BlockNode, length = bs.totalBytes): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await bdrvPread(bs, 0, length, out);
  return out;
}

/** A model of a file: the bytes it must read as. */
class Model {
  bytes = new Uint8Array(0);
  write(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.bytes.length) this.resize(offset + data.length);
    this.bytes.set(data, offset);
  }
  resize(size: number): void {
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
}

async function createOpen(st: Storage, name: string): Promise<BlockNode> {
  await st.createFile!(name);
  return st.openProtocol(name, { readOnly: false });
}

async function expectContent(bs: BlockNode, model: Model, what: string): Promise<void> {
  equal(await bdrvGetLength(bs), model.bytes.length, `${what}: length`);
  sameBytes(await readAll(bs), model.bytes, what);
}

export function storageConformance(f: StorageFactory): Case[] {
  const files = conformanceFiles();
  const cases: Case[] = [];
  const add = (name: string, writableOnly: boolean, run: () => Promise<void>) => cases.push({ name, writableOnly, run });

  // ------------------------------------------------------------ read-only subset
  add('reads prepared files at aligned and unaligned offsets, zeros past the end', false, async () => {
    const st = await f.make(files);
    const want = files['a.img']!;
    const bs = await st.openProtocol('a.img', { readOnly: true });
    equal(bs.totalBytes, want.length, 'size');
    for (const [off, n] of [
      [0, 4096],
      [1, 1],
      [65535, 2],
      [4097, 200_000],
      [want.length - 7, 7],
    ] as const) {
      const out = new Uint8Array(n);
      await bdrvPread(bs, off, n, out);
      sameBytes(out, want.subarray(off, off + n), `read ${off}+${n}`);
    }
    const past = new Uint8Array(100).fill(0xee);
    await bdrvPread(bs, want.length - 10, 100, past);
    const expected = new Uint8Array(100);
    expected.set(want.subarray(want.length - 10));
    sameBytes(past, expected, 'read across the end');
    sameBytes(await readAll(bs), want, 'whole file');
    await closeNode(bs);
  });

  add('opens names in subdirectories, with . and .. inside the namespace', false, async () => {
    const st = await f.make(files);
    // A leading '/' is the namespace root, except for http, where it is the origin's root (URL semantics).
    const names =
      f.namespaced === false
        ? ['dir/sub/b.img']
        : ['dir/sub/b.img', 'dir/./sub/../sub/b.img', ...(f.name === 'http' ? [] : ['/dir/sub/b.img'])];
    for (const name of names) {
      const bs = await st.openProtocol(name, { readOnly: true });
      sameBytes(await readAll(bs), files['dir/sub/b.img']!, name);
      await closeNode(bs);
    }
    const e = await st.openProtocol('empty.img', { readOnly: true });
    equal(e.totalBytes, 0, 'empty file size');
    await closeNode(e);
  });

  add('opens through openImage (probed raw) and resolves backing names inside the namespace', false, async () => {
    const st = await f.make(files);
    const warnings: string[] = [];
    const bs = await openImage(st, 'dir/sub/b.img', { readOnly: true, warn: (w) => warnings.push(w) });
    equal(bs.driver.name, 'raw', 'probed driver');
    // Guessed raw, read-only: no warning, as QEMU (it warns only when the guess restricts writes).
    check(bs.probedAsRaw && warnings.length === 0, `raw guess without a warning: ${warnings.join(' | ')}`);
    sameBytes(await readAll(bs), files['dir/sub/b.img']!, 'through raw');
    await closeNode(bs);
    const from = st.resolve('a.img', 'dir/sub/b.img');
    check(from.endsWith('dir/sub/b.img'), `resolve: ${from}`);
    if (f.namespaced !== false) {
      const up = st.resolve('dir/sub/b.img', '../../a.img');
      check(up.endsWith('a.img') && !up.includes('..'), `resolve ..: ${up}`);
    }
  });

  add('missing files are ENOENT', false, async () => {
    const st = await f.make(files);
    await rejects(st.openProtocol('nope.img', { readOnly: true }), 'ENOENT', /nope\.img/, 'missing file');
    await rejects(openImage(st, 'dir/nope.img', { readOnly: true }), 'ENOENT', /nope\.img/, 'missing file via openImage');
  });

  if (f.namespaced !== false) add('refuses names that escape the namespace', false, async () => {
    const st = await f.make(files);
    if (f.name !== 'http') {
      await rejects(() => st.resolve('dir/sub/b.img', '../../../x.img'), 'EPERM', /dir\/sub\/b\.img.*\.\.\/\.\.\/\.\.\/x\.img/, "'..' above the root");
      await rejects(() => st.resolve('a.img', 'http://example.org/x.img'), 'EPERM', /a\.img.*http:\/\/example\.org/, 'URL in a local namespace');
      await rejects(() => st.resolve('a.img', 'file:///etc/passwd'), 'EPERM', /a\.img.*file:/, 'file URL in a local namespace');
      await rejects(st.openProtocol('../a.img', { readOnly: true }), 'EPERM', /\.\.\/a\.img/, "opening '..'");
    } else {
      // The http namespace is the image's origin ('..' stops at the origin's root, as URLs do).
      await rejects(() => st.resolve(st.resolve('a.img', 'a.img'), 'http://example.org/x.img'), 'EPERM', /another origin/, 'other origin');
      await rejects(() => st.resolve(st.resolve('a.img', 'a.img'), '//example.org/x.img'), 'EPERM', /another origin/, 'scheme-relative other origin');
    }
  });

  add('writes to a read-only image are refused', false, async () => {
    const st = await f.make(files);
    const bs = await openImage(st, 'a.img', { readOnly: true, format: 'raw' });
    await rejects(bdrvPwrite(bs, 0, 1, new Uint8Array(1)), 'EPERM', /a\.img.*read-only/, 'write to read-only node');
    await closeNode(bs);
    if (!f.writable) {
      // Read-only storages refuse read-write use by name and reason, at open (http) or at the first write (blob).
      let node: BlockNode | null = null;
      const err = await rejects(
        (async () => {
          node = await st.openProtocol('a.img', { readOnly: false });
          await bdrvPwrite(node, 0, 1, new Uint8Array(1));
        })(),
        'EROFS',
        /a\.img.*read-only/,
        'write to a read-only storage',
      );
      check(err, 'error');
      if (node) {
        sameBytes(await readAll(node), files['a.img']!, 'unchanged after refused write');
        await closeNode(node);
      }
    }
  });

  // ------------------------------------------------------------ writable storages
  add('create, write and read back at aligned and unaligned offsets', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 'w.img');
    equal(bs.totalBytes, 0, 'new file is empty');
    const m = new Model();
    const ops: [number, number, number][] = [
      [0, 1 << 20, 11], // 1 MiB aligned
      [4097, 1000, 12], // unaligned inside a block
      [65535, 3, 13], // straddles a 64 KiB boundary
      [200_000, 300_001, 14], // unaligned, many blocks
      [0, 1, 15],
    ];
    for (const [off, n, seed] of ops) {
      const data = seededBytes(n, seed);
      await bdrvPwrite(bs, off, n, data);
      m.write(off, data);
      const back = new Uint8Array(n);
      await bdrvPread(bs, off, n, back);
      sameBytes(back, data, `read back ${off}+${n}`);
    }
    await expectContent(bs, m, 'after writes');
    await closeNode(bs);
  });

  add('grows by writing past the end (the gap reads zeros)', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 'g.img');
    const m = new Model();
    const a = seededBytes(5000, 21);
    await bdrvPwrite(bs, 0, a.length, a);
    m.write(0, a);
    const b = seededBytes(777, 22);
    await bdrvPwrite(bs, 1_500_003, b.length, b);
    m.write(1_500_003, b);
    equal(bs.totalBytes, 1_500_780, 'size after growing');
    await expectContent(bs, m, 'after growing');
    await closeNode(bs);
  });

  add('truncates down and up (the regrown tail reads zeros)', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 't.img');
    const m = new Model();
    const a = seededBytes(400_000, 31);
    await bdrvPwrite(bs, 0, a.length, a);
    m.write(0, a);
    for (const size of [200_001, 65_536, 100, 300_000, 0, 70_000]) {
      await bdrvTruncate(bs, size, true);
      m.resize(size);
      await expectContent(bs, m, `truncate to ${size}`);
    }
    const c = seededBytes(10, 32);
    await bdrvPwrite(bs, 65_530, 10, c);
    m.write(65_530, c);
    await expectContent(bs, m, 'write after truncates');
    await closeNode(bs);
  });

  add('sparse: untouched ranges read zeros, and zeros written read back', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 's.img');
    const m = new Model();
    const tail = seededBytes(10, 41);
    await bdrvPwrite(bs, 3 << 20, 10, tail);
    m.write(3 << 20, tail);
    const zeros = new Uint8Array(256 * 1024);
    await bdrvPwrite(bs, 1 << 20, zeros.length, zeros);
    const mid = seededBytes(3, 42);
    await bdrvPwrite(bs, (1 << 20) + 70_000, 3, mid);
    m.write((1 << 20) + 70_000, mid);
    // Overwrite data with zeros: must read as zeros afterwards (idb deletes such chunks).
    await bdrvPwrite(bs, (1 << 20) + 65_536, 65_536, new Uint8Array(65_536));
    m.write((1 << 20) + 65_536, new Uint8Array(65_536));
    await expectContent(bs, m, 'sparse file');
    await closeNode(bs);
  });

  add('flush, close and reopen sees the data', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 'r.img');
    const a = seededBytes(300_003, 51);
    await bdrvPwrite(bs, 12_345, a.length, a);
    await bdrvFlush(bs);
    await bdrvTruncate(bs, 200_000, true);
    await closeNode(bs);
    const m = new Model();
    m.write(12_345, a);
    m.resize(200_000);
    const again = await st.openProtocol('r.img', { readOnly: true });
    await expectContent(again, m, 'after reopen');
    await closeNode(again);
  });

  add('files in subdirectories are created, reopened and removed', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 'vm/disks/d.img');
    const a = seededBytes(1000, 61);
    await bdrvPwrite(bs, 0, a.length, a);
    await closeNode(bs);
    const again = await st.openProtocol(f.namespaced === false ? 'vm/disks/d.img' : 'vm/x/../disks/./d.img', { readOnly: true });
    sameBytes(await readAll(again), a, 'reopened by an equivalent name');
    await closeNode(again);
    await st.removeFile!('vm/disks/d.img');
    await rejects(st.openProtocol('vm/disks/d.img', { readOnly: true }), 'ENOENT', /d\.img/, 'removed file');
    if (f.namespaced !== false) await rejects(createOpen(st, '../outside.img'), 'EPERM', /outside\.img/, 'create outside the namespace');
  });

  add('a raw image through openImage: writes at the format layer land in storage', true, async () => {
    const st = await f.make({});
    await createOpen(st, 'img/disk.raw').then(async (bs) => {
      await bdrvTruncate(bs, 1 << 20, true);
      await closeNode(bs);
    });
    const img = await openImage(st, 'img/disk.raw', { format: 'raw' });
    const a = seededBytes(5000, 71);
    await bdrvPwrite(img, 511, a.length, a);
    await closeNode(img);
    const m = new Model();
    m.resize(1 << 20);
    m.write(511, a);
    const again = await openImage(st, 'img/disk.raw', { format: 'raw', readOnly: true });
    await expectContent(again, m, 'raw image after reopen');
    await closeNode(again);
  });

  add('concurrent unaligned writes to one block do not lose each other', true, async () => {
    const st = await f.make({});
    const bs = await createOpen(st, 'c.img');
    await bdrvTruncate(bs, 256 * 1024, true);
    const m = new Model();
    m.resize(256 * 1024);
    const writes = Array.from({ length: 16 }, (_, i) => [i * 1000 + 7, seededBytes(900, 80 + i)] as const);
    await Promise.all(writes.map(([o, d]) => bdrvPwrite(bs, o, d.length, d)));
    for (const [o, d] of writes) m.write(o, d);
    await expectContent(bs, m, 'after concurrent writes');
    await closeNode(bs);
  });

  return f.writable ? cases : cases.filter((c) => !c.writableOnly);
}

/** Stores `files` in a writable storage (createFile + write), for factories. */
export async function storeFiles(st: Storage, files: Record<string, Uint8Array>): Promise<Storage> {
  for (const [name, bytes] of Object.entries(files)) {
    const bs = await createOpen(st, name);
    if (bytes.length) await bdrvPwrite(bs, 0, bytes.length, bytes);
    await closeNode(bs);
  }
  return st;
}
