/**
 * Browser entry: the library plus the browser storages (OPFS, IndexedDB,
 * user-supplied files, HTTP). Kept out of src/index.ts so Node never loads
 * code that touches browser APIs. Importing it registers the drivers.
 */
export * from './index.js';
export { OpfsStorage, opfsDriver, type OpfsOptions, type SyncAccessHandle } from './protocols/opfs.js';
export { IdbStorage, idbDriver, IDB_DEFAULT_CHUNK_SIZE, type IdbOptions } from './protocols/idb.js';
export { BlobStorage, blobDriver } from './protocols/blob.js';
export { HttpStorage, httpDriver, httpRequestCount, httpStats, type HttpOptions, type HttpBlockStore, type HttpStats } from './protocols/http.js';
export { OpfsBlockStore, type OpfsBlockStoreOptions } from './protocols/http-store-opfs.js';
export { CompositeStorage, type CompositeOptions } from './protocols/browser-composite.js';
export { requestPersistence } from './protocols/browser-persist.js';
