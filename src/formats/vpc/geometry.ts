/**
 * The VHD CHS geometry rule (the VHD specification's appendix, as QEMU's
 * calculate_geometry), and the virtual size QEMU derives from it.
 *
 * Virtual PC sizes a disk by its geometry, cylinders × heads × sectors, which
 * usually comes out a little larger or smaller than current_size; Hyper-V and
 * most other tools use current_size. QEMU picks by creator_app (see
 * vpcVirtualSectors) and uses current_size whenever the geometry is the
 * maximum one, which cannot describe larger disks.
 */

export const VHD_CHS_MAX_C = 65535;
export const VHD_CHS_MAX_H = 16;
export const VHD_CHS_MAX_S = 255;
/** Sectors of the largest CHS geometry. */
export const VHD_MAX_GEOMETRY = VHD_CHS_MAX_C * VHD_CHS_MAX_H * VHD_CHS_MAX_S;
/** QEMU's limit: 2040 GiB. */
export const VHD_MAX_SECTORS = 0xff000000;

export interface Chs {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The geometry the VHD specification assigns to `totalSectors`. */
export function calculateGeometry(totalSectors: number): Chs {
  totalSectors = Math.min(totalSectors, VHD_MAX_GEOMETRY);
  let spt: number;
  let heads: number;
  let cth: number;
  if (totalSectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(totalSectors / spt);
  } else {
    spt = 17;
    cth = Math.floor(totalSectors / spt);
    // heads is a u8 in QEMU; the > 16 test below catches the values that matter.
    heads = Math.ceil(cth / 1024) & 0xff;
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/** creator_app values whose images are sized by current_size rather than by geometry. */
const SIZED_BY_CURRENT_SIZE = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

/**
 * Virtual size in sectors as QEMU's vpc_open computes it. `forceSizeCalc`
 * is the `force_size_calc` open option: 'chs' or 'current_size' override the
 * creator_app table (but never the maximum-geometry case).
 */
export function vpcVirtualSectors(
  footer: { creatorApp: string; currentSize: number } & Chs,
  forceSizeCalc?: 'chs' | 'current_size',
): number {
  const chs = footer.cylinders * footer.heads * footer.sectorsPerTrack;
  const useChs = !SIZED_BY_CURRENT_SIZE.includes(footer.creatorApp) || forceSizeCalc === 'chs';
  if (!useChs || chs === VHD_MAX_GEOMETRY || forceSizeCalc === 'current_size') return Math.floor(footer.currentSize / 512);
  return chs;
}

/**
 * Geometry and sector count qemu-img create uses for `bytes`: the smallest
 * geometry covering the size (rounding up, so convert never truncates), or,
 * with force_size, the maximum geometry and the size as given.
 */
export function createGeometry(bytes: number, forceSize: boolean): Chs & { totalSectors: number } {
  let g: Chs = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  if (forceSize) {
    g = { cylinders: VHD_CHS_MAX_C, heads: VHD_CHS_MAX_H, sectorsPerTrack: VHD_CHS_MAX_S };
  } else {
    const want = Math.min(VHD_MAX_GEOMETRY, Math.floor(bytes / 512));
    for (let i = 0; want > g.cylinders * g.heads * g.sectorsPerTrack; i++) g = calculateGeometry(want + i);
  }
  const chs = g.cylinders * g.heads * g.sectorsPerTrack;
  const totalSectors = chs === VHD_MAX_GEOMETRY ? Math.floor(bytes / 512) : chs;
  return { ...g, totalSectors };
}
