// Driver-specific behaviour in the page that the shared conformance suite does
// not cover: idb sparseness and failed transactions, blob writes through a
// file handle and the read-only File case, http errors against the test server.
import { describe, expect, inject, it } from 'vitest';
import '../../src/browser.js';
import { IdbStorage } from '../../src/protocols/idb.js';
import { BlobStorage } from '../../src/protocols/blob.js';
import { HttpStorage, httpRequestCount } from '../../src/protocols/http.js';
import { BlockError } from '../../src/block/errors.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../src/block/io.js';
import { closeNode, openImage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { seededBytes, CONFORMANCE_DIR, conformanceFiles } from './fixtures.js';

const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
let n = 0;

async function failure(p: Promise<unknown>): Promise<BlockError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BlockError);
  return e as BlockError;
}

async function readAll(bs: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(bs.totalBytes);
  await bdrvPread(bs, 0, out.length, out);
  return out;
}

describe('idb', () => {
  it('is sparse: zeros written to absent chunks store nothing, zeroed chunks are dropped', async () => {
    const st = new IdbStorage(`blocktab-drv-${run}-${++n}`);
    await st.createFile('s.img');
    const bs = await st.openProtocol('s.img', { readOnly: false });
    const alloc = () => bs.driver.getAllocatedFileSize!(bs);
    await bdrvPwrite(bs, 0, 4 << 20, new Uint8Array(4 << 20));
    expect(bs.totalBytes).toBe(4 << 20);
    expect(await alloc()).toBe(0);
    await bdrvPwrite(bs, 100_000, 10, seededBytes(10, 1)); // one chunk (64 KiB)
    expect(await alloc()).toBe(64 * 1024);
    await bdrvPwrite(bs, 100_000, 10, new Uint8Array(10)); // that chunk is zero again
    expect(await alloc()).toBe(0);
    await bdrvPwrite(bs, (1 << 20) - 5, 10, seededBytes(10, 2)); // straddles two chunks
    expect(await alloc()).toBe(128 * 1024);
    await bdrvTruncate(bs, 1 << 20, true); // drops the chunk past the end, keeps the tail chunk's first 5 bytes
    expect(await alloc()).toBe(64 * 1024);
    await bdrvTruncate(bs, (1 << 20) - 5, true); // the last chunk is now all zero: dropped
    expect(await alloc()).toBe(0);
    await closeNode(bs);
    await st.close();
  });

  it('a failed transaction (quota at commit) is ENOSPC and leaves the image as it was', async () => {
    let fail = false;
    const st = new IdbStorage(`blocktab-drv-${run}-${++n}`, {
      faultHook: (op, name) => {
        if (fail) throw new DOMException(`quota exceeded during ${op} of ${name}`, 'QuotaExceededError');
      },
    });
    await st.createFile('q.img');
    const bs = await st.openProtocol('q.img', { readOnly: false });
    const data = seededBytes(200_000, 3);
    await bdrvPwrite(bs, 0, data.length, data);
    fail = true;
    const e = await failure(bdrvPwrite(bs, 150_000, 200_000, seededBytes(200_000, 4)));
    expect(e.code).toBe('ENOSPC');
    expect(e.message).toMatch(/q\.img: write of 200000 bytes at 0x249f0 failed: No space left on device \(storage quota exceeded\)/);
    const t = await failure(bdrvTruncate(bs, 10, true));
    expect(t.code).toBe('ENOSPC');
    expect(t.message).toMatch(/q\.img: truncate to 10 bytes failed/);
    fail = false;
    expect(bs.totalBytes).toBe(200_000);
    expect(await readAll(bs)).toEqual(data);
    await closeNode(bs);
    const again = await st.openProtocol('q.img', { readOnly: true });
    expect(again.totalBytes).toBe(200_000);
    expect(await readAll(again)).toEqual(data);
    await st.close();
  });
});

describe('blob', () => {
  it('a dropped File is read-only: writes are EROFS naming the image, reads still work', async () => {
    const st = new BlobStorage();
    const data = seededBytes(3000, 5);
    const name = st.add(new File([data], 'disk.img'));
    expect(name).toBe('disk.img');
    const img = await openImage(st, 'disk.img', { format: 'raw' });
    const e = await failure(bdrvPwrite(img, 0, 1, new Uint8Array(1)));
    expect(e.code).toBe('EROFS');
    expect(e.message).toMatch(/^disk\.img: write at 0x0 refused: read-only/);
    const t = await failure(bdrvTruncate(img.file!.node, 10, true));
    expect(t.code).toBe('EROFS');
    expect(await readAll(img)).toEqual(data);
    await closeNode(img);
  });

  it('a backing file named by a path the user did not give resolves to the dropped file of that name', () => {
    const st = new BlobStorage();
    st.add(new File([new Uint8Array(1)], 'top.qcow2'));
    st.add(new File([new Uint8Array(1)], 'base.qcow2'));
    expect(st.resolve('top.qcow2', '/home/me/images/base.qcow2')).toBe('base.qcow2');
    expect(st.resolve('top.qcow2', 'base.qcow2')).toBe('base.qcow2');
    expect(st.resolve('top.qcow2', 'other.qcow2')).toBe('other.qcow2');
    expect(() => st.resolve('top.qcow2', 'https://example.org/base.qcow2')).toThrow(/top\.qcow2: refusing.*URL/);
  });

  it('writes through a FileSystemFileHandle with permission: read back, commit on flush, visible in the file', async () => {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle('blocktab-tests', { create: true });
    const fh = await dir.getFileHandle(`handle-${run}.img`, { create: true });
    const w0 = await fh.createWritable();
    const base = seededBytes(100_000, 6);
    await w0.write(base as Uint8Array<ArrayBuffer>);
    await w0.close();
    const st = new BlobStorage();
    st.add(fh, 'h.img');
    const bs = await st.openProtocol('h.img', { readOnly: false });
    const patch = seededBytes(5000, 7);
    await bdrvPwrite(bs, 99_000, patch.length, patch); // grows the file
    const want = new Uint8Array(104_000);
    want.set(base);
    want.set(patch, 99_000);
    expect(await readAll(bs)).toEqual(want); // a read after a write sees it
    await bdrvTruncate(bs, 101_000, true);
    await bdrvFlush(bs);
    const file = new Uint8Array(await (await fh.getFile()).arrayBuffer());
    expect(file).toEqual(want.subarray(0, 101_000));
    await closeNode(bs);
    await dir.removeEntry(`handle-${run}.img`);
  });

  it('a handle without write permission cannot be opened for writing (EACCES)', async () => {
    const fake = {
      kind: 'file',
      name: 'nope.img',
      queryPermission: async () => 'prompt',
      getFile: async () => new File([new Uint8Array(10)], 'nope.img'),
    } as unknown as FileSystemFileHandle;
    const st = new BlobStorage();
    st.add(fake, 'nope.img');
    const e = await failure(st.openProtocol('nope.img', { readOnly: false }));
    expect(e.code).toBe('EACCES');
    expect(e.message).toMatch(/nope\.img: cannot open for writing: the user has not granted write permission/);
    const ro = await st.openProtocol('nope.img', { readOnly: true });
    expect(ro.totalBytes).toBe(10);
  });
});

describe('http in the browser (CORS test server)', () => {
  const base = () => inject('storageServer').baseUrl;

  it('ENOTSUP when the server ignores Range, ENOENT for 404, EIO with the status for 500', async () => {
    const st = new HttpStorage(base());
    const bs = await st.openProtocol(`norange/${CONFORMANCE_DIR}a.img`, { readOnly: true });
    const e = await failure(bdrvPread(bs, 0, 10, new Uint8Array(10)));
    expect(e.code).toBe('ENOTSUP');
    expect(e.message).toMatch(/norange\/conf\/a\.img: the server ignores Range requests/);
    const m = await failure(openImage(st, 'missing.img', { readOnly: true }));
    expect(m.code).toBe('ENOENT');
    expect(m.message).toMatch(/missing\.img.*404/);
    const x = await failure(st.openProtocol(`error/${CONFORMANCE_DIR}a.img`, { readOnly: true }));
    expect(x.code).toBe('EIO');
    expect(x.message).toMatch(/HTTP 500/);
  });

  it('learns the size from Content-Range when HEAD fails, and caches blocks', async () => {
    const st = new HttpStorage(base(), { blockSize: 4096 });
    const bs = await st.openProtocol(`nohead/${CONFORMANCE_DIR}a.img`, { readOnly: true });
    const want = conformanceFiles()['a.img']!;
    expect(bs.totalBytes).toBe(want.length);
    const r0 = httpRequestCount(bs);
    const out = new Uint8Array(100);
    await bdrvPread(bs, 10, 100, out); // block 0 came with the size probe
    expect(out).toEqual(want.subarray(10, 110));
    expect(httpRequestCount(bs)).toBe(r0);
    expect(await readAll(bs)).toEqual(want);
  });
});
