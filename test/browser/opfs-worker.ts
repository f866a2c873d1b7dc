/**
 * A minimal dedicated worker for the OPFS tests (sync access handles exist
 * only in workers), driven from the page through comlink. It runs the
 * conformance cases with an OPFS factory, plus the OPFS-only checks. Each
 * case gets its own directory under a per-worker root, so reruns and other
 * workers never collide.
 */
import * as Comlink from 'comlink';
import '../../src/browser.js';
import { OpfsStorage } from '../../src/protocols/opfs.js';
import { IdbStorage } from '../../src/protocols/idb.js';
import { closeNode } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { BlockError } from '../../src/block/errors.js';
import type { Storage } from '../../src/block/open.js';
import { storageConformance, storeFiles, type StorageFactory } from './conformance.js';
import { opfsChecks } from './opfs-checks.js';
import { interopChecks } from './interop-checks.js';

let counter = 0;
const runId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/** A fresh directory in OPFS for one case. */
async function freshDir(): Promise<FileSystemDirectoryHandle> {
  const root = await navigator.storage.getDirectory();
  const top = await root.getDirectoryHandle('blocktab-tests', { create: true });
  return top.getDirectoryHandle(`${runId}-${++counter}`, { create: true });
}

const factory: StorageFactory = {
  name: 'opfs',
  writable: true,
  make: async (files): Promise<Storage> => storeFiles(new OpfsStorage(await freshDir()), files),
};

let dbCounter = 0;
const idbFactory: StorageFactory = {
  name: 'idb',
  writable: true,
  make: async (files): Promise<Storage> => storeFiles(new IdbStorage(`blocktab-worker-${runId}-${++dbCounter}`), files),
};

type AnyCase = { name: string; run(arg?: any): Promise<void> };
const prefixed = (p: string, cs: AnyCase[]): AnyCase[] => cs.map((c) => ({ name: `${p}: ${c.name}`, run: c.run }));
const cases: AnyCase[] = [
  ...prefixed('opfs', storageConformance(factory)),
  ...opfsChecks(freshDir),
  ...prefixed('opfs', interopChecks(factory)),
  ...prefixed('idb in a worker', storageConformance(idbFactory)),
];

/** Shared directory for the cross-worker checks (both workers name it). */
async function sharedStorage(dirName: string): Promise<OpfsStorage> {
  const root = await navigator.storage.getDirectory();
  const top = await root.getDirectoryHandle('blocktab-tests', { create: true });
  return new OpfsStorage(await top.getDirectoryHandle(dirName, { create: true }));
}
let held: BlockNode | null = null;

const api = {
  names: () => cases.map((c) => c.name),
  async run(name: string, arg?: unknown): Promise<void> {
    const c = cases.find((x) => x.name === name);
    if (!c) throw new Error(`no such case: ${name}`);
    await c.run(arg);
  },
  /** Creates `file` in the shared directory and keeps it open read-write until release(). */
  async hold(dirName: string, file: string): Promise<void> {
    const st = await sharedStorage(dirName);
    await st.createFile(file);
    held = await st.openProtocol(file, { readOnly: false });
  },
  async release(): Promise<void> {
    if (held) await closeNode(held);
    held = null;
  },
  /** Tries to open `file` read-write; returns the error's code and message, or 'ok' (and closes it). */
  async tryOpen(dirName: string, file: string): Promise<string> {
    const st = await sharedStorage(dirName);
    try {
      await closeNode(await st.openProtocol(file, { readOnly: false }));
      return 'ok';
    } catch (e) {
      return e instanceof BlockError ? `${e.code} ${e.message}` : `not a BlockError: ${String(e)}`;
    }
  },
};

export type OpfsWorkerApi = typeof api;
Comlink.expose(api);
