/**
 * qemu-io's number parsing and output formatting, byte for byte.
 *
 * `cvtnum` follows qemu_strtosz as QEMU 7.2 has it (decimal or 0x hex,
 * fractions only with a unit suffix, suffixes B/K/M/G/T/P/E in powers of
 * 1024, 0.5 rounded up, nothing above INT64_MAX). The printers reproduce
 * glibc's printf rounding (ties to even on the exact binary value), which
 * JavaScript's toFixed does not (it rounds ties up), so "1.0625 KiB" prints
 * as qemu-io prints it.
 */

/** Result of cvtnum: a value, or the errno qemu-io reports. */
export type CvtnumResult = { ok: true; value: number } | { ok: false; err: 'EINVAL' | 'ERANGE' };

const INT64_MAX = (1n << 63n) - 1n;
const U64_LIMIT = 1n << 64n;

function suffixShift(c: string): number {
  switch (c.toUpperCase()) {
    case 'B':
      return 0;
    case 'K':
      return 10;
    case 'M':
      return 20;
    case 'G':
      return 30;
    case 'T':
      return 40;
    case 'P':
      return 50;
    case 'E':
      return 60;
    default:
      return -1;
  }
}

/** Parses a size argument as qemu-io's cvtnum (bytes by default). */
export function cvtnum(s: string): CvtnumResult {
  const bad: CvtnumResult = { ok: false, err: 'EINVAL' };
  // strtoull: leading white space and an optional sign; a minus is refused afterwards.
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]*)/.exec(s)!;
  if (m[1] === '-') return bad;
  let pos = m[0].length;
  if (m[2] === '') return bad;
  let val = BigInt(m[2]);
  let fraction = 0;
  if (val === 0n && (s[pos] === 'x' || s[pos] === 'X')) {
    const h = /^[0-9a-fA-F]+/.exec(s.slice(pos + 1));
    // strtoull in base 16 accepts "0x" only when digits follow; otherwise it stops after the 0.
    if (!h || m[2] !== '0') return bad;
    val = BigInt('0x' + h[0]);
    pos += 1 + h[0].length;
    if (s[pos] === '.') return bad;
  } else if (s[pos] === '.') {
    const f = /^\.([0-9]+)([eE][+-]?[0-9]+)?/.exec(s.slice(pos));
    if (!f) {
      pos++; // "1.k": no digits after the point is accepted as no fraction
    } else {
      if (f[2]) return bad;
      fraction = Number('0' + f[0]);
      pos += f[0].length;
    }
  }
  if (val >= U64_LIMIT) return { ok: false, err: 'ERANGE' };
  let shift = pos < s.length ? suffixShift(s[pos]!) : -1;
  // QEMU accepts a suffix on hex numbers with a deprecation warning; so do we (without it).
  if (shift >= 0) pos++;
  else shift = 0;
  if (pos !== s.length) return bad;
  if (shift === 0) {
    if (fraction !== 0) return bad;
  } else {
    // 64.64 fixed point, as QEMU: val * 2^shift + round(fraction * 2^shift).
    const valf = BigInt(Math.min(Math.floor(fraction * 2 ** 64), 2 ** 64 - 1));
    const prod = valf << BigInt(shift);
    val = (val << BigInt(shift)) + (prod >> 64n) + ((prod >> 63n) & 1n);
    if (val >= U64_LIMIT) return { ok: false, err: 'ERANGE' };
  }
  if (val > INT64_MAX) return { ok: false, err: 'ERANGE' };
  return { ok: true, value: Number(val) };
}

/** qemu-io's message for a cvtnum failure. */
export function cvtnumError(err: 'EINVAL' | 'ERANGE', arg: string): string {
  return err === 'EINVAL'
    ? `Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${arg}\n`
    : `Parsing error: argument too large -- ${arg}\n`;
}

/** printf("%.<digits>f", x) with glibc's ties-to-even on the exact binary value. */
export function cFixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  const s = x.toFixed(digits);
  // A tie needs x * 10^digits to end in exactly .5, so x * 2^(digits+1) is an integer.
  const p = 2 ** (digits + 1);
  if (!Number.isInteger(x * p) || Math.abs(x) >= 2 ** 40) return s;
  const twice = x * 2 * 10 ** digits;
  if (!Number.isSafeInteger(twice) || Math.abs(twice) % 2 !== 1) return s;
  const down = (Math.abs(twice) - 1) / 2;
  const n = down % 2 === 0 ? down : down + 1;
  const str = n.toString().padStart(digits + 1, '0');
  const body = digits > 0 ? str.slice(0, -digits) + '.' + str.slice(-digits) : str;
  return (x < 0 ? '-' : '') + body;
}

const UNITS: Array<[number, string]> = [
  [2 ** 60, ' EiB'],
  [2 ** 50, ' PiB'],
  [2 ** 40, ' TiB'],
  [2 ** 30, ' GiB'],
  [2 ** 20, ' MiB'],
  [2 ** 10, ' KiB'],
];

/** qemu-io's cvtstr: "64 KiB", "1.500 KiB", "40 bytes". */
export function cvtstr(value: number): string {
  let str: string | undefined;
  let suffix = ' bytes';
  for (const [unit, name] of UNITS) {
    if (value >= unit) {
      str = cFixed(value / unit, 3);
      suffix = name;
      break;
    }
  }
  if (str === undefined) str = cFixed(value, 6);
  const trim = str.indexOf('.000');
  return (trim >= 0 ? str.slice(0, trim) : str) + suffix;
}

/** An elapsed time as QEMU's struct timespec. */
export interface Elapsed {
  sec: number;
  nsec: number;
}

export function elapsedSince(t0: number, t1: number): Elapsed {
  const ns = Math.max(0, Math.round((t1 - t0) * 1e6));
  return { sec: Math.floor(ns / 1e9), nsec: ns % 1e9 };
}

function pad2(n: number): string {
  return n.toString().padStart(2, '0');
}

/** qemu-io's timestr: "00.00 sec" below a second, "H:MM:SS.ss" otherwise or when verbose. */
export function timestr(t: Elapsed, verbose: boolean): string {
  const frac = t.nsec / 1e9;
  const h = Math.floor(t.sec / 3600);
  const m = Math.floor((t.sec % 3600) / 60);
  const s = t.sec % 60;
  if (verbose || t.sec) return `${h}:${pad2(m)}:${cFixed(s + frac, 2).padStart(5, '0')}`;
  return `${cFixed(frac, 2).padStart(5, '0')} sec`;
}

function tdiv(value: number, t: Elapsed): number {
  return value / (t.sec + t.nsec / 1e9);
}

/** The two report lines after read, write and discard (or the -C line). */
export function printReport(op: string, t: Elapsed, offset: number, count: number, total: number, cnt: number, cflag: boolean): string {
  const ts = timestr(t, cflag);
  if (!cflag) {
    return (
      `${op} ${total}/${count} bytes at offset ${offset}\n` +
      `${cvtstr(total)}, ${cnt} ops; ${ts} (${cvtstr(tdiv(total, t))}/sec and ${cFixed(tdiv(cnt, t), 4)} ops/sec)\n`
    );
  }
  return `${total},${cnt},${ts},${cFixed(tdiv(total, t), 3)},${cFixed(tdiv(cnt, t), 3)}\n`;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0') + ' ');
const CHR = Array.from({ length: 256 }, (_, i) =>
  (i >= 0x30 && i <= 0x39) || (i >= 0x41 && i <= 0x5a) || (i >= 0x61 && i <= 0x7a) ? String.fromCharCode(i) : '.',
);

/** qemu-io's `read -v` dump: offset, 16 hex bytes, then the bytes that are alphanumeric. */
export function dumpBuffer(buf: Uint8Array, offset: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i += 16) {
    const end = Math.min(i + 16, buf.length);
    let hex = '';
    let chars = '';
    for (let j = i; j < end; j++) {
      hex += HEX[buf[j]!];
      chars += CHR[buf[j]!];
    }
    lines.push(`${(offset + i).toString(16).padStart(8, '0')}:  ${hex} ${chars}\n`);
  }
  return lines.join('');
}
