/**
 * The dedicated worker that runs blocktab's engine for a page. It owns the
 * browser storages — OPFS (its synchronous access handles exist only in
 * workers), IndexedDB, HTTP, files the page hands over, memory — loads the
 * wasm kernels, and exposes the worker API (api.ts) with comlink. This is the
 * only module that calls comlink's `expose`.
 *
 * Storage names (the `driver` of protocol nodes in blockdev-add):
 *   opfs    the origin private file system (when the browser has it)
 *   idb     IndexedDB (database "blocktab")
 *   local   opfs, or idb where OPFS is missing: the app's persistent default
 *   http    images on web servers, by URL
 *   blob    files the page passed with addFile (read-only Files, or writable handles)
 *   memory  scratch images that live as long as the worker
 *   remote  local (above) and http together: overlays kept locally over web
 *           images; a local image reaches only the origins the app opened
 *           an overlay for (openRemoteOverlay), see browser-composite.ts
 */
import * as Comlink from 'comlink';
import '../browser.js';
import { Engine } from '../engine/engine.js';
import { closeNode, type Storage } from '../block/open.js';
import { BlockError } from '../block/errors.js';
import { OpfsStorage } from '../protocols/opfs.js';
import { IdbStorage } from '../protocols/idb.js';
import { HttpStorage } from '../protocols/http.js';
import { BlobStorage } from '../protocols/blob.js';
import { MemoryStorage } from '../protocols/memory.js';
import { CompositeStorage } from '../protocols/browser-composite.js';
import { initWasm } from '../runtime.js';
import { createWorkerApi, type StoredFile } from './api.js';
import { installDeflatePool } from '../codecs/deflate-pool.js';
import { createBrowserDeflatePool } from '../codecs/deflate-pool-browser.js';

// Compressed writes (convert -c) compress in Web Workers beside this one; they start on the first such write.
installDeflatePool(createBrowserDeflatePool());

/**
 * The wasm buffer arena's size here: bounce and convert buffers are a few MiB
 * each, so 64 MiB holds many requests in flight without reserving the
 * default 256 MiB of address space in every tab.
 */
const WORKER_ARENA_BYTES = 64 * 1024 * 1024;

const hasOpfs = typeof navigator !== 'undefined' && typeof navigator.storage?.getDirectory === 'function';
const idb = new IdbStorage('blocktab');
const blob = new BlobStorage();
const http = new HttpStorage();
const storages: Record<string, Storage> = {
  idb,
  http,
  blob,
  memory: new MemoryStorage(),
};
if (hasOpfs) storages.opfs = new OpfsStorage();
storages.local = storages.opfs ?? idb;
/** Origins whose images local overlays may name as backing files (grows as the app opens overlays). */
const remoteOrigins: string[] = [];
storages.remote = new CompositeStorage(storages.local, http, { allowRemoteBacking: remoteOrigins });
const allowOrigin = (origin: string) => void (remoteOrigins.includes(origin) || remoteOrigins.push(origin));

const engine = new Engine({ storages, warn: (m) => console.warn(m) });

const ready = initWasm({ arenaBytes: WORKER_ARENA_BYTES }).then(
  () => ({ wasm: true }),
  (e: unknown) => {
    // Everything has a JS fallback; a missing module only costs speed.
    console.warn(`blocktab: wasm kernels not loaded, using the JS fallbacks: ${e instanceof Error ? e.message : String(e)}`);
    return { wasm: false };
  },
);

/** Every file below an OPFS directory, with slash-separated names. */
async function listOpfs(dir: FileSystemDirectoryHandle, prefix = ''): Promise<StoredFile[]> {
  const out: StoredFile[] = [];
  // `values()` is missing from TypeScript's DOM typings but present in every browser with OPFS.
  for await (const h of (dir as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
    // Dot-names are the app's scratch (.blocktab-export: exports waiting to be downloaded), not images.
    if (h.name.startsWith('.')) continue;
    if (h.kind === 'directory') out.push(...(await listOpfs(h as FileSystemDirectoryHandle, `${prefix}${h.name}/`)));
    else out.push({ name: prefix + h.name, size: (await (h as FileSystemFileHandle).getFile()).size });
  }
  return out;
}

async function listFiles(storage: string): Promise<StoredFile[]> {
  const s = storages[storage];
  if (s instanceof OpfsStorage) return listOpfs(await navigator.storage.getDirectory());
  if (s instanceof IdbStorage) {
    const out: StoredFile[] = [];
    for (const name of await s.list()) {
      const bs = await s.openProtocol(name, { readOnly: true });
      out.push({ name, size: bs.totalBytes });
      await closeNode(bs);
    }
    return out;
  }
  throw new BlockError('ENOTSUP', `the ${storage} storage has no list of files`);
}

Comlink.expose(createWorkerApi(engine, { ready, addFile: (source, name) => blob.add(source, name), listFiles, remote: { storage: 'remote', allowOrigin } }));
