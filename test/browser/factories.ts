// Storage factories for the page-side suites (conformance and interop).
import { inject } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { IdbStorage } from '../../src/protocols/idb.js';
import { BlobStorage } from '../../src/protocols/blob.js';
import { HttpStorage } from '../../src/protocols/http.js';
import type { Storage } from '../../src/block/open.js';
import { storeFiles, type StorageFactory } from './conformance.js';
import { CONFORMANCE_DIR } from './fixtures.js';

const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
let n = 0;

export const memoryFactory: StorageFactory = {
  name: 'memory',
  writable: true,
  namespaced: false,
  make: (files) => storeFiles(new MemoryStorage(), files),
};

export const idbFactory: StorageFactory = {
  name: 'idb',
  writable: true,
  make: (files) => storeFiles(new IdbStorage(`blocktab-test-${run}-${++n}`), files),
};

export const blobFactory: StorageFactory = {
  name: 'blob',
  writable: false,
  async make(files): Promise<Storage> {
    const st = new BlobStorage();
    for (const [name, bytes] of Object.entries(files)) st.add(new Blob([bytes as Uint8Array<ArrayBuffer>]), name);
    return st;
  },
};

export const httpFactory: StorageFactory = {
  name: 'http',
  writable: false,
  // The global setup serves the conformance files; `files` is that same set.
  make: async () => new HttpStorage(inject('storageServer').baseUrl + CONFORMANCE_DIR, { blockSize: 4096, cacheBytes: 256 * 1024 }),
};
