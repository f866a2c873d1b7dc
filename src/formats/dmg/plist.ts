/**
 * The XML property list that modern DMGs keep before the koly trailer
 * (XMLOffset/XMLLength): `resource-fork` → `blkx` → an array of dicts whose
 * `Data` element is a base64 blkx table.
 *
 * Like QEMU, the reader does not parse the XML: it takes every <data>
 * element in order, and the caller keeps the ones that are blkx ("mish")
 * tables. The writer (for test images and tools) emits the layout hdiutil
 * writes.
 */

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = (() => {
  const t = new Int16Array(256).fill(-1);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  return t;
})();

/** Decodes base64, skipping whitespace and other characters outside the alphabet (as glib does). */
export function base64Decode(text: string): Uint8Array {
  const out = new Uint8Array(Math.floor((text.length * 3) / 4) + 3);
  let n = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3d) break; // '='
    const v = c < 256 ? B64_INDEX[c]! : -1;
    if (v < 0) continue;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (acc >> bits) & 0xff;
    }
  }
  return out.slice(0, n);
}

export function base64Encode(data: Uint8Array): string {
  let s = '';
  for (let i = 0; i < data.length; i += 3) {
    const a = data[i]!;
    const b = data[i + 1];
    const c = data[i + 2];
    s += B64[a >> 2]! + B64[((a & 3) << 4) | ((b ?? 0) >> 4)]!;
    s += b === undefined ? '=' : B64[((b & 15) << 2) | ((c ?? 0) >> 6)]!;
    s += c === undefined ? '=' : B64[c & 63]!;
  }
  return s;
}

/** One <data> element: its decoded bytes and its character offset in the XML. */
export interface PlistData {
  bytes: Uint8Array;
  at: number;
}

/**
 * Every <data> element of the property list, in order. Throws a message when
 * a <data> element is not closed.
 */
export function plistDataElements(xml: string): PlistData[] {
  const out: PlistData[] = [];
  let from = 0;
  for (;;) {
    const open = xml.indexOf('<data>', from);
    if (open < 0) return out;
    const close = xml.indexOf('</data>', open + 6);
    if (close < 0) throw new RangeError(`the <data> element at character ${open} is not closed`);
    out.push({ bytes: base64Decode(xml.slice(open + 6, close)), at: open });
    from = close + 7;
  }
}

/** One partition entry of the blkx array. */
export interface PlistBlkxEntry {
  Name: string;
  ID: number;
  Attributes: number;
  Data: Uint8Array;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The property list hdiutil writes for a list of blkx tables. */
export function serializePlist(entries: readonly PlistBlkxEntry[]): string {
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    '<dict>',
    '\t<key>resource-fork</key>',
    '\t<dict>',
    '\t\t<key>blkx</key>',
    '\t\t<array>',
  ];
  for (const e of entries) {
    const b64 = base64Encode(e.Data).replace(/(.{52})/g, '$1\n\t\t\t\t');
    lines.push(
      '\t\t\t<dict>',
      '\t\t\t\t<key>Attributes</key>',
      `\t\t\t\t<string>0x${e.Attributes.toString(16).padStart(4, '0')}</string>`,
      '\t\t\t\t<key>CFName</key>',
      `\t\t\t\t<string>${esc(e.Name)}</string>`,
      '\t\t\t\t<key>Data</key>',
      `\t\t\t\t<data>\n\t\t\t\t${b64}\n\t\t\t\t</data>`,
      '\t\t\t\t<key>ID</key>',
      `\t\t\t\t<string>${e.ID}</string>`,
      '\t\t\t\t<key>Name</key>',
      `\t\t\t\t<string>${esc(e.Name)}</string>`,
      '\t\t\t</dict>',
    );
  }
  lines.push('\t\t</array>', '\t</dict>', '</dict>', '</plist>', '');
  return lines.join('\n');
}
