// OPFS needs a dedicated worker (sync access handles): the conformance suite,
// the OPFS-only checks and the interop images run in a small test worker
// (opfs-worker.ts) driven through comlink. Two workers check that a second
// writer of an image gets EBUSY across workers.
import { afterAll, describe, expect, inject, it } from 'vitest';
import * as Comlink from 'comlink';
import { driverInfo } from '../../src/browser.js';
import { OpfsStorage } from '../../src/protocols/opfs.js';
import { BlockError } from '../../src/block/errors.js';
import type { OpfsWorkerApi } from './opfs-worker.js';

function spawn(): { api: Comlink.Remote<OpfsWorkerApi>; worker: Worker } {
  const worker = new Worker(new URL('./opfs-worker.ts', import.meta.url), { type: 'module' });
  return { api: Comlink.wrap<OpfsWorkerApi>(worker), worker };
}

const a = spawn();
const b = spawn();
afterAll(() => {
  a.worker.terminate();
  b.worker.terminate();
});
const names = await a.api.names();
const hasQcow2 = driverInfo('qcow2') !== undefined;

describe('opfs (in a dedicated worker)', () => {
  for (const name of names) {
    const needsQcow2 = name.startsWith('opfs: interop') && name.includes('qcow2');
    it.runIf(!needsQcow2 || hasQcow2)(name, () => a.api.run(name, inject('storageServer')));
  }

  it('opfs: a writer in one worker makes the image EBUSY "image in use" for another worker', async () => {
    const dir = `cross-${Date.now().toString(36)}`;
    await a.api.hold(dir, 'shared.img');
    try {
      expect(await b.api.tryOpen(dir, 'shared.img')).toMatch(/^EBUSY shared\.img: .*image in use/);
    } finally {
      await a.api.release();
    }
    expect(await b.api.tryOpen(dir, 'shared.img')).toBe('ok');
  });
});

it('opfs in a window is ENOTSUP, naming the image and the need for a worker', async () => {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle('blocktab-tests', { create: true });
  await dir.getFileHandle('window.img', { create: true });
  const st = new OpfsStorage(dir);
  const e = await st.openProtocol('window.img', { readOnly: true }).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(BlockError);
  expect((e as BlockError).code).toBe('ENOTSUP');
  expect((e as BlockError).message).toMatch(/window\.img: OPFS images need a dedicated worker/);
});
