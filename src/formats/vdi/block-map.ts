/**
 * The VDI block map as the driver holds it. QEMU reads the whole map at open,
 * and the part of a map that runs past the end of the file reads as zeros
 * (entry 0, the first data block). A header may claim a 2 GiB map in a 1 KiB
 * file (iotest 084 does), so the entries that lie in the file are held in one
 * array and the ones past it read as 0 until written, in pages made on the
 * first write: memory follows the file, not the header.
 */
import { parseVdiBlockMap, serializeVdiBlockMap } from './header.js';

const PAGE_BITS = 16;
const PAGE_MASK = (1 << PAGE_BITS) - 1;

export class VdiBlockMap {
  private readonly pages = new Map<number, Uint32Array>();

  /** `stored`: the map's bytes that lie in the file; `length`: the entries the map has. */
  constructor(
    stored: Uint8Array,
    readonly length: number,
  ) {
    this.inFile = parseVdiBlockMap(stored, Math.min(length, stored.length >>> 2));
  }

  private readonly inFile: Uint32Array;

  /** Entry `i` (undefined past the map, like an array). */
  get(i: number): number | undefined {
    if (i < this.inFile.length) return this.inFile[i];
    if (i >= this.length) return undefined;
    return this.pages.get(i >>> PAGE_BITS)?.[i & PAGE_MASK] ?? 0;
  }

  set(i: number, entry: number): void {
    if (i < this.inFile.length) {
      this.inFile[i] = entry;
      return;
    }
    let page = this.pages.get(i >>> PAGE_BITS);
    if (!page) this.pages.set(i >>> PAGE_BITS, (page = new Uint32Array(1 << PAGE_BITS)));
    page[i & PAGE_MASK] = entry;
  }

  /** Entries [first, first + count) as stored on disk. */
  serialize(first: number, count: number): Uint8Array {
    const entries = new Uint32Array(count);
    for (let i = 0; i < count; i++) entries[i] = this.get(first + i)!;
    return serializeVdiBlockMap(entries, 0, count);
  }
}
