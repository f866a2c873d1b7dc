/**
 * An engine worker for the fault tests: the same worker API (createWorkerApi)
 * over an Engine whose OPFS storage wraps every access handle, so the page can
 * set a quota: a write or truncate that would grow a file past it throws
 * QuotaExceededError before changing anything, as Chromium's quota check does.
 */
import * as Comlink from 'comlink';
import '../../src/browser.js';
import { Engine } from '../../src/engine/engine.js';
import { OpfsStorage, type SyncAccessHandle } from '../../src/protocols/opfs.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createWorkerApi } from '../../src/worker/api.js';

/** Largest length any file may reach; Infinity when no quota is set. */
let quota = Infinity;
let refused = 0;

const over = () => {
  refused++;
  return new DOMException('The quota has been exceeded.', 'QuotaExceededError');
};

const wrapHandle = (h: SyncAccessHandle): SyncAccessHandle => ({
  read: (b, o) => h.read(b, o),
  write: (b, o) => {
    if ((o?.at ?? 0) + b.byteLength > Math.max(quota, h.getSize())) throw over();
    return h.write(b, o);
  },
  truncate: (n) => {
    if (n > Math.max(quota, h.getSize())) throw over();
    h.truncate(n);
  },
  getSize: () => h.getSize(),
  flush: () => h.flush(),
  close: () => h.close(),
});

const engine = new Engine({ storages: { opfs: new OpfsStorage(undefined, { wrapHandle }), memory: new MemoryStorage() } });

const api = {
  ...createWorkerApi(engine),
  /** Sets the quota (largest file length in bytes; null lifts it); returns how many requests it refused so far. */
  setQuota(bytes: number | null): number {
    quota = bytes ?? Infinity;
    return refused;
  },
};

export type FaultWorkerApi = typeof api;
Comlink.expose(api);
