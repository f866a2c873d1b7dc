/**
 * QEMU's QObject output, reproduced: key order of a QDict and the two ways
 * qemu-img prints one (the JSON pretty-printer and the human "dump").
 *
 * qemu-img builds its answers as QDicts, a hash table of 512 buckets, and
 * prints them in bucket order, so `info --output=json` lists keys in an order
 * that looks random but is fixed by the key names. To print byte-identical
 * output we order keys the same way: by bucket (QEMU's tdb_hash of the key,
 * mod 512), and within a bucket the key inserted last comes first. Callers give
 * keys in QAPI schema order (the order QEMU inserts them).
 */

/** A QObject: a JSON value whose integers are exact (QNum int). */
export type QValue = string | number | boolean | QValue[] | QDict;
export interface QDict {
  [key: string]: QValue | undefined;
}

const QDICT_BUCKET_MAX = 512;

/** QEMU's tdb_hash (32-bit unsigned arithmetic). */
function tdbHash(name: string): number {
  const bytes = new TextEncoder().encode(name);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** Keys of `d` (undefined values dropped) in the order QEMU's qdict_first/qdict_next visit them. */
export function qdictKeys(d: QDict): string[] {
  const keys = Object.keys(d).filter((k) => d[k] !== undefined);
  const bucketOf = new Map(keys.map((k, i) => [k, { bucket: tdbHash(k) % QDICT_BUCKET_MAX, i }]));
  return keys.sort((a, b) => {
    const x = bucketOf.get(a)!;
    const y = bucketOf.get(b)!;
    return x.bucket - y.bucket || y.i - x.i;
  });
}

/** QEMU's JSON string quoting: control characters and everything past ASCII as \uXXXX (upper-case hex). */
function quote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (cp < 0x20 || cp >= 0x7f) {
      for (let i = 0; i < ch.length; i++) out += '\\u' + ch.charCodeAt(i).toString(16).toUpperCase().padStart(4, '0');
    } else out += ch;
  }
  return out + '"';
}

/** qobject_to_json_pretty: 4-space indent, `"key": value`, empty containers as {} and []. */
export function toJsonPretty(v: QValue, indent = 0): string {
  const pad = (n: number) => ' '.repeat(n * 4);
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number') return Number.isInteger(v) ? exactInteger(v) : formatDouble(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return '[' + v.map((x) => '\n' + pad(indent + 1) + toJsonPretty(x, indent + 1)).join(',') + '\n' + pad(indent) + ']';
  }
  const keys = qdictKeys(v);
  if (keys.length === 0) return '{}';
  return '{' + keys.map((k) => '\n' + pad(indent + 1) + quote(k) + ': ' + toJsonPretty(v[k]!, indent + 1)).join(',') + '\n' + pad(indent) + '}';
}

/**
 * An integer's digits, exact past 2^53 too: a double holding an integer that
 * large is printed as the integer it is (8070450532247928832), not as the
 * shortest text that reads back to it (8070450532247929000).
 */
export function exactInteger(v: number): string {
  return Number.isSafeInteger(v) ? v.toString() : BigInt(v).toString();
}

/** QEMU prints doubles with %.17g and trims; none of qemu-img's info fields are doubles, so this is only a fallback. */
function formatDouble(v: number): string {
  return String(v);
}

/**
 * The human "dump" of a QDict (block/qapi.c's dump_qdict): `key: value` lines
 * indented by 4 spaces per level, dashes in keys shown as spaces, lists as
 * `[i]:` entries.
 */
export function dumpHuman(v: QValue, indent: number): string {
  const pad = ' '.repeat(indent * 4);
  const composite = (x: QValue) => typeof x === 'object';
  if (Array.isArray(v)) {
    return v.map((x, i) => `${pad}[${i}]:${composite(x) ? '\n' : ' '}${dumpHuman(x, indent + 1)}`).join('');
  }
  if (typeof v === 'object') {
    return qdictKeys(v)
      .map((k) => {
        const x = v[k]!;
        return `${pad}${k.replace(/-/g, ' ')}:${composite(x) ? '\n' : ' '}${dumpHuman(x, indent + 1)}`;
      })
      .join('');
  }
  return `${typeof v === 'number' ? (Number.isInteger(v) ? exactInteger(v) : formatDouble(v)) : String(v)}\n`;
}
