/**
 * The `bochs` format driver (read-only): Bochs "growing" redolog images, as
 * QEMU's block/bochs.c reads them (header.ts has the layout).
 *
 * Open applies QEMU's limits (at most 0x100000 catalog entries, extent a
 * power of two from 512 bytes to 8 MiB, a catalog large enough for the disk)
 * and a few of its own so that no answer is silently wrong: the catalog and
 * every allocated extent's bitmap lie inside the file, no two catalog entries
 * share an extent, and the bitmap covers every sector of an extent. Reads
 * fetch one extent's bitmap slice per request and coalesce present sectors
 * into one read each run; absent extents and sectors read as zeros.
 * QEMU has no block-status callback for bochs, so every range is "data".
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread } from '../../block/io.js';
import { BDRV_BLOCK_DATA, zeroRunByUnit } from '../../block/status.js';
import { requireReadOnly } from '../read-only.js';
import {
  bitmapHas,
  BOCHS_HEADER_SIZE,
  BOCHS_MAX_CATALOG,
  BOCHS_MAX_EXTENT,
  BOCHS_NOT_ALLOCATED,
  bochsHeaderStruct,
  isBochsGrowing,
  parseBochsHeader,
  parseCatalog,
} from './header.js';
import { bochsProbe } from './probe.js';

const SECTOR = 512;

interface BochsState {
  catalog: Uint32Array;
  dataOffset: number;
  bitmapBlocks: number;
  extentBlocks: number;
  extentSize: number;
}

/** QEMU's `1 + (x - 1) / 512` on 32-bit unsigned values. */
function blocksOf(bytes: number): number {
  return 1 + Math.floor(((bytes - 1) >>> 0) / SECTOR);
}

function extentStart(s: BochsState, entry: number): number {
  return s.dataOffset + SECTOR * entry * (s.extentBlocks + s.bitmapBlocks);
}

export const bochsDriver: BlockDriver = {
  name: 'bochs',
  kind: 'format',

  probe: bochsProbe,

  async open(bs) {
    requireReadOnly(bs, 'bochs');
    const image = bs.filename;
    const file = bs.file!.node;
    const fileSize = file.totalBytes;
    if (fileSize < BOCHS_HEADER_SIZE) throw new BlockError('EINVAL', `${image}: Image not in Bochs format (the file is shorter than the ${BOCHS_HEADER_SIZE}-byte header)`, {
        qemuMessage: 'Image not in Bochs format',
      });
    const hbuf = new Uint8Array(BOCHS_HEADER_SIZE);
    await bdrvPread(file, 0, hbuf.length, hbuf);
    const h = parseBochsHeader(hbuf);
    if (!isBochsGrowing(h)) throw new BlockError('EINVAL', `${image}: Image not in Bochs format (header at 0x0)`, { qemuMessage: 'Image not in Bochs format' });
    const st = bochsHeaderStruct(h.version);
    const at = (f: 'catalog' | 'bitmap' | 'extent' | 'header' | 'disk') => hex(st.offsetOf(f));

    // QEMU's order and texts (qemuMessage); ours name the field and its offset.
    const totalSectors = Math.floor(h.disk / SECTOR);
    if (h.catalog > BOCHS_MAX_CATALOG) {
      throw new BlockError('EFBIG', `${image}: bochs header: catalog size ${h.catalog} at ${at('catalog')} is too large (at most ${BOCHS_MAX_CATALOG} entries)`, {
        qemuMessage: 'Catalog size is too large',
      });
    }
    if (h.extent < SECTOR) {
      throw new BlockError('EINVAL', `${image}: bochs header: extent size ${h.extent} at ${at('extent')} must be at least 512`, {
        qemuMessage: 'Extent size must be at least 512',
      });
    }
    if (h.extent & (h.extent - 1)) {
      throw new BlockError('EINVAL', `${image}: bochs header: extent size ${h.extent} at ${at('extent')} is not a power of two`, {
        qemuMessage: `Extent size ${h.extent} is not a power of two`,
      });
    }
    if (h.extent > BOCHS_MAX_EXTENT) {
      throw new BlockError('EINVAL', `${image}: bochs header: extent size ${h.extent} at ${at('extent')} is too large`, {
        qemuMessage: `Extent size ${h.extent} is too large`,
      });
    }
    if (h.catalog < Math.ceil(totalSectors / (h.extent / SECTOR))) {
      throw new BlockError('EINVAL', `${image}: bochs header: catalog size ${h.catalog} at ${at('catalog')} is too small for this disk size (${h.disk} bytes)`, {
        qemuMessage: 'Catalog size is too small for this disk size',
      });
    }
    // Unreachable after the catalog check (1M entries of 8 MiB extents stay far below 2^53), kept as the bound JS numbers need.
    if (totalSectors * SECTOR > Number.MAX_SAFE_INTEGER) {
      throw new BlockError('EFBIG', `${image}: bochs header: disk size ${h.disk} at ${at('disk')} is too large`);
    }
    const sectorsPerExtent = h.extent / SECTOR;
    if (h.bitmap * 8 < sectorsPerExtent || h.bitmap > h.extent) {
      throw new BlockError('EINVAL', `${image}: bochs header: bitmap size ${h.bitmap} at ${at('bitmap')} does not fit extents of ${h.extent} bytes`);
    }
    if (h.header + h.catalog * 4 > fileSize) {
      throw new BlockError('ECORRUPT', `${image}: bochs catalog at ${hex(h.header)} (${h.catalog} entries) runs past the end of the file (${fileSize} bytes)`);
    }
    const cbuf = new Uint8Array(h.catalog * 4);
    await bdrvPread(file, h.header, cbuf.length, cbuf);
    const catalog = parseCatalog(cbuf, h.catalog);
    const s: BochsState = {
      catalog,
      dataOffset: h.header + h.catalog * 4,
      bitmapBlocks: blocksOf(h.bitmap),
      extentBlocks: blocksOf(h.extent),
      extentSize: h.extent,
    };
    const owner = new Map<number, number>();
    for (let i = 0; i < catalog.length; i++) {
      const e = catalog[i]!;
      if (e === BOCHS_NOT_ALLOCATED) continue;
      const where = hex(h.header + i * 4);
      const start = extentStart(s, e);
      if (start + s.bitmapBlocks * SECTOR > fileSize) {
        throw new BlockError('ECORRUPT', `${image}: bochs catalog entry ${i} at ${where}: extent ${e} at ${hex(start)} is past the end of the file (${fileSize} bytes)`);
      }
      const other = owner.get(e);
      if (other !== undefined) {
        throw new BlockError('ECORRUPT', `${image}: bochs catalog entry ${i} at ${where}: extent ${e} is already used by entry ${other}`);
      }
      owner.set(e, i);
    }
    bs.opaque = s;
    bs.totalBytes = totalSectors * SECTOR;
    bs.limits = { ...bs.limits, requestAlignment: SECTOR };
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<BochsState>();
    const file = bs.file!.node;
    let done = 0;
    while (done < bytes) {
      const pos = offset + done;
      const index = Math.floor(pos / s.extentSize);
      const first = (pos % s.extentSize) / SECTOR;
      const count = Math.min((bytes - done) / SECTOR, s.extentSize / SECTOR - first);
      const entry = s.catalog[index]!;
      const out = buf.subarray(done, done + count * SECTOR);
      if (entry === BOCHS_NOT_ALLOCATED) {
        out.fill(0);
      } else {
        const start = extentStart(s, entry);
        const byte0 = first >> 3;
        const bitmap = new Uint8Array(((first + count - 1) >> 3) - byte0 + 1);
        await bdrvPread(file, start + byte0, bitmap.length, bitmap);
        const dataStart = start + s.bitmapBlocks * SECTOR;
        for (let i = 0; i < count; ) {
          const present = bitmapHas(bitmap, first + i - byte0 * 8);
          let j = i + 1;
          while (j < count && bitmapHas(bitmap, first + j - byte0 * 8) === present) j++;
          const run = out.subarray(i * SECTOR, j * SECTOR);
          if (!present) {
            run.fill(0);
          } else {
            const at = dataStart + (first + i) * SECTOR;
            if (at + run.length > file.totalBytes) {
              throw new BlockError('ECORRUPT', `${bs.filename}: bochs extent ${entry} (catalog entry ${index}): sector data at ${hex(at)} is past the end of the file`);
            }
            await bdrvPread(file, at, run.length, run);
          }
          i = j;
        }
      }
      done += count * SECTOR;
    }
  },

  async blockStatus(_bs, _wantZero, _offset, bytes) {
    // QEMU has no block-status callback for bochs: the generic answer is "data".
    return { status: BDRV_BLOCK_DATA, pnum: bytes };
  },

  /** Unallocated extents read as zeros: convert need not read them (block status above still says data, as QEMU's). */
  async readsAsZeros(bs, offset, bytes) {
    const s = bs.state<BochsState>();
    return zeroRunByUnit(offset, bytes, s.extentSize, (index) => s.catalog[index] === BOCHS_NOT_ALLOCATED);
  },

  async getAllocatedFileSize(bs) {
    const file = bs.file!.node;
    return file.driver.getAllocatedFileSize?.(file);
  },
};


