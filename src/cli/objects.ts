/**
 * qemu-img's `--object` and `--image-opts`, for the commands that open
 * images. `--object secret,id=ID,data=TEXT` (or `file=PATH`) registers a
 * secret that drivers look up by id (luks's `key-secret`). With
 * `--image-opts` an image name is an option list,
 * `driver=luks,key-secret=sec0,file.filename=disk.luks`; without it a
 * `json:{"driver": ..., "file": {"filename": ...}, ...}` name is read the
 * same way. Both become a format, a file name and driver options.
 */
import { fs } from '../protocols/node-fs.js';
import { registerSecret } from '../block/secrets.js';
import { UsageError } from './args.js';

let imageOpts = false;

/** Key=value list with QEMU's ",," escape for a literal comma. */
function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',' && text[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (text[i] === ',') {
      parts.push(cur);
      cur = '';
    } else cur += text[i];
  }
  parts.push(cur);
  for (const p of parts) {
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) throw new UsageError(`Invalid parameter '${p}'`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

/** Defines one `--object` (qemu-img's and qemu-io's). */
export function defineObject(text: string): void {
  // "secret,id=...": the first element names the type unless it is a key=value itself (qom-type=...).
  const comma = text.indexOf(',');
  const head = comma < 0 ? text : text.slice(0, comma);
  const typed = !head.includes('=');
  const kv = parseKeyValues(typed ? (comma < 0 ? '' : text.slice(comma + 1)) : text);
  const type = typed ? head : kv['qom-type'];
  if (type !== 'secret') throw new UsageError(`--object: type '${type}' is not supported (only 'secret')`);
  if (!kv.id) throw new UsageError(`Parameter 'id' is missing`);
  if (kv.data !== undefined) registerSecret(kv.id, kv.data);
  else if (kv.file !== undefined) registerSecret(kv.id, new Uint8Array(fs.readFileSync(kv.file)));
  else throw new UsageError(`Either 'data' or 'file' must be provided`);
}

/**
 * Takes `--object` (any number) and `--image-opts` out of a command's
 * arguments, defining the objects; returns the remaining arguments.
 */
export function takeObjectOptions(args: string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a === '--object') {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`option '--object' requires an argument`);
      defineObject(v);
    } else if (a.startsWith('--object=')) defineObject(a.slice('--object='.length));
    else if (a === '--image-opts') imageOpts = true;
    else rest.push(a);
  }
  return rest;
}

export interface ImageSpec {
  filename: string;
  format?: string;
  driverOptions?: Record<string, unknown>;
  /** The protocol's options (`file.*` besides the name and driver): curl's readahead, timeout, cookie… */
  fileOptions?: Record<string, unknown>;
  /** The protocol driver named by `file.driver` (`file`, `http`, `https`). */
  fileDriver?: string;
}

/** The file, format and driver options an image name stands for (plain names stand for themselves). */
export function imageSpec(name: string): ImageSpec {
  let opts: Record<string, unknown> | undefined;
  if (imageOpts) {
    opts = {};
    for (const [k, v] of Object.entries(parseKeyValues(name))) opts[k] = v;
  } else if (name.startsWith('json:')) {
    let json: unknown;
    try {
      json = JSON.parse(name.slice(5));
    } catch {
      throw new UsageError(`Could not parse the JSON options in '${name}'`);
    }
    opts = {};
    const flatten = (o: Record<string, unknown>, prefix: string) => {
      for (const [k, v] of Object.entries(o)) {
        if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, `${prefix}${k}.`);
        else opts![`${prefix}${k}`] = v;
      }
    };
    flatten(json as Record<string, unknown>, '');
  }
  if (!opts) return { filename: name };
  // QEMU's curl driver names its file `url`; the others `filename`.
  const filename = opts['file.filename'] ?? opts['file.url'] ?? opts['file'];
  if (typeof filename !== 'string') throw new UsageError(`'${name}': the options name no file ('file.filename')`);
  const driver = typeof opts.driver === 'string' ? opts.driver : undefined;
  const driverOptions: Record<string, unknown> = {};
  const fileOptions: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) {
    if (k === 'driver' || k === 'file' || k === 'file.filename' || k === 'file.url' || k === 'file.driver') continue;
    if (k.startsWith('file.')) fileOptions[k.slice(5)] = v;
    else driverOptions[k] = v;
  }
  const fileDriver = typeof opts['file.driver'] === 'string' ? (opts['file.driver'] as string) : undefined;
  return { filename, format: driver, driverOptions, fileOptions, fileDriver };
}
