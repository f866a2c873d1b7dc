/**
 * Block options as a tree (QEMU's nested QDict of BlockdevOptions): the one
 * parser for every way a user names an image with options — a `json:{…}`
 * file name, `--image-opts` / `-o` key=value lists with dotted keys
 * (`file.driver=blkdebug,file.image.filename=x`), and the protocol prefixes
 * some drivers take in a plain file name (`blkdebug:CONFIG:IMAGE`,
 * `null-co://`, `file:`).
 *
 * Dotted keys become nested dicts and numeric components become arrays, as
 * QEMU's qdict_crumple does, so `inject-error.0.event=l2_load` and
 * `"inject-error": [{"event": "l2_load"}]` are the same tree. Values from
 * key=value lists stay strings; drivers read them with the accessors below,
 * which accept both spellings (QEMU's keyval visitor does the same).
 */
import { BlockError } from './errors.js';
import { parseOptionSize } from './options.js';

export type OptionValue = string | number | boolean | null | OptionsTree | OptionValue[];
export interface OptionsTree {
  [key: string]: OptionValue;
}

export function isTree(v: unknown): v is OptionsTree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * QemuOpts' key=value list: ",," is a literal comma; a bare first word is
 * `implied` (QEMU's implied key). Other bare words are refused, or with
 * `bare: 'flag'` are booleans as qemu-io and -drive take them (`x` is x=on,
 * `nox` is x=off). The one parser of this syntax (CLI objects, qemu-io's
 * open, QMP's -drive and -blockdev all use it).
 */
export function parseKeyValueList(text: string, implied?: string, bare: 'error' | 'flag' = 'error'): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  let first = true;
  while (i <= text.length) {
    let part = '';
    while (i < text.length) {
      if (text[i] === ',') {
        if (text[i + 1] === ',') {
          part += ',';
          i += 2;
          continue;
        }
        break;
      }
      part += text[i++];
    }
    i++;
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (first && implied && part !== '') out[implied] = part;
      else if (part !== '' && bare === 'flag') out[part.startsWith('no') ? part.slice(2) : part] = part.startsWith('no') ? 'off' : 'on';
      else if (part !== '') throw new BlockError('EINVAL', `Invalid parameter '${part}'`);
    } else {
      const key = part.slice(0, eq);
      if (key === '') throw new BlockError('EINVAL', `Invalid parameter ''`);
      out[key] = part.slice(eq + 1);
    }
    first = false;
  }
  return out;
}

/**
 * Dotted keys to a tree (qdict_crumple): `a.b=1` → {a: {b: 1}}; a dict whose
 * keys are exactly 0..n-1 becomes an array. A key that is both a value and a
 * prefix (`file=x,file.driver=y`) is refused, as QEMU refuses it.
 */
export function crumple(flat: Record<string, unknown>): OptionsTree {
  const root: OptionsTree = {};
  for (const [key, value] of Object.entries(flat)) {
    const parts = key.split('.');
    let node: OptionsTree = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const p = parts[i]!;
      const next = node[p];
      if (next === undefined) node = node[p] = {};
      else if (isTree(next)) node = next;
      else throw new BlockError('EINVAL', `Cannot mix scalar and non-scalar keys ('${parts.slice(0, i + 1).join('.')}')`);
    }
    const last = parts[parts.length - 1]!;
    if (isTree(node[last])) throw new BlockError('EINVAL', `Cannot mix scalar and non-scalar keys ('${key}')`);
    node[last] = isTree(value) ? crumple(value as Record<string, unknown>) : (value as OptionValue);
  }
  return listify(root) as OptionsTree;
}

function listify(v: OptionValue): OptionValue {
  if (Array.isArray(v)) return v.map(listify);
  if (!isTree(v)) return v;
  const keys = Object.keys(v);
  for (const k of keys) v[k] = listify(v[k]!);
  if (keys.length > 0 && keys.every((k) => /^\d+$/.test(k))) {
    const n = keys.length;
    if (keys.every((k) => Number(k) < n)) return Array.from({ length: n }, (_, i) => v[String(i)]!);
  }
  return v;
}

/** QEMU's JSON text of options (a `json:` name): sorted keys, ", " and ": " between members. */
export function qdictText(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(qdictText).join(', ')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}: ${qdictText(o[k])}`).join(', ')}}`;
  }
  return JSON.stringify(v);
}

/** Merges `b` into `a` (b wins), dict by dict: `-o` options on top of a json: name's. */
export function mergeTrees(a: OptionsTree, b: OptionsTree): OptionsTree {
  const out: OptionsTree = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const old = out[k];
    out[k] = isTree(old) && isTree(v) ? mergeTrees(old, v) : v;
  }
  return out;
}

/** A `json:{…}` name's options; dotted keys inside it nest too (QEMU flattens and crumples them). */
export function parseJsonName(name: string): OptionsTree {
  let json: unknown;
  try {
    json = JSON.parse(singleToDoubleQuotes(name.slice('json:'.length)));
  } catch (e) {
    throw new BlockError('EINVAL', `Could not parse the JSON options: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isTree(json)) throw new BlockError('EINVAL', 'Invalid JSON object given');
  return crumple(flatten(json));
}

/**
 * QEMU's JSON parser takes 'single-quoted' strings too (the iotests write
 * json: names that way): they become standard double-quoted strings.
 */
function singleToDoubleQuotes(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      // A standard string: copied through to its closing quote.
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j;
    } else if (c === "'") {
      let str = '';
      let j = i + 1;
      for (; j < text.length && text[j] !== "'"; j++) {
        if (text[j] === '\\' && j + 1 < text.length) str += text[++j] === "'" ? "'" : '\\' + text[j];
        else if (text[j] === '"') str += '\\"';
        else str += text[j];
      }
      out += `"${str}"`;
      i = j;
    } else out += c;
  }
  return out;
}

/** The inverse of crumple: a tree's leaves under dotted keys. */
export function flatten(tree: OptionsTree, prefix = '', out: Record<string, OptionValue> = {}): Record<string, OptionValue> {
  for (const [k, v] of Object.entries(tree)) {
    if (isTree(v)) flatten(v, `${prefix}${k}.`, out);
    else if (Array.isArray(v)) {
      v.forEach((item, i) => {
        if (isTree(item)) flatten(item, `${prefix}${k}.${i}.`, out);
        else out[`${prefix}${k}.${i}`] = item;
      });
    } else out[`${prefix}${k}`] = v;
  }
  return out;
}

/** An option as a string (numbers and booleans as QEMU prints them), or undefined. */
export function optString(tree: OptionsTree, key: string): string | undefined {
  const v = tree[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new BlockError('EINVAL', `Invalid parameter type for '${key}', expected: string`);
}

/** An integer option (QEMU's number/size accessors: numbers, or decimal/0x strings). */
export function optNumber(tree: OptionsTree, key: string, what = 'a number'): number | undefined {
  const v = tree[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'string' && /^-?(0x[0-9a-f]+|\d+)$/i.test(v.trim())) {
    const n = v.trim().startsWith('-') ? -Number(v.trim().slice(1)) : Number(v.trim());
    if (Number.isSafeInteger(n)) return n;
  }
  throw new BlockError('EINVAL', `Parameter '${key}' expects ${what}`);
}

/** A size option: a number, or qemu_strtosz's text (`64k`, `1M`, `0x1000`). */
export function optSize(tree: OptionsTree, key: string): number | undefined {
  const v = tree[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  const n = parseOptionSize(key, typeof v === 'string' ? v : String(v));
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new BlockError('EFBIG', `Parameter '${key}': ${n} is too large (blocktab handles sizes below 2^53)`);
  return Number(n);
}

/** A boolean option: true/false, or on/off/yes/no strings. */
export function optBool(tree: OptionsTree, key: string): boolean | undefined {
  const v = tree[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'on' || v === 'true' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === 'no') return false;
  throw new BlockError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`);
}

/**
 * A file name with a protocol prefix stands for options (QEMU's
 * bdrv_parse_filename of the driver the prefix names): `blkdebug:CONF:IMG`,
 * `null-co://`, `null-aio://`, `file:PATH`. Returns the options the name
 * stands for, or undefined for a plain name.
 */
export function parseProtocolFilename(filename: string): OptionsTree | undefined {
  if (filename.startsWith('blkdebug:')) {
    const rest = filename.slice('blkdebug:'.length);
    const colon = rest.indexOf(':');
    if (colon < 0) throw new BlockError('EINVAL', 'blkdebug requires both config file and image path');
    const out: OptionsTree = { driver: 'blkdebug', image: rest.slice(colon + 1) };
    if (colon > 0) out.config = rest.slice(0, colon);
    return out;
  }
  for (const drv of ['null-co', 'null-aio']) {
    if (filename.startsWith(`${drv}://`)) return { driver: drv, filename };
  }
  if (filename.startsWith('file:')) {
    // A path that would itself read as a protocol prefix gets "./", as QEMU names such a file (126).
    const path = filename.slice('file:'.length);
    const colon = path.indexOf(':');
    const slash = path.indexOf('/');
    return { driver: 'file', filename: colon >= 0 && (slash < 0 || colon < slash) ? `./${path}` : path };
  }
  return undefined;
}
