/**
 * QMP's wire format, as QEMU's monitor speaks it on a character device:
 * JSON objects may span lines or share one (the input is a stream, split by
 * bracket depth as QEMU's JSON streamer does), and replies are one line each,
 * written with QEMU's separators (`{"return": {}}`) and non-ASCII escaped.
 */

/** One unit the splitter found: an object's (or array's) text, or a stray token to complain about. */
export type WireItem = { text: string } | { stray: string };

/** Splits a character stream into top-level JSON values. */
export class JsonSplitter {
  private buf = '';
  private depth = 0;
  private inString = false;
  private escape = false;
  private token = '';

  /** Feeds text; returns the items it completed. */
  feed(chunk: string): WireItem[] {
    const out: WireItem[] = [];
    for (const ch of chunk) {
      if (this.depth === 0 && !this.inString) {
        if (ch === '{' || ch === '[') {
          this.flushToken(out);
          this.depth = 1;
          this.buf = ch;
          continue;
        }
        if (ch === '"' && this.token === '') {
          this.inString = true;
          this.token = ch;
          continue;
        }
        if (/\s/.test(ch)) this.flushToken(out);
        else this.token += ch;
        continue;
      }
      if (this.depth === 0) {
        // A string at top level (not an object): collected as a stray token.
        this.token += ch;
        if (this.escape) this.escape = false;
        else if (ch === '\\') this.escape = true;
        else if (ch === '"') {
          this.inString = false;
          this.flushToken(out);
        }
        continue;
      }
      this.buf += ch;
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (ch === '\\') this.escape = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (ch === '"') this.inString = true;
      else if (ch === '{' || ch === '[') this.depth++;
      else if (ch === '}' || ch === ']') {
        if (--this.depth === 0) {
          out.push({ text: this.buf });
          this.buf = '';
        }
      }
    }
    return out;
  }

  private flushToken(out: WireItem[]): void {
    if (this.token !== '') out.push({ stray: this.token });
    this.token = '';
  }
}

/** QEMU's compact JSON: ", " and ": " separators, non-ASCII as \uXXXX. */
export function toQmpJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return v.length === 0 ? '[]' : `[${v.map(toQmpJson).join(', ')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return entries.length === 0 ? '{}' : `{${entries.map(([k, x]) => `${toQmpJson(k)}: ${toQmpJson(x)}`).join(', ')}}`;
  }
  return 'null';
}

/**
 * JSON.parse that refuses an object with a repeated key, as QEMU's parser
 * does ("duplicate key"); returns the value or the error text.
 */
export function parseQmpJson(text: string): { value: unknown } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { error: 'JSON parse error, invalid JSON syntax' };
  }
  return hasDuplicateKey(text) ? { error: 'JSON parse error, duplicate key' } : { value };
}

/** Scans object keys per nesting level. */
function hasDuplicateKey(text: string): boolean {
  const stack: (Set<string> | null)[] = [];
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const s = text.slice(i, j + 1);
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(s) as string;
        if (top.has(key)) return true;
        top.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (ch === '{') {
      stack.push(new Set());
      expectKey = true;
    } else if (ch === '[') stack.push(null);
    else if (ch === '}' || ch === ']') stack.pop();
    else if (ch === ',') expectKey = stack[stack.length - 1] !== null && stack.length > 0;
    i++;
  }
  return false;
}
