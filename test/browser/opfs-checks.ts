/**
 * OPFS-only behaviour, run inside the test worker: one writer per file
 * (EBUSY), shared read-only opens, quota failures (ENOSPC with the image left
 * as it was), removal of an open file.
 */
import { OpfsStorage, type SyncAccessHandle } from '../../src/protocols/opfs.js';
import { bdrvGetLength, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../src/block/io.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { commitImage } from '../../src/img/commit.js';
import { equal, rejects, sameBytes } from './assert.js';
import { seededBytes } from './fixtures.js';

export interface WorkerCase {
  name: string;
  run(arg?: unknown): Promise<void>;
}

function quota(): DOMException {
  return new DOMException('The quota has been exceeded.', 'QuotaExceededError');
}

export function opfsChecks(freshDir: () => Promise<FileSystemDirectoryHandle>): WorkerCase[] {
  return [
    {
      name: 'opfs: a second read-write open of an image is EBUSY "image in use"',
      async run() {
        const st = new OpfsStorage(await freshDir());
        await st.createFile('busy.img');
        const a = await st.openProtocol('busy.img', { readOnly: false });
        await rejects(st.openProtocol('busy.img', { readOnly: false }), 'EBUSY', /busy\.img.*image in use/, 'second writer');
        await rejects(st.openProtocol('busy.img', { readOnly: true }), 'EBUSY', /busy\.img.*image in use/, 'reader while a writer has it');
        await rejects(st.removeFile('busy.img'), 'EBUSY', /busy\.img/, 'remove while open');
        await closeNode(a);
        const b = await st.openProtocol('busy.img', { readOnly: false });
        await closeNode(b);
      },
    },
    {
      name: 'opfs: read-only opens share a file (one base under several overlays)',
      async run() {
        const st = new OpfsStorage(await freshDir());
        await st.createFile('base.img');
        const w = await st.openProtocol('base.img', { readOnly: false });
        const data = seededBytes(5000, 3);
        await bdrvPwrite(w, 0, data.length, data);
        await closeNode(w);
        const r1 = await st.openProtocol('base.img', { readOnly: true });
        const r2 = await st.openProtocol('base.img', { readOnly: true });
        for (const r of [r1, r2]) {
          const out = new Uint8Array(5000);
          await bdrvPread(r, 0, 5000, out);
          sameBytes(out, data, 'shared read-only');
        }
        await rejects(st.openProtocol('base.img', { readOnly: false }), 'EBUSY', /image in use/, 'writer while readers have it');
        await closeNode(r1);
        await closeNode(r2);
      },
    },
    {
      name: 'opfs: commit of an image file reopens its base read-write in place; a reader elsewhere refuses the upgrade',
      async run() {
        const st = new OpfsStorage(await freshDir());
        await createImage(st, await planCreate(st, { filename: 'base.qcow2', format: 'qcow2', size: 1 << 20 }));
        await createImage(st, await planCreate(st, { filename: 'top.qcow2', format: 'qcow2', size: 1 << 20, backingFile: 'base.qcow2', backingFormat: 'qcow2' }));
        const data = seededBytes(70000, 9);
        const top = await openImage(st, 'top.qcow2', { readOnly: false });
        await bdrvPwrite(top, 4096, data.length, data);
        await closeNode(top);
        // Someone else reading the base: the commit's upgrade to a writer is refused and nothing changes.
        const reader = await st.openProtocol('base.qcow2', { readOnly: true });
        await rejects(commitImage(st, { filename: 'top.qcow2' }), 'EBUSY', /Could not reopen 'base\.qcow2' read-write: .*Failed to get "write" lock/, 'commit while the base is read elsewhere');
        await closeNode(reader);
        await commitImage(st, { filename: 'top.qcow2' });
        const base = await openImage(st, 'base.qcow2', { readOnly: true });
        const out = new Uint8Array(data.length);
        await bdrvPread(base, 4096, data.length, out);
        sameBytes(out, data, 'committed data in the base');
        await closeNode(base);
        // Every lock went back: the base opens read-write again.
        await closeNode(await st.openProtocol('base.qcow2', { readOnly: false }));
      },
    },
    {
      name: 'opfs: QuotaExceededError on write/truncate is ENOSPC and the image reads as before',
      async run() {
        let failNext: 'write' | 'write-before' | 'truncate' | null = null;
        // Fault injection: a write that extends the file partly and then fails, as a quota check mid-write could.
        const wrap = (h: SyncAccessHandle): SyncAccessHandle => ({
          read: (b, o) => h.read(b, o),
          write: (b, o) => {
            if (failNext === 'write-before') {
              failNext = null;
              throw quota();
            }
            if (failNext === 'write') {
              failNext = null;
              h.write(new Uint8Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 2)), o);
              throw quota();
            }
            return h.write(b, o);
          },
          truncate: (n) => {
            if (failNext === 'truncate') {
              failNext = null;
              h.truncate(Math.floor(n / 2) + 1);
              throw quota();
            }
            h.truncate(n);
          },
          getSize: () => h.getSize(),
          flush: () => h.flush(),
          close: () => h.close(),
        });
        const st = new OpfsStorage(await freshDir(), { wrapHandle: wrap });
        await st.createFile('q.img');
        const bs = await st.openProtocol('q.img', { readOnly: false });
        const data = seededBytes(100_000, 9);
        await bdrvPwrite(bs, 0, data.length, data);
        // An append that extends the file partly, then fails: the length goes back.
        failNext = 'write';
        await rejects(bdrvPwrite(bs, 100_000, 50_000, seededBytes(50_000, 10)), 'ENOSPC', /q\.img: write of 50000 bytes at 0x186a0 failed.*quota/, 'append over quota');
        equal(await bdrvGetLength(bs), 100_000, 'length after failed append');
        // A write that grows the file, refused before it changes anything (how Chromium checks quota).
        failNext = 'write-before';
        await rejects(bdrvPwrite(bs, 90_000, 50_000, seededBytes(50_000, 11)), 'ENOSPC', /q\.img: write of 50000 bytes at 0x15f90 failed.*quota/, 'write over quota');
        equal(await bdrvGetLength(bs), 100_000, 'length after failed write');
        failNext = 'truncate';
        await rejects(bdrvTruncate(bs, 10_000_000, true), 'ENOSPC', /q\.img: truncate to 10000000 bytes failed.*quota/, 'truncate over quota');
        equal(await bdrvGetLength(bs), 100_000, 'length after failed truncate');
        const now = new Uint8Array(100_000);
        await bdrvPread(bs, 0, now.length, now);
        sameBytes(now, data, 'content after the failures');
        await closeNode(bs);
        // The file itself (not only our cached size) has its old length and content.
        const again = await st.openProtocol('q.img', { readOnly: false });
        equal(again.totalBytes, 100_000, 'on-disk length after the failures');
        const out = new Uint8Array(100_000);
        await bdrvPread(again, 0, out.length, out);
        sameBytes(out, data, 'content after reopen');
        // And it is still usable.
        await bdrvPwrite(again, 100_000, 10, seededBytes(10, 12));
        equal(await bdrvGetLength(again), 100_010, 'length after a good write');
        await closeNode(again);
      },
    },
  ];
}
