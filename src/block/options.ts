/**
 * Creation and amend options as QEMU's QemuOpts handles them
 * (util/qemu-option.c, and util/cutils.c's qemu_strtosz for sizes): the
 * descriptor type every format driver's option table uses, the parser, the
 * printer and typed accessors. Format drivers declare their tables
 * (BlockDriver.createOptions / amendOptions) and read parsed values with the
 * accessors here; qemu-img's commands (src/img/) do the parsing.
 *
 * An option list is the format's descriptor table followed by the protocol's
 * (qemu_opts_append keeps the first of duplicate names). The "Formatting ..."
 * line prints, in table order, every option that was set or has a default;
 * size options print normalised to bytes, the others as the user spelled them.
 */
import { BlockError } from './errors.js';

export type OptionType = 'str' | 'bool' | 'num' | 'size';

export interface OptionDesc {
  name: string;
  type: OptionType;
  help: string;
  /** Printed in the "Formatting" line when the option is not set (QemuOptDesc.def_value_str). */
  def?: string;
  /**
   * How blockdev-create (QAPI BlockdevCreateOptions) spells the option:
   * `name` is its member name (default: this name with '-' for '_'), `enum`
   * the values it accepts, `ref` that it takes a node (BlockdevRef) where
   * qemu-img takes a file name, `any` that it takes any value. `false`: QAPI
   * has no such member.
   */
  qapi?: false | { name?: string; enum?: readonly string[]; ref?: boolean; any?: boolean };
}

/** 2^64: qemu_strtosz's results are unsigned 64-bit; larger ones are out of range (ERANGE). */
const UINT64_LIMIT = 1n << 64n;

/**
 * qemu_strtosz: a decimal number (with an optional fraction) or 0x hex (no
 * fraction), then an optional unit B, K, M, G, T, P or E (either case;
 * binary units). A fraction needs a unit larger than bytes unless it is
 * zero ("1024.0" is 1024, "1.5b" is not a size); scaled fractions round to
 * the nearest byte, halves up ("0.5k" = 512, "1.0005k" = 1025). Leading
 * blanks and a plus sign are accepted, as strtoull does; nothing may follow.
 * Returns undefined when the text is not a size; values of 2^64 and more
 * come back as they are, for the caller's out-of-range message.
 */
export function qemuStrtosz(text: string): bigint | undefined {
  const m = /^[ \t\n\v\f\r]*\+?(?:0[xX]([0-9a-fA-F]+)|(\d+)(\.\d*)?)([bBkKmMgGtTpPeE]?)$/.exec(text);
  if (!m) return undefined;
  const mul = 1n << BigInt(m[4] ? 'bkmgtpe'.indexOf(m[4].toLowerCase()) * 10 : 0);
  if (m[1] !== undefined) return BigInt('0x' + m[1]) * mul;
  const frac = m[3];
  // The fraction as a 0.64 fixed-point number, as the double it parses to ("." alone is zero).
  const f = frac && frac.length > 1 ? Number('0' + frac) : 0;
  // A fraction that rounds up to 1.0 does not fit the 64 fraction bits and wraps to 0, as in QEMU on x86.
  const fixed = f > 0 && f < 1 ? BigInt(f * 2 ** 64) : 0n;
  if (mul === 1n) return fixed === 0n ? BigInt(m[2]!) : undefined;
  const scaled = fixed * mul; // 64.64 fixed point
  return BigInt(m[2]!) * mul + (scaled >> 64n) + ((scaled >> 63n) & 1n);
}

/** A size option's value (QemuOpts' parse_option_size), with its messages for text that is no size and for 2^64 and more. */
export function parseOptionSize(name: string, value: string): bigint {
  const v = qemuStrtosz(value);
  if (v === undefined) {
    throw new BlockError(
      'EINVAL',
      `Parameter '${name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`,
    );
  }
  if (v >= UINT64_LIMIT) throw new BlockError('EINVAL', `Value '${value}' is out of range for parameter '${name}'`);
  return v;
}

// ------------------------------------------------------------ protocol options

/**
 * What every storage accepts when a file is created: QEMU's file protocol
 * list, appended after the format's (qemu-img create with a file name).
 */
export const PROTOCOL_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)', qapi: false },
  { name: 'preallocation', type: 'str', help: 'Preallocation mode (allowed values: off, falloc, full)', qapi: { enum: ['off', 'metadata', 'falloc', 'full'] } },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable', qapi: false },
];

/** qemu_opts_append: the first descriptor of each name wins. */
export function appendOptionLists(...lists: ReadonlyArray<readonly OptionDesc[]>): OptionDesc[] {
  const out: OptionDesc[] = [];
  for (const l of lists) for (const d of l) if (!out.some((o) => o.name === d.name)) out.push(d);
  return out;
}

const TYPE_NAMES: Record<OptionType, string> = { str: 'str', bool: 'bool (on/off)', num: 'num', size: 'size' };

/**
 * qemu-img's `-o help`: with a file name the merged list ("Supported
 * options:"), without one the format's own list and a note on the protocol.
 */
export function optionsHelp(list: readonly OptionDesc[], formatOnly?: string): string {
  const sorted = [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const lines = sorted.map((d) => `  ${`${d.name}=<${TYPE_NAMES[d.type]}>`.padEnd(22)} - ${d.help}\n`).join('');
  if (formatOnly === undefined) return 'Supported options:\n' + lines;
  return `Supported ${formatOnly} options:\n${lines}\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n`;
}

// ------------------------------------------------------------------- parsing

/** Parsed options: name → value text (size options normalised to bytes), in the order set. */
export type OptionValues = Map<string, string>;

/** True when an -o string asks for the option list (`help` or `?`, possibly among others). */
export function isHelpOption(text: string): boolean {
  return splitOptions(text).some(([k, v]) => v === undefined && (k === 'help' || k === '?'));
}

/** Splits "a=b,c=d" with QEMU's ",," escape for a literal comma. */
function splitOptions(text: string): Array<[string, string | undefined]> {
  const out: Array<[string, string | undefined]> = [];
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    const comma = text.indexOf(',', i);
    if (eq < 0 || (comma >= 0 && comma < eq)) {
      const end = comma < 0 ? text.length : comma;
      out.push([text.slice(i, end), undefined]);
      i = end + 1;
      continue;
    }
    const name = text.slice(i, eq);
    let value = '';
    let p = eq + 1;
    for (;;) {
      const c = text.indexOf(',', p);
      if (c < 0) {
        value += text.slice(p);
        p = text.length;
        break;
      }
      value += text.slice(p, c);
      if (text[c + 1] === ',') {
        value += ',';
        p = c + 2;
        continue;
      }
      p = c + 1;
      break;
    }
    out.push([name, value]);
    i = p;
  }
  return out;
}

/** qapi_bool_parse's spellings. */
export function parseBool(name: string, value: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(value)) return true;
  if (['off', 'no', 'false', 'n'].includes(value)) return false;
  throw new BlockError('EINVAL', `Parameter '${name}' expects 'on' or 'off'`);
}

function normalise(d: OptionDesc, value: string): string {
  switch (d.type) {
    case 'bool':
      parseBool(d.name, value);
      return value;
    case 'num': {
      const m = /^([+-]?)(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.exec(value);
      if (!m) throw new BlockError('EINVAL', `Parameter '${d.name}' expects a number`);
      // Kept as typed (the Formatting line prints it so); optNumber reads the sign as strtoull does.
      return value;
    }
    case 'size': {
      return parseOptionSize(d.name, value).toString();
    }
    default:
      return value;
  }
}

/**
 * Parses -o strings against `list` into `into` (later settings win, as
 * qemu_opts_do_parse). Unknown names fail with "Invalid parameter 'x'".
 */
export function parseOptions(list: readonly OptionDesc[], texts: readonly string[], into: OptionValues = new Map()): OptionValues {
  for (const text of texts) {
    for (const [name, value] of splitOptions(text)) {
      if (name === '') continue;
      const d = list.find((o) => o.name === name);
      if (!d) throw new BlockError('EINVAL', `Invalid parameter '${name}'`);
      // A bare name means "on" for booleans (QemuOpts implied value).
      const v = value ?? (d.type === 'bool' ? 'on' : '');
      into.delete(name);
      into.set(name, normalise(d, v));
    }
  }
  return into;
}

/** Sets an option from the program (qemu_opt_set / qemu_opt_set_number). */
export function setOption(list: readonly OptionDesc[], values: OptionValues, name: string, value: string): void {
  const d = list.find((o) => o.name === name);
  if (!d) throw new BlockError('EINVAL', `Invalid parameter '${name}'`);
  values.delete(name);
  values.set(name, normalise(d, value));
}

/** qemu_opts_print(opts, " "): set options and defaults, in table order. */
export function printOptions(list: readonly OptionDesc[], values: OptionValues): string {
  const parts: string[] = [];
  for (const d of list) {
    const v = values.get(d.name) ?? d.def;
    if (v === undefined) continue;
    // QEMU's qemu_opts_print escapes a string's commas as QemuOpts reads them back (doubled).
    parts.push(`${d.name}=${d.type === 'str' ? v.replaceAll(',', ',,') : v}`);
  }
  return parts.join(' ');
}

/** Typed accessors. */
export function optBool(values: OptionValues, name: string): boolean | undefined {
  const v = values.get(name);
  return v === undefined ? undefined : parseBool(name, v);
}

export function optNumber(values: OptionValues, name: string): number | undefined {
  const v = values.get(name);
  if (v === undefined) return undefined;
  const m = /^([+-]?)(.*)$/.exec(v)!;
  const digits = m[2]!;
  const n = /^0[0-7]+$/.test(digits) ? parseInt(digits, 8) : Number(digits);
  // qemu_strtou64 is strtoull: a '-' negates modulo 2^64, so QEMU 7.2 reads refcount_bits=-1 as 2^64-1 (iotest 112).
  return m[1] === '-' && n !== 0 ? 2 ** 64 - n : n;
}
