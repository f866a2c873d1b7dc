/**
 * The VMDK format driver (VMware "Virtual Disk Format 1.1"; QEMU's block/vmdk.c
 * is the behaviour we match).
 *
 * A VMDK image is either one sparse file (monolithicSparse, streamOptimized:
 * header, embedded descriptor, grain directory/tables, grains) or a text
 * descriptor naming extent files (monolithicFlat, twoGbMaxExtentSparse/Flat,
 * vmfs, vmfsSparse). Extent files are opened through the image's own storage,
 * so their names resolve inside the same namespace as backing files do (a
 * browser namespace refuses names that climb out of it; the Node file
 * storage accepts what qemu-img accepts).
 *
 * The guest sees the extents end to end. Unallocated grains come from the
 * parent named by parentFileNameHint, provided the parent's CID still equals
 * our parentCID (QEMU refuses the read otherwise). Block status follows QEMU:
 * plain grains report their offset, flat extents ask their file (RECURSE),
 * compressed grains are data without an offset, zeroed grains are zero.
 *
 * Module map: sparse-header.ts (binary headers, markers), descriptor.ts
 * (descriptor text), extent.ts (extent model, grain lookup and reads).
 */
import { BlockError, CheckFailedError, wrapError } from '../../block/errors.js';
import { type BlockDriver, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite, readBacking } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { bdrvDirname, closeNode, openOwnedFile } from '../../block/open.js';
import { BDRV_BLOCK_COMPRESSED, BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RECURSE, BDRV_BLOCK_ZERO } from '../../block/status.js';
import type { ImageInfoSpecific } from '../../block/info.js';
import { DESCRIPTOR_FILE_CREATE_TYPES, MAX_DESCRIPTOR_BYTES, parseDescriptor, type Descriptor } from './descriptor.js';
import { allocateGrain, writeCompressedGrain, flatExtent, grainRun, loadGrainTable, openSparseExtent, readCompressedGrain, readCompressedGrains, readData, setGrainTableEntry, type VmdkExtent } from './extent.js';
import { VMDK_GTE_ZEROED } from './sparse-header.js';
import { SECTOR_SIZE, VMDK3_MAGIC, VMDK4_MAGIC } from './sparse-header.js';
import { VMDK_CREATE_OPTS, vmdkCreateImage, vmdkOptionsFromValues } from './create-options.js';
import { vmdkProbe } from './probe.js';

/** Bytes of descriptor QEMU reads for CID, parentCID and parentFileNameHint. */
const DESC_SIZE = 20 * SECTOR_SIZE;

export interface VmdkState {
  extents: VmdkExtent[];
  /** Extent files this node opened itself (closed with it). */
  ownedFiles: BlockNode[];
  createType: string;
  cid: number;
  parentCid: number;
  /** Where the descriptor text lives in bs.file (0x200 for monolithic sparse files). */
  descOffset: number;
  /** Set once the parent's CID was found to match (QEMU's cid_checked). */
  cidChecked: boolean;
  /** Set once the first write gave the image a new CID (QEMU's cid_updated). */
  cidUpdated: boolean;
}

function decodeText(buf: Uint8Array): string {
  let s = '';
  for (let i = 0; i < buf.length; i++) s += String.fromCharCode(buf[i]!);
  return s;
}

async function readText(file: BlockNode, offset: number, max: number): Promise<string> {
  const n = Math.max(0, Math.min(max, file.totalBytes - offset));
  const buf = new Uint8Array(n);
  if (n) await bdrvPread(file, offset, n, buf);
  return decodeText(buf);
}

/** Opens the extents a descriptor file lists, in order, with QEMU's rules. */
async function openDescriptorExtents(bs: BlockNode, desc: Descriptor, owned: BlockNode[]): Promise<VmdkExtent[]> {
  const extents: VmdkExtent[] = [];
  for (const line of desc.extents) {
    if (line.type === 'SESPARSE') throw new BlockError('ENOTSUP', `${bs.filename}: seSparse extents are not supported: ${line.line}`);
    if (!line.fileName.startsWith('/')) {
      // A relative extent name needs the descriptor's directory, which a quorum below does not have.
      try {
        bdrvDirname(bs.file!.node);
      } catch (e) {
        if (e instanceof BlockError) throw wrapError(e, `Cannot use relative paths with VMDK descriptor file '${bs.file!.node.filename}': `);
        throw e;
      }
    }
    const node = await openOwnedFile(bs, line.fileName);
    owned.push(node);
    if (line.type === 'FLAT' || line.type === 'VMFS') {
      extents.push(flatExtent(node, line.sectors, line.offset * SECTOR_SIZE, line.type));
      continue;
    }
    if (node.totalBytes < 4) throw new BlockError('EINVAL', `${node.filename}: File is too small, not a valid image`);
    const head = new Uint8Array(Math.min(SECTOR_SIZE, node.totalBytes));
    await bdrvPread(node, 0, head.length, head);
    const r = await openSparseExtent(node, head, line.type, bs.readOnly);
    if (!r.extent) throw new BlockError('ENOTSUP', `${node.filename}: a sparse extent that points to another descriptor is not supported`);
    extents.push(r.extent);
  }
  return extents;
}

/**
 * Two extents must not share bytes of one file: flat ranges may not overlap,
 * and a sparse extent file belongs to one extent only.
 */
function checkOverlaps(bs: BlockNode, extents: VmdkExtent[], desc: Descriptor | null): void {
  const byFile = new Map<string, { start: number; end: number; line: string }[]>();
  extents.forEach((e, i) => {
    const line = desc?.extents[i]?.line ?? e.file.filename;
    const range = e.flat ? { start: e.flatStartOffset, end: e.flatStartOffset + e.sectors * SECTOR_SIZE, line } : { start: 0, end: Infinity, line };
    const list = byFile.get(e.file.filename) ?? [];
    for (const r of list) {
      if (range.start < r.end && r.start < range.end) {
        throw new BlockError('EINVAL', `${bs.filename}: overlapping extents in '${e.file.filename}': '${r.line}' and '${line}'`);
      }
    }
    list.push(range);
    byFile.set(e.file.filename, list);
  });
}

function findExtent(s: VmdkState, offset: number): VmdkExtent {
  const sector = Math.floor(offset / SECTOR_SIZE);
  let lo = 0;
  let hi = s.extents.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sector < s.extents[mid]!.endSector) hi = mid;
    else lo = mid + 1;
  }
  const e = s.extents[lo];
  if (!e || sector >= e.endSector) throw new BlockError('EIO', `vmdk: no extent holds sector ${sector}`);
  return e;
}

/** QEMU's vmdk_is_cid_valid: the parent must be a VMDK whose CID is our parentCID. */
function checkParentCid(bs: BlockNode, s: VmdkState): void {
  if (s.cidChecked) return;
  const parent = bs.backing?.node;
  if (!parent) return;
  if (parent.driver !== vmdkDriver) {
    throw new BlockError('EINVAL', `${bs.filename}: the parent '${parent.filename}' is not a VMDK image, so parentCID ${s.parentCid.toString(16)} cannot match`);
  }
  const pc = parent.state<VmdkState>().cid;
  if (pc !== s.parentCid) {
    throw new BlockError('EINVAL', `${bs.filename}: parentCID ${s.parentCid.toString(16).padStart(8, '0')} does not match the CID ${pc.toString(16).padStart(8, '0')} of '${parent.filename}'`);
  }
  s.cidChecked = true;
}

export const vmdkDriver: BlockDriver = {
  name: 'vmdk',
  kind: 'format',
  // As QEMU's vmdk_co_pwritev_compressed: a compressed write is a plain write, which a streamOptimized extent compresses.
  supportsCompressedWrites: true,
  supportsBacking: true,
  createOptions: VMDK_CREATE_OPTS,
  create: vmdkCreateImage,
  checkCreate: (req) => void vmdkOptionsFromValues(req.values),

  probe: vmdkProbe,

  async open(bs, _options) {
    const file = bs.file!.node;
    const image = bs.filename;
    if (file.totalBytes < 4) throw new BlockError('EINVAL', `${image}: File is too small, not a valid image`);
    const head = new Uint8Array(Math.min(SECTOR_SIZE, file.totalBytes));
    await bdrvPread(file, 0, head.length, head);
    const magic = new DataView(head.buffer).getUint32(0, false);
    const owned: BlockNode[] = [];
    try {
      let extents: VmdkExtent[];
      let createType: string;
      let descOffset: number;
      let desc: Descriptor | null = null;
      if (magic === VMDK3_MAGIC || magic === VMDK4_MAGIC) {
        const r = await openSparseExtent(file, head, '', bs.readOnly);
        if (r.extent) {
          extents = [r.extent];
          createType = r.extent.compressed ? 'streamOptimized' : 'monolithicSparse';
        } else {
          desc = parseDescriptor(await readText(file, r.descriptorAt!, MAX_DESCRIPTOR_BYTES), `${image}: descriptor at 0x${r.descriptorAt!.toString(16)}`);
          createType = checkCreateType(image, desc);
          extents = await openDescriptorExtents(bs, desc, owned);
        }
        descOffset = 0x200;
      } else {
        desc = parseDescriptor(await readText(file, 0, MAX_DESCRIPTOR_BYTES), `${image}: descriptor`);
        createType = checkCreateType(image, desc);
        extents = await openDescriptorExtents(bs, desc, owned);
        descOffset = 0;
      }
      if (extents.length === 0) throw new BlockError('EINVAL', `${image}: the VMDK descriptor lists no usable extent`);
      checkOverlaps(bs, extents, desc);
      let end = 0;
      for (const e of extents) {
        end += e.sectors;
        e.endSector = end;
      }
      if (!Number.isSafeInteger(end * SECTOR_SIZE)) throw new BlockError('EFBIG', `${image}: total size of ${end} sectors is too large`);

      // CID, parentCID and the parent's name come from the descriptor text, wherever it lives.
      const meta = parseDescriptor(await readText(file, descOffset, DESC_SIZE - 1), `${image}: descriptor at 0x${descOffset.toString(16)}`);
      if (meta.cid === undefined) throw new BlockError('EINVAL', `${image}: the descriptor at 0x${descOffset.toString(16)} has no CID`);
      if (meta.parentCid === undefined) throw new BlockError('EINVAL', `${image}: the descriptor at 0x${descOffset.toString(16)} has no parentCID`);
      const s: VmdkState = { extents, ownedFiles: owned, createType, cid: meta.cid, parentCid: meta.parentCid, descOffset, cidChecked: false, cidUpdated: false };
      bs.opaque = s;
      bs.totalBytes = end * SECTOR_SIZE;
      const grains = extents.filter((e) => !e.flat).map((e) => e.clusterSectors * SECTOR_SIZE);
      if (grains.length) bs.limits = { ...bs.limits, pwriteZeroesAlignment: Math.max(...grains) };
      if (meta.parentFileNameHint !== undefined) {
        bs.backingFile = meta.parentFileNameHint;
        bs.backingFormat = 'vmdk';
      }
    } catch (e) {
      for (const n of owned) await closeNode(n);
      throw e;
    }
  },

  async close(bs) {
    const s = bs.state<VmdkState>();
    for (const n of s.ownedFiles) await closeNode(n);
    s.ownedFiles = [];
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<VmdkState>();
    let done = 0;
    while (done < bytes) {
      const off = offset + done;
      const ext = findExtent(s, off);
      const extStart = (ext.endSector - ext.sectors) * SECTOR_SIZE;
      const n0 = Math.min(bytes - done, ext.endSector * SECTOR_SIZE - off);
      const run = await grainRun(ext, off - extStart, n0);
      let n = run.bytes;
      const out = buf.subarray(done, done + n);
      switch (run.kind) {
        case 'data':
          await readData(ext, run.host, n, out);
          break;
        case 'compressed': {
          if (run.inGrain === 0 && n === ext.clusterSectors * SECTOR_SIZE && ext.lastGrain?.host !== run.host) {
            // Whole grains: read together and inflated in place.
            n = await readCompressedGrains(ext, off - extStart, run.host, buf.subarray(done, done + n0));
            break;
          }
          const grain = await readCompressedGrain(ext, run.host);
          if (run.inGrain + n > grain.length) {
            throw new BlockError('EIO', `${ext.file.filename}: compressed grain at 0x${run.host.toString(16)} decompresses to ${grain.length} bytes, fewer than the ${run.inGrain + n} read`);
          }
          out.set(grain.subarray(run.inGrain, run.inGrain + n));
          break;
        }
        case 'zero':
          out.fill(0);
          break;
        case 'unallocated':
          if (bs.backing) {
            checkParentCid(bs, s);
            await readBacking(bs, off, n, out);
          } else {
            out.fill(0);
          }
          break;
      }
      done += n;
    }
  },

  async pwritev(bs, offset, bytes, buf) {
    const s = bs.state<VmdkState>();
    await updateCid(bs, s);
    let done = 0;
    while (done < bytes) {
      const off = offset + done;
      const ext = findExtent(s, off);
      const extStart = (ext.endSector - ext.sectors) * SECTOR_SIZE;
      const rel = off - extStart;
      const left = Math.min(bytes - done, ext.endSector * SECTOR_SIZE - off);
      if (ext.compressed) {
        // A grain is written once, compressed, as QEMU's: the part not written reads as before (zeros or the parent).
        const grainBytes = ext.clusterSectors * SECTOR_SIZE;
        const inGrain = rel % grainBytes;
        const n = Math.min(left, grainBytes - inGrain);
        const grainStart = rel - inGrain;
        const grain = new Uint8Array(grainBytes);
        if (bs.backing && (inGrain !== 0 || n < grainBytes)) {
          checkParentCid(bs, s);
          const guest = extStart + grainStart;
          await readBacking(bs, guest, Math.min(grainBytes, bs.totalBytes - guest), grain);
        }
        grain.set(buf.subarray(done, done + n), inGrain);
        await writeCompressedGrain(ext, grainStart, grain);
        done += n;
        continue;
      }
      if (ext.flat) {
        await bdrvDebugEvent(ext.file, 'write_aio');
        await bdrvPwrite(ext.file, ext.flatStartOffset + rel, left, buf.subarray(done, done + left));
        done += left;
        continue;
      }
      const grainBytes = ext.clusterSectors * SECTOR_SIZE;
      const inGrain = rel % grainBytes;
      const n = Math.min(left, grainBytes - inGrain);
      const data = buf.subarray(done, done + n);
      let fresh = false;
      const host = await allocateGrain(ext, rel, async (grainStart, grain, zeroed) => {
        fresh = true;
        const guest = extStart + grainStart;
        if (bs.backing && !zeroed) {
          checkParentCid(bs, s);
          await readBacking(bs, guest, Math.min(grainBytes, bs.totalBytes - guest), grain);
        }
        grain.set(data, inGrain);
      });
      if (!fresh) {
        await bdrvDebugEvent(ext.file, 'write_aio');
        await bdrvPwrite(ext.file, host + inGrain, n, data);
      }
      done += n;
    }
  },

  async pwriteZeroes(bs, offset, bytes) {
    // Zeroed grains (zeroed_grain=on) make whole grains read as zeros without data; anything else
    // is written as zeros by the core, as QEMU's vmdk_pwrite_zeroes answers ENOTSUP.
    const s = bs.state<VmdkState>();
    const plan: { ext: VmdkExtent; l1Index: number; l2Sector: number; l2Index: number }[] = [];
    for (let done = 0; done < bytes; ) {
      const off = offset + done;
      const ext = findExtent(s, off);
      const extStart = (ext.endSector - ext.sectors) * SECTOR_SIZE;
      const grainBytes = ext.clusterSectors * SECTOR_SIZE;
      const rel = off - extStart;
      const n = Math.min(grainBytes, ext.endSector * SECTOR_SIZE - off);
      if (ext.flat || ext.compressed || !ext.hasZeroGrain || rel % grainBytes !== 0 || bytes - done < n) {
        throw new BlockError('ENOTSUP', `${bs.filename}: cannot mark this range as zeroed grains`);
      }
      const sector = rel / SECTOR_SIZE;
      const l1Index = Math.floor(sector / ext.l1EntrySectors);
      const l2Sector = ext.l1Table[l1Index] ?? 0;
      if (!l2Sector) throw new BlockError('ENOTSUP', `${bs.filename}: no grain table for sector ${sector}`);
      plan.push({ ext, l1Index, l2Sector, l2Index: Math.floor(sector / ext.clusterSectors) % ext.l2Size });
      done += n;
    }
    await updateCid(bs, s);
    for (const p of plan) {
      await loadGrainTable(p.ext, p.l2Sector);
      await setGrainTableEntry(p.ext, p.l1Index, p.l2Sector, p.l2Index, VMDK_GTE_ZEROED);
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = bs.state<VmdkState>();
    const ext = findExtent(s, offset);
    const extStart = (ext.endSector - ext.sectors) * SECTOR_SIZE;
    const run = await grainRun(ext, offset - extStart, Math.min(bytes, ext.endSector * SECTOR_SIZE - offset));
    switch (run.kind) {
      case 'data':
        return {
          status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | (ext.flat ? BDRV_BLOCK_RECURSE : 0),
          pnum: run.bytes,
          map: run.host,
          file: ext.file,
        };
      case 'compressed':
        return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_COMPRESSED, pnum: run.bytes, file: ext.file };
      case 'zero':
        return { status: BDRV_BLOCK_ZERO, pnum: run.bytes };
      default:
        return { status: 0, pnum: run.bytes };
    }
  },

  /**
   * QEMU's vmdk_co_check: every grain that is allocated must start inside its
   * file. The first that does not stops the check (its line, then "Check
   * failed"); repairs are not supported.
   */
  async check(bs, fix, report) {
    if (fix.leaks || fix.errors) throw new BlockError('ENOTSUP', 'This image format does not support checks');
    const s = bs.state<VmdkState>();
    const fail = (line: string, cause: unknown): never => {
      report(line);
      throw new CheckFailedError('EINVAL', 'Invalid argument', { cause });
    };
    for (const ext of s.extents) {
      const start = (ext.endSector - ext.sectors) * SECTOR_SIZE;
      const step = ext.clusterSectors * SECTOR_SIZE;
      for (let rel = 0; rel < ext.sectors * SECTOR_SIZE; rel += step) {
        const sector = (start + rel) / SECTOR_SIZE;
        let run;
        try {
          run = await grainRun(ext, rel, Math.min(step, ext.sectors * SECTOR_SIZE - rel));
        } catch (e) {
          if (e instanceof BlockError && /beyond the end of the file/.test(e.message) && /grain table entry/.test(e.message)) {
            fail(`ERROR: cluster offset for sector ${sector} points after EOF`, e);
          }
          fail(`ERROR: could not get cluster_offset for sector ${sector}`, e);
        }
        if ((run!.kind === 'data' || run!.kind === 'compressed') && (run!.host - run!.inGrain * (run!.kind === 'data' && !ext.flat ? 1 : 0)) >= ext.file.totalBytes) {
          fail(`ERROR: cluster offset for sector ${sector} points after EOF`, null);
        }
      }
    }
    return { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0 };
  },

  async getAllocatedFileSize(bs) {
    const s = bs.state<VmdkState>();
    const file = bs.file!.node;
    let total = (await file.driver.getAllocatedFileSize?.(file)) ?? 0;
    for (const e of s.extents) {
      if (e.file === file) continue;
      total += (await e.file.driver.getAllocatedFileSize?.(e.file)) ?? 0;
    }
    return total;
  },

  getInfo(bs): ImageInfoSpecific {
    const s = bs.state<VmdkState>();
    // Keys in the order qemu-img 7.2 prints them.
    return {
      type: 'vmdk',
      data: {
        cid: s.cid,
        'parent-cid': s.parentCid,
        'create-type': s.createType,
        extents: s.extents.map((e) => {
          const info: Record<string, unknown> = {};
          if (e.compressed) info.compressed = true;
          info['virtual-size'] = e.sectors * SECTOR_SIZE;
          info.filename = e.file.filename;
          if (!e.flat) info['cluster-size'] = e.clusterSectors * SECTOR_SIZE;
          info.format = e.type;
          return info;
        }),
      },
    };
  },

  getDriverInfo(bs): DriverInfo {
    const s = bs.state<VmdkState>();
    const [first] = s.extents;
    // QEMU reports no cluster size when the extents differ in kind, or when they are flat.
    const same = s.extents.every((e) => e.flat === first!.flat && e.compressed === first!.compressed && (e.flat || e.clusterSectors === first!.clusterSectors));
    return {
      clusterSize: same && !first!.flat ? first!.clusterSectors * SECTOR_SIZE : undefined,
      isDirty: false,
      needsCompressedWrites: first!.compressed,
    };
  },
};

/** The first write gives the image a new CID (QEMU's vmdk_write_cid), so children see their parent changed. */
async function updateCid(bs: BlockNode, s: VmdkState): Promise<void> {
  if (s.cidUpdated) return;
  s.cidUpdated = true;
  const file = bs.file!.node;
  // A descriptor file is read whole (QEMU: up to 16 MiB); an embedded one is DESC_SIZE bytes. A text cut short
  // and written back one character longer would lose the character at the cut (iotest 059's 500-extent descriptor).
  if (s.descOffset === 0 && file.totalBytes > 16 * 1024 * 1024) throw new BlockError('EFBIG', `${bs.filename}: VMDK description file too big (${file.totalBytes} bytes)`, { qemuMessage: 'VMDK description file too big' });
  const text = await readText(file, s.descOffset, s.descOffset === 0 ? file.totalBytes : DESC_SIZE);
  const end = text.indexOf('\0') >= 0 ? text.indexOf('\0') : text.length;
  const body = text.slice(0, end);
  const m = /^CID=[0-9a-fA-F]*$/m.exec(body);
  if (!m) throw new BlockError('EINVAL', `${bs.filename}: the descriptor at 0x${s.descOffset.toString(16)} has no CID line to update`);
  const cid = (Math.random() * 0x100000000) >>> 0;
  const line = `CID=${cid.toString(16)}`; // unpadded, as QEMU's vmdk_write_cid
  let next = body.slice(0, m.index) + line + body.slice(m.index + m[0].length);
  if (next.length < body.length) next = next + '\n'.repeat(body.length - next.length);
  const bytes = new Uint8Array(next.length);
  for (let i = 0; i < next.length; i++) bytes[i] = next.charCodeAt(i) & 0xff;
  await bdrvPwrite(file, s.descOffset, bytes.length, bytes);
  s.cid = cid;
}

function checkCreateType(image: string, desc: Descriptor): string {
  const ct = desc.createType;
  if (ct === undefined) throw new BlockError('EINVAL', `${image}: invalid VMDK image descriptor (no createType)`, { qemuMessage: 'invalid VMDK image descriptor' });
  if (!DESCRIPTOR_FILE_CREATE_TYPES.includes(ct)) throw new BlockError('ENOTSUP', `${image}: Unsupported image type '${ct}'`);
  return ct;
}


