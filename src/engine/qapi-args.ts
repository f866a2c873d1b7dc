/**
 * Checking a command's arguments the way QEMU's QAPI input visitor does, with
 * its messages: a missing member is "Parameter 'x' is missing", an unknown one
 * "Parameter 'x' is unexpected", a wrong type "Invalid parameter type for 'x',
 * expected: integer", a bad enum value "Parameter 'x' does not accept value
 * 'y'". Nested members are named with dots ("file.filename"), as QEMU does.
 *
 * Schemas are written like QAPI's JSON: `{ 'node-name': 'str', '*size': 'int' }`,
 * a leading `*` marking an optional member.
 */
import { genericError } from './qmp-error.js';

export type QapiType =
  | 'str'
  | 'int'
  | 'uint32'
  | 'bool'
  | 'any'
  /** A node-name string or a nested dict of blockdev options (checked by blockdev-add itself). */
  | 'BlockdevRef'
  /** BlockdevRef or null. */
  | 'BlockdevRefOrNull'
  | { enum: readonly string[] }
  | { list: QapiType }
  | { struct: ArgSpec }
  | { alternate: readonly QapiType[] };

export type ArgSpec = Readonly<Record<string, QapiType>>;

export type Args = Record<string, unknown>;

export function isDict(v: unknown): v is Args {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** QAPI's name for what a type expects, as the visitor prints it. */
function expected(t: QapiType): string {
  if (typeof t === 'string') {
    switch (t) {
      case 'str':
        return 'string';
      case 'int':
      case 'uint32':
        return 'integer';
      case 'bool':
        return 'boolean';
      default:
        return 'object';
    }
  }
  if ('enum' in t) return 'string';
  if ('list' in t) return 'array';
  return 'object';
}

function matches(t: QapiType, v: unknown): boolean {
  if (typeof t === 'string') {
    switch (t) {
      case 'str':
        return typeof v === 'string';
      case 'int':
        return Number.isSafeInteger(v);
      case 'uint32':
        return Number.isSafeInteger(v) && (v as number) >= 0;
      case 'bool':
        return typeof v === 'boolean';
      case 'any':
        return v !== undefined;
      case 'BlockdevRef':
        return typeof v === 'string' || isDict(v);
      case 'BlockdevRefOrNull':
        return v === null || typeof v === 'string' || isDict(v);
    }
  }
  if ('enum' in t) return typeof v === 'string';
  if ('list' in t) return Array.isArray(v);
  if ('struct' in t) return isDict(v);
  return t.alternate.some((a) => matches(a, v));
}

function checkValue(t: QapiType, v: unknown, name: string): void {
  if (!matches(t, v)) throw genericError(`Invalid parameter type for '${name}', expected: ${expected(t)}`);
  if (typeof t === 'string') {
    if (t === 'uint32' && (v as number) > 0xffffffff) throw genericError(`Parameter '${name}' expects uint32_t`);
    return;
  }
  if ('enum' in t) {
    if (!t.enum.includes(v as string)) throw genericError(`Parameter '${name}' does not accept value '${v as string}'`);
  } else if ('list' in t) {
    (v as unknown[]).forEach((item, i) => checkValue(t.list, item, `${name}[${i}]`));
  } else if ('struct' in t) {
    checkArgs(t.struct, v as Args, `${name}.`);
  } else {
    const alt = t.alternate.find((a) => matches(a, v))!;
    checkValue(alt, v, name);
  }
}

/**
 * Checks `args` against `spec` (throws a GenericError QmpError) and returns
 * them. `open` lets members not in the spec through (blockdev-add checks
 * driver-specific members once it knows the driver).
 */
export function checkArgs(spec: ArgSpec, args: unknown, prefix = '', open = false): Args {
  if (args === undefined || args === null) args = {};
  if (!isDict(args)) throw genericError(`QMP input member 'arguments' must be an object`);
  const known = new Set<string>();
  for (const [rawKey, t] of Object.entries(spec)) {
    const optional = rawKey.startsWith('*');
    const key = optional ? rawKey.slice(1) : rawKey;
    known.add(key);
    const v = args[key];
    if (v === undefined) {
      if (!optional) throw genericError(`Parameter '${prefix}${key}' is missing`);
      continue;
    }
    checkValue(t, v, prefix + key);
  }
  if (!open) {
    for (const key of Object.keys(args)) {
      if (!known.has(key) && args[key] !== undefined) throw genericError(`Parameter '${prefix}${key}' is unexpected`);
    }
  }
  return args;
}
