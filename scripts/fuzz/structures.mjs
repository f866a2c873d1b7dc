// Where each format keeps its structures, found by small independent parsers
// (not the drivers' own: a driver bug must not hide the field it misreads).
// Each parser returns fields { kind, offset, width, le } the mutators aim at:
// header fields, table entries (L1/L2, refcount table and blocks, snapshot
// table, bitmap directory and bitmap tables, extension headers, BAT, GD/GT,
// block maps, catalogs, chunk tables). A parser stops quietly at anything it
// cannot follow: the fields found so far are still worth mutating.

const MAX_ENTRIES = 256;

class View {
  constructor(b) {
    this.b = b;
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  ok(off, n) {
    return Number.isSafeInteger(off) && off >= 0 && off + n <= this.b.length;
  }
  u16(off, le = false) {
    return this.ok(off, 2) ? this.dv.getUint16(off, le) : 0;
  }
  u32(off, le = false) {
    return this.ok(off, 4) ? this.dv.getUint32(off, le) : 0;
  }
  u64(off, le = false) {
    if (!this.ok(off, 8)) return 0;
    const hi = this.dv.getUint32(off + (le ? 4 : 0), le);
    const lo = this.dv.getUint32(off + (le ? 0 : 4), le);
    return hi * 2 ** 32 + lo;
  }
}

function fieldsOf(out, kind, base, layout, le) {
  for (const [off, width] of layout) out.push({ kind, offset: base + off, width, le });
}
function table(out, v, kind, base, count, width, le) {
  for (let i = 0; i < Math.min(count, MAX_ENTRIES); i++) {
    if (!v.ok(base + i * width, width)) break;
    out.push({ kind, offset: base + i * width, width, le });
  }
}

// ---------------------------------------------------------------- qcow2
const QCOW2_HEADER = [[4, 4], [8, 8], [16, 4], [20, 4], [24, 8], [32, 4], [36, 4], [40, 8], [48, 8], [56, 4], [60, 4], [64, 8], [72, 8], [80, 8], [88, 8], [96, 4], [100, 4], [104, 1]];
const L1_MASK = 0x00fffffffffffe00;
function qcow2(v) {
  const out = [];
  const version = v.u32(4);
  fieldsOf(out, 'qcow2 header', 0, version >= 3 ? QCOW2_HEADER : QCOW2_HEADER.slice(0, 12), false);
  const clusterBits = v.u32(20);
  if (clusterBits < 9 || clusterBits > 21) return out;
  const cs = 2 ** clusterBits;
  const entryMask = (x) => x % 2 ** 56 - (x % 512) ; // bits 9..55
  // extension headers
  let ext = version >= 3 ? v.u32(100) : 72;
  for (let n = 0; n < 32 && v.ok(ext, 8); n++) {
    const type = v.u32(ext);
    const len = v.u32(ext + 4);
    out.push({ kind: 'qcow2 extension header', offset: ext, width: 4, le: false }, { kind: 'qcow2 extension header', offset: ext + 4, width: 4, le: false });
    if (type === 0) break;
    if (type === 0x23852875) {
      // bitmaps: nb_bitmaps, reserved, directory size, directory offset
      fieldsOf(out, 'qcow2 bitmaps extension', ext + 8, [[0, 4], [8, 8], [16, 8]], false);
      let d = v.u64(ext + 24);
      const nb = v.u32(ext + 8);
      for (let i = 0; i < Math.min(nb, 16) && v.ok(d, 24); i++) {
        fieldsOf(out, 'qcow2 bitmap directory', d, [[0, 8], [8, 4], [12, 4], [16, 1], [17, 1], [18, 2], [20, 4]], false);
        const bt = v.u64(d);
        table(out, v, 'qcow2 bitmap table', bt, v.u32(d + 8), 8, false);
        d += 24 + v.u32(d + 20) + v.u16(d + 18);
        d = Math.ceil(d / 8) * 8;
      }
    }
    if (type === 0xe2792aca || type === 0x44415441) out.push({ kind: 'qcow2 extension header', offset: ext + 8, width: 1, le: false });
    ext += 8 + Math.ceil(len / 8) * 8;
  }
  // backing file name
  if (v.u64(8)) out.push({ kind: 'qcow2 backing file name', offset: v.u64(8), width: 1, le: false });
  // L1 / L2
  const l1 = v.u64(40);
  const l1Size = v.u32(36);
  table(out, v, 'qcow2 active L1', l1, l1Size, 8, false);
  const l2Entries = (v.u32(72 + 0) && version >= 3 && v.u64(72) & 16 ? 16 : 8);
  for (let i = 0; i < Math.min(l1Size, 4); i++) {
    const l2 = entryMask(v.u64(l1 + i * 8));
    if (l2) table(out, v, 'qcow2 active L2', l2, Math.min(cs / l2Entries, 64), l2Entries, false);
  }
  // refcount table / blocks
  const rt = v.u64(48);
  table(out, v, 'qcow2 refcount table', rt, v.u32(56) * cs / 8, 8, false);
  const rb = v.u64(rt);
  const order = version >= 3 ? v.u32(96) : 4;
  const rw = Math.max(1, 2 ** order / 8);
  if (rb && order <= 6) table(out, v, 'qcow2 refcount block', rb, Math.min(cs / rw, 64), rw, false);
  // snapshot table
  let sn = v.u64(64);
  for (let i = 0; i < Math.min(v.u32(60), 16) && v.ok(sn, 40); i++) {
    fieldsOf(out, 'qcow2 snapshot table', sn, [[0, 8], [8, 4], [12, 2], [14, 2], [16, 4], [20, 4], [24, 8], [32, 4], [36, 4]], false);
    const sl1 = v.u64(sn);
    table(out, v, 'qcow2 inactive L1', sl1, v.u32(sn + 8), 8, false);
    const sl2 = entryMask(v.u64(sl1));
    if (sl2) table(out, v, 'qcow2 inactive L2', sl2, 16, l2Entries, false);
    sn += 40 + v.u32(sn + 36) + v.u16(sn + 12) + v.u16(sn + 14);
    sn = Math.ceil(sn / 8) * 8;
  }
  void L1_MASK;
  return out;
}

// ---------------------------------------------------------------- others
function qcow1(v) {
  const out = [];
  fieldsOf(out, 'qcow header', 0, [[4, 4], [8, 8], [16, 4], [20, 4], [24, 8], [32, 1], [33, 1], [36, 4], [40, 8]], false);
  const l1 = v.u64(40);
  table(out, v, 'qcow L1', l1, 64, 8, false);
  const l2 = v.u64(l1);
  if (l2) table(out, v, 'qcow L2', l2, 64, 8, false);
  return out;
}

function qed(v) {
  const out = [];
  fieldsOf(out, 'qed header', 0, [[4, 4], [8, 4], [12, 4], [16, 8], [24, 8], [32, 8], [40, 8], [48, 8], [56, 4], [60, 4]], true);
  const cs = v.u32(4, true);
  const l1 = v.u64(40, true);
  table(out, v, 'qed L1', l1, 64, 8, true);
  const l2 = v.u64(l1, true);
  if (l2 && cs) table(out, v, 'qed L2', l2, 64, 8, true);
  return out;
}

function vdi(v) {
  const out = [];
  for (let o = 0x40; o < 0x54; o += 4) out.push({ kind: 'vdi header', offset: o, width: 4, le: true });
  fieldsOf(out, 'vdi header', 0x154, [[0, 4], [4, 4], [8, 4], [12, 4], [16, 4], [20, 4], [24, 4], [28, 8], [36, 4], [40, 4], [44, 4], [48, 4]], true);
  table(out, v, 'vdi block map', v.u32(0x154, true), 64, 4, true);
  return out;
}

function vpc(v) {
  const out = [];
  const footers = [0, v.b.length - 512];
  for (const f of footers) fieldsOf(out, 'vpc footer', f, [[8, 4], [12, 4], [16, 8], [40, 8], [48, 8], [56, 4], [60, 4], [64, 4]], false);
  const dyn = v.u64(16);
  if (dyn && dyn < v.b.length) {
    fieldsOf(out, 'vpc dynamic header', dyn, [[8, 8], [16, 8], [24, 4], [28, 4], [32, 4], [36, 4]], false);
    table(out, v, 'vpc BAT', v.u64(dyn + 16), 64, 4, false);
  }
  return out;
}

function vhdx(v) {
  const out = [];
  for (const h of [0x10000, 0x20000]) fieldsOf(out, 'vhdx header', h, [[4, 4], [8, 8], [16, 8], [64, 2], [66, 2], [68, 4], [72, 8]], true);
  for (const r of [0x30000, 0x40000]) {
    fieldsOf(out, 'vhdx region table', r, [[4, 4], [8, 4]], true);
    const n = v.u32(r + 8, true);
    for (let i = 0; i < Math.min(n, 8); i++) {
      const e = r + 16 + i * 32;
      fieldsOf(out, 'vhdx region table', e, [[16, 8], [24, 4], [28, 4]], true);
      const off = v.u64(e + 16, true);
      if (r === 0x30000 && v.ok(off, 64)) table(out, v, i === 0 ? 'vhdx region' : 'vhdx region', off, 64, 8, true);
    }
  }
  return out;
}

function vmdkSparse(v, base = 0) {
  const out = [];
  fieldsOf(out, 'vmdk header', base, [[4, 4], [8, 4], [12, 8], [20, 8], [28, 8], [36, 8], [44, 4], [48, 8], [56, 8], [64, 8], [72, 1], [77, 2]], true);
  let gd = v.u64(base + 56, true);
  if (gd === 2 ** 64 - 1 || gd > 2 ** 50) {
    // stream-optimized: the real header is in the footer, 1024 bytes before the end
    const foot = v.b.length - 1024 + 512;
    fieldsOf(out, 'vmdk footer', foot, [[12, 8], [20, 8], [44, 4], [56, 8], [64, 8]], true);
    gd = v.u64(foot + 56, true);
  }
  table(out, v, 'vmdk grain directory', gd * 512, 32, 4, true);
  const gt = v.u32(gd * 512, true);
  if (gt) table(out, v, 'vmdk grain table', gt * 512, 64, 4, true);
  if (v.u64(base + 28, true)) out.push({ kind: 'vmdk descriptor', offset: v.u64(base + 28, true) * 512, text: true, bytes: v.u64(base + 36, true) * 512 });
  return out;
}
function vmdk(v) {
  if (v.u32(0, true) === 0x564d444b) return vmdkSparse(v);
  return [{ kind: 'vmdk descriptor', offset: 0, text: true, bytes: v.b.length }];
}

function parallels(v) {
  const out = [];
  fieldsOf(out, 'parallels header', 0, [[16, 4], [20, 4], [24, 4], [28, 4], [32, 4], [36, 8], [44, 4], [48, 4], [52, 4], [56, 8]], true);
  table(out, v, 'parallels BAT', 64, v.u32(32, true), 4, true);
  return out;
}

function luks(v) {
  // Not the keyslots' or the digest's PBKDF2 iteration counts: their cost is
  // the format's intended work (QEMU bounds it no more than we do).
  const out = [];
  fieldsOf(out, 'luks header', 0, [[6, 2], [104, 4], [108, 4]], false);
  for (let i = 0; i < 8; i++) fieldsOf(out, 'luks keyslot', 208 + 48 * i, [[0, 4], [40, 4], [44, 4]], false);
  return out;
}

function cloop(v) {
  const out = [];
  fieldsOf(out, 'cloop header', 128, [[0, 4], [4, 4]], false);
  table(out, v, 'cloop offsets', 136, v.u32(132) + 1, 8, false);
  return out;
}

function bochs(v) {
  const out = [];
  fieldsOf(out, 'bochs header', 0, [[64, 4], [68, 4], [72, 4], [76, 4], [80, 4], [84, 4], [88, 8], [96, 4]], true);
  table(out, v, 'bochs catalog', v.u32(72, true), 64, 4, true);
  return out;
}

function dmg(v) {
  const out = [];
  const k = v.b.length - 512;
  fieldsOf(out, 'dmg koly', k, [[4, 4], [8, 4], [12, 4], [16, 8], [24, 8], [32, 8], [40, 8], [48, 4], [52, 4], [56, 4], [216, 8], [224, 8], [236, 4], [492, 4]], false);
  const plist = v.u64(k + 216);
  const len = v.u64(k + 224);
  if (plist && v.ok(plist, len)) out.push({ kind: 'dmg plist', offset: plist, text: true, bytes: len });
  return out;
}

const PARSERS = { qcow2, qcow: qcow1, qed, vdi, vpc, vhdx, vmdk, parallels, luks, cloop, bochs, dmg, raw: () => [] };

/** The fields of `image` (a `format` image) the mutators aim at; never throws. */
export function structuresOf(format, image) {
  try {
    return (PARSERS[format] ?? (() => []))(new View(image)).filter((f) => f.text || (f.offset >= 0 && f.offset + f.width <= image.length));
  } catch {
    return [];
  }
}
