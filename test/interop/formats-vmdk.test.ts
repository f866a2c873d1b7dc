/**
 * VMDK read support against qemu-img: every subformat qemu-img creates, its
 * options (zeroed_grain, hwversion, adapter_type), a parent chain, several
 * sizes, sparse and full — info, map, convert and compare must agree.
 */
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { formatDifferential, type FormatCase } from './format-differential.js';

const img = (dir: string, args: string[]) => qemuImg(args, { cwd: dir });
const io = (dir: string, file: string, cmds: string[], fmt = 'vmdk') => qemuIo(file, cmds, fmt, { cwd: dir });

/** Data at the start, across a grain boundary, a zero write and data at the end (grain-aligned for stream-optimized). */
function scribble(dir: string, file: string, size: number): void {
  const g = 65536;
  io(dir, file, [
    `write -P 0x11 0 ${g}`,
    `write -P 0x22 ${3 * g} ${2 * g}`,
    `write -z ${8 * g} ${g}`,
    `write -P 0x33 ${size - 2 * g} ${2 * g}`,
  ]);
}

function created(subformat: string, size: number, opts: string[] = [], fill = true): (dir: string) => string {
  return (dir) => {
    img(dir, ['create', '-f', 'vmdk', '-o', [`subformat=${subformat}`, ...opts].join(','), 'disk.vmdk', String(size)]);
    if (fill) scribble(dir, 'disk.vmdk', size);
    return 'disk.vmdk';
  };
}

/** A raw source with data, a hole and a partly filled grain, converted by qemu-img (the only way to fill stream-optimized). */
function converted(subformat: string, size: number, full = false): (dir: string) => string {
  return (dir) => {
    img(dir, ['create', '-f', 'raw', 'src.raw', String(size)]);
    if (full) io(dir, 'src.raw', [`write -P 0x5a 0 ${size}`], 'raw');
    else io(dir, 'src.raw', ['write -P 0x11 0 1M', 'write -P 0x22 3M 100k', `write -P 0x33 ${size - 65536} 512`], 'raw');
    img(dir, ['convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, 'src.raw', 'disk.vmdk']);
    return 'disk.vmdk';
  };
}

const MiB = 1024 * 1024;

const cases: FormatCase[] = [
  { name: 'vmdk monolithicSparse, empty', format: 'vmdk', make: created('monolithicSparse', 8 * MiB, [], false) },
  { name: 'vmdk monolithicSparse, scribbled', format: 'vmdk', make: created('monolithicSparse', 20 * MiB) },
  { name: 'vmdk monolithicSparse, odd size (not a grain multiple)', format: 'vmdk', make: created('monolithicSparse', 5 * MiB + 3 * 512) },
  { name: 'vmdk monolithicSparse, zeroed_grain=on', format: 'vmdk', make: created('monolithicSparse', 20 * MiB, ['zeroed_grain=on']) },
  { name: 'vmdk monolithicSparse, hwversion=6, adapter_type=lsilogic', format: 'vmdk', make: created('monolithicSparse', 12 * MiB, ['hwversion=6', 'adapter_type=lsilogic']) },
  { name: 'vmdk monolithicSparse, adapter_type=buslogic', format: 'vmdk', make: created('monolithicSparse', 12 * MiB, ['adapter_type=buslogic']) },
  { name: 'vmdk monolithicSparse, converted full', format: 'vmdk', make: converted('monolithicSparse', 6 * MiB, true) },
  { name: 'vmdk streamOptimized, converted sparse', format: 'vmdk', make: converted('streamOptimized', 12 * MiB) },
  { name: 'vmdk streamOptimized, converted full', format: 'vmdk', make: converted('streamOptimized', 4 * MiB, true) },
  { name: 'vmdk streamOptimized, empty', format: 'vmdk', make: created('streamOptimized', 4 * MiB, [], false) },
  { name: 'vmdk monolithicFlat, scribbled', format: 'vmdk', make: created('monolithicFlat', 12 * MiB) },
  { name: 'vmdk monolithicFlat, adapter_type=legacyESX', format: 'vmdk', make: created('monolithicFlat', 4 * MiB, ['adapter_type=legacyESX'], false) },
  { name: 'vmdk twoGbMaxExtentSparse, 5 GiB (three extents)', format: 'vmdk', huge: true, make: created('twoGbMaxExtentSparse', 5 * 1024 * MiB) },
  { name: 'vmdk twoGbMaxExtentSparse, small', format: 'vmdk', make: created('twoGbMaxExtentSparse', 12 * MiB) },
  {
    name: 'vmdk twoGbMaxExtentFlat, 3 GiB, data across the extent boundary',
    format: 'vmdk',
    huge: true,
    make: (dir) => {
      img(dir, ['create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', 'disk.vmdk', '3G']);
      io(dir, 'disk.vmdk', ['write -P 0x45 2047M 2M', 'write -P 0x46 0 64k']);
      return 'disk.vmdk';
    },
  },
  {
    name: 'vmdk with a parent (parentFileNameHint), overlay scribbled',
    format: 'vmdk',
    make: (dir) => {
      img(dir, ['create', '-f', 'vmdk', 'base.vmdk', '16M']);
      io(dir, 'base.vmdk', ['write -P 0x47 0 4M', 'write -P 0x48 10M 1M']);
      img(dir, ['create', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'top.vmdk']);
      io(dir, 'top.vmdk', ['write -P 0x49 1M 64k', 'write -z 10M 64k']);
      return 'top.vmdk';
    },
  },
  {
    name: 'vmdk two-level chain, zeroed_grain overlay hides parent data',
    format: 'vmdk',
    make: (dir) => {
      img(dir, ['create', '-f', 'vmdk', 'base.vmdk', '8M']);
      io(dir, 'base.vmdk', ['write -P 0x50 0 8M']);
      img(dir, ['create', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'mid.vmdk']);
      io(dir, 'mid.vmdk', ['write -P 0x51 2M 1M']);
      img(dir, ['create', '-f', 'vmdk', '-o', 'zeroed_grain=on', '-b', 'mid.vmdk', '-F', 'vmdk', 'top.vmdk']);
      io(dir, 'top.vmdk', ['write -z 0 1M', 'write -P 0x52 6M 64k']);
      return 'top.vmdk';
    },
  },
];

formatDifferential(cases);
