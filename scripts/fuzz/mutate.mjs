// Mutations, deterministic from (run seed, case number): a case is replayed
// anywhere from those two numbers and the seed images. Most mutations aim at
// the structures scripts/fuzz/structures.mjs finds (a header field or a table
// entry set to a boundary value, an offset pointing at other metadata or past
// the end, a field copied from a neighbour); the rest are random byte flips,
// block copies, truncations and extensions, and numbers changed in text
// descriptors (vmdk, dmg's property list).
import { structuresOf } from './structures.mjs';

/** xorshift32, the generator test/helpers/random.ts uses. */
export function xorshift32(seed) {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** A case's generator: mixes the run seed and the case number. */
export function caseRng(runSeed, caseNo) {
  const next = xorshift32((Math.imul(runSeed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(caseNo + 1, 0xc2b2ae35)) >>> 0);
  for (let i = 0; i < 4; i++) next();
  return { next, below: (n) => (n <= 0 ? 0 : next() % n), chance: (p) => next() / 2 ** 32 < p };
}

function writeUint(b, off, width, le, value) {
  // value: a non-negative number below 2^64 (exact below 2^53; larger ones keep their top bits)
  let hi = Math.floor(value / 2 ** 32) >>> 0;
  let lo = value % 2 ** 32 >>> 0;
  const bytes = [];
  for (let i = 0; i < 8; i++) {
    bytes.push(i < 4 ? (lo >>> (8 * i)) & 0xff : (hi >>> (8 * (i - 4))) & 0xff);
  }
  const mine = bytes.slice(0, width);
  for (let i = 0; i < width; i++) b[off + (le ? i : width - 1 - i)] = mine[i];
}
function readUint(b, off, width, le) {
  let v = 0;
  for (let i = 0; i < width; i++) v = v * 256 + b[off + (le ? width - 1 - i : i)];
  return v;
}

function interesting(r, f, image, fields) {
  const max = 2 ** (8 * f.width);
  const cur = readUint(image, f.offset, f.width, f.le);
  const other = fields.length ? fields[r.below(fields.length)] : f;
  const len = image.length;
  const pick = [
    () => 0,
    () => max - 1,
    () => max / 2,
    () => max / 2 - 1,
    () => cur + 1,
    () => Math.max(0, cur - 1),
    () => cur * 2,
    () => Math.floor(cur / 2),
    () => cur ^ 2 ** r.below(Math.min(8 * f.width, 53)),
    () => 2 ** r.below(Math.min(8 * f.width, 63)),
    () => len,
    () => len + 512,
    () => Math.max(0, len - 1),
    () => (f.width >= 4 ? other.offset : r.below(256)),
    () => readUint(image, other.offset, other.width ?? 8, other.le ?? false),
    () => r.next() * (f.width > 4 ? r.next() : 1),
    () => 512 * r.below(Math.max(1, Math.ceil(len / 512))),
    () => cur + 512 * (r.below(16) + 1),
  ];
  return pick[r.below(pick.length)]() % max;
}

const NUMBERS = ['0', '1', '-1', '4294967295', '4294967296', '18446744073709551615', '9007199254740993', '2147483648', '512', '65536', '99999999999999999999'];

function mutateText(r, image, f) {
  const end = Math.min(image.length, f.offset + Math.min(f.bytes, 1 << 16));
  const text = new TextDecoder('latin1').decode(image.subarray(f.offset, end));
  const nums = [...text.matchAll(/\d+/g)];
  if (nums.length && r.chance(0.7)) {
    const m = nums[r.below(nums.length)];
    const rep = NUMBERS[r.below(NUMBERS.length)];
    const at = f.offset + m.index;
    // same length where it fits (keeps offsets after it valid), else a splice
    if (rep.length <= m[0].length) {
      const padded = rep.padStart(m[0].length, '0');
      for (let i = 0; i < padded.length; i++) image[at + i] = padded.charCodeAt(i);
      return { image, what: `${f.kind}: number at 0x${at.toString(16)} -> ${padded}` };
    }
    const out = new Uint8Array(image.length + rep.length - m[0].length);
    out.set(image.subarray(0, at));
    for (let i = 0; i < rep.length; i++) out[at + i] = rep.charCodeAt(i);
    out.set(image.subarray(at + m[0].length), at + rep.length);
    return { image: out, what: `${f.kind}: number at 0x${at.toString(16)} -> ${rep}` };
  }
  const at = f.offset + r.below(Math.max(1, end - f.offset));
  const chars = '"=\n <>/ &;#.';
  image[at] = chars.charCodeAt(r.below(chars.length));
  return { image, what: `${f.kind}: char at 0x${at.toString(16)}` };
}

/** One mutation of `image`; returns { image, what }. */
function mutateOnce(r, format, image) {
  const fields = structuresOf(format, image);
  const len = image.length;
  const roll = r.below(100);
  if (fields.length && roll < 62) {
    const f = fields[r.below(fields.length)];
    if (f.text) return mutateText(r, image, f);
    const value = interesting(r, f, image, fields);
    writeUint(image, f.offset, f.width, f.le, value);
    return { image, what: `${f.kind} @0x${f.offset.toString(16)} (${f.width} bytes) = 0x${value.toString(16)}` };
  }
  if (roll < 82 && len) {
    // random bytes, half of the time in the first 64 KiB where the headers live
    const n = 1 + r.below(8);
    const base = r.chance(0.5) ? r.below(Math.min(len, 65536)) : r.below(len);
    for (let i = 0; i < n && base + i < len; i++) image[base + i] = r.chance(0.5) ? r.next() & 0xff : image[base + i] ^ (1 << r.below(8));
    return { image, what: `${n} random bytes at 0x${base.toString(16)}` };
  }
  if (roll < 90 && len > 1024) {
    // copy a 512-byte block over another (an L2 over a refcount block, a header over a table…)
    const from = 512 * r.below(Math.floor(len / 512));
    const to = 512 * r.below(Math.floor(len / 512));
    image.copyWithin(to, from, Math.min(len, from + 512));
    return { image, what: `block 0x${from.toString(16)} copied to 0x${to.toString(16)}` };
  }
  if (roll < 95 && len > 512) {
    const n = r.chance(0.5) ? 512 * r.below(Math.ceil(len / 512)) : r.below(len);
    return { image: image.slice(0, n), what: `truncated to ${n}` };
  }
  const extra = r.chance(0.5) ? 512 * (1 + r.below(64)) : 1 + r.below(4096);
  const out = new Uint8Array(len + extra);
  out.set(image);
  if (r.chance(0.5)) for (let i = len; i < out.length; i++) out[i] = r.next() & 0xff;
  return { image: out, what: `extended by ${extra}` };
}

/** The mutated image of case `caseNo` from `seed` (1-4 mutations), and what was done. */
export function mutateCase(runSeed, caseNo, seed) {
  const r = caseRng(runSeed, caseNo);
  let image = seed.files[seed.main].slice();
  const done = [];
  const n = 1 + (r.chance(0.6) ? 0 : r.below(4));
  for (let i = 0; i < n; i++) {
    const m = mutateOnce(r, seed.format, image);
    image = m.image;
    done.push(m.what);
  }
  // the case's own operations (probe or not, read and write offsets) draw from a second generator
  return { image, mutations: done, rng: caseRng((runSeed ^ 0x0c0ffee) >>> 0, caseNo) };
}

/** Which seed case `caseNo` mutates (an even spread, fixed by the seed order). */
export function seedIndexFor(runSeed, caseNo, nSeeds) {
  return caseRng(runSeed ^ 0x5eed, caseNo).below(nSeeds);
}
