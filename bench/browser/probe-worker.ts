/**
 * The engine worker's API as src/worker/engine-worker.ts exposes it (OPFS
 * only), plus probes that split a small read's round trip: the same comlink
 * call shape doing no engine work, or no transfer. Used by the profile
 * (`node bench/browser.bench.mjs --profile`), not by the figures.
 */
import * as Comlink from 'comlink';
import '../../src/browser.js';
import { Engine } from '../../src/engine/engine.js';
import { OpfsStorage } from '../../src/protocols/opfs.js';
import { initWasm } from '../../src/runtime.js';
import { createWorkerApi } from '../../src/worker/api.js';

const engine = new Engine({ storages: { opfs: new OpfsStorage() } });
const ready = initWasm({ arenaBytes: 64 * 1024 * 1024 }).then(() => ({ wasm: true }));
const api = createWorkerApi(engine, { ready });
const probes = {
  ...api,
  /** comlink + a fresh transferred buffer, no engine. */
  async freshBuffer(_name: string, _offset: number, bytes: number): Promise<Uint8Array> {
    const b = new Uint8Array(bytes);
    return Comlink.transfer(b, [b.buffer]);
  },
  /** comlink + a number, three arguments. */
  async three(_name: string, _offset: number, bytes: number): Promise<number> {
    return bytes;
  },
  /** The engine's read, its buffer copied by structured clone instead of transferred. */
  async readCloned(name: string, offset: number, bytes: number): Promise<Uint8Array> {
    return engine.read(name, offset, bytes);
  },
};
export type Probes = typeof probes;
Comlink.expose(probes);
