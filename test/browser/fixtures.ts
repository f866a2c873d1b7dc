/**
 * Data shared by the Node-side global setup and the browser tests
 * (environment-neutral: no node:*, no DOM). The read-only conformance cases
 * read these files from every storage: the setup writes them into the served
 * directory, the page rebuilds the same bytes to compare.
 */

import { seededBytes } from '../helpers/random.js';

export { seededBytes };

/** Files of the read-only conformance cases, by name (sizes chosen not to be multiples of any block size). */
export function conformanceFiles(): Record<string, Uint8Array> {
  return {
    'a.img': seededBytes(300_001, 1),
    'dir/sub/b.img': seededBytes(70_000, 2),
    'empty.img': new Uint8Array(0),
  };
}

/** Where the global setup serves the conformance files (below the base URL). */
export const CONFORMANCE_DIR = 'conf/';

/** One interop image made by qemu-img, as the setup describes it to the page. */
export interface InteropImage {
  /** Path below the base URL ("chain/top.qcow2"). */
  name: string;
  format: 'raw' | 'qcow2' | 'dmg';
  /** Other files the image needs (its backing chain), in the same tree. */
  needs: string[];
  /** Virtual size and SHA-256 of `qemu-img convert -O raw`. */
  virtualSize: number;
  sha256: string;
}

export interface StorageServerInfo {
  baseUrl: string;
  images: InteropImage[];
  /** A qcow2 overlay whose backing file is an absolute http URL on the server, and its expected content. */
  remoteOverlay: InteropImage;
  /** A DMG with bzip2 (UDBZ) chunks, built from the specification; its hash is of the builder's disk bytes. */
  bzip2Dmg: InteropImage;
}

declare module 'vitest' {
  export interface ProvidedContext {
    storageServer: StorageServerInfo;
  }
}
