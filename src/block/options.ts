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

/** Largest size qemu_strtosz accepts for an image (INT64_MAX). */
const INT64_MAX = (1n << 63n) - 1n;

/**
 * qemu_strtosz: decimal (a fraction only with a unit suffix) or 0x hex
 * bytes, optional suffix B, K, M, G, T, P or E (either case; binary units).
 * Returns undefined when the text is not a size. Sizes beyond 2^53 are
 * refused as too large for exact arithmetic here.
 */
export function qemuStrtosz(text: string): bigint | undefined {
  const m = /^\s*(?:(0x[0-9a-f]+)|(\d+)(?:\.(\d*))?)\s*([bkmgtpe]?)$/i.exec(text);
  if (!m) return undefined;
  const unit = m[4] ? 'bkmgtpe'.indexOf(m[4].toLowerCase()) * 10 : 0;
  if (m[1] !== undefined) {
    if (m[4] && m[4].toLowerCase() === 'b') return undefined; // "0x1b" is hex digits, not a suffix
    return BigInt(m[1]) << BigInt(unit);
  }
  const whole = BigInt(m[2]!);
  const frac = m[3];
  if (frac !== undefined && (!m[4] || unit === 0)) return undefined; // fractions need a unit
  let v = whole << BigInt(unit);
  if (frac) {
    // Truncates toward zero, as QEMU's double arithmetic does for these values.
    const scale = 10n ** BigInt(frac.length);
    v += (BigInt(frac) << BigInt(unit)) / scale;
  }
  return v;
}

/** A size for an image: qemu-img's messages for a bad one. */
export function parseImageSize(text: string): number {
  const v = parseImageSizeExact(text);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BlockError('EFBIG', `Image size ${v} is too large (blocktab handles sizes below 2^53 bytes)`);
  return Number(v);
}

/** As parseImageSize, exact up to qemu-img's limit (INT64_MAX): for the "Formatting" line and the format's own size checks. */
export function parseImageSizeExact(text: string): bigint {
  const v = qemuStrtosz(text);
  if (v === undefined) {
    throw new BlockError(
      'EINVAL',
      'Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    );
  }
  if (v > INT64_MAX) throw new BlockError('EINVAL', 'Invalid image size specified. Must be between 0 and 9223372036854775807.');
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
    case 'num':
      if (!/^(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.test(value)) throw new BlockError('EINVAL', `Parameter '${d.name}' expects a number`);
      return value;
    case 'size': {
      const v = qemuStrtosz(value);
      if (v === undefined || v >= 1n << 64n) {
        throw new BlockError(
          'EINVAL',
          `Parameter '${d.name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`,
        );
      }
      return v.toString();
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
  return /^0[0-7]+$/.test(v) ? parseInt(v, 8) : Number(v);
}
