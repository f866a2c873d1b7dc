/** How the app prints sizes and offsets: IEC units as qemu-img's human output, hex offsets as QEMU's messages. */

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** "64 MiB", "1.5 GiB", "512 bytes" (qemu-img's size_to_str style, 3 significant digits). */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.replace(/\.?0+$/, '')} ${UNITS[u]}`;
}

/** "64 MiB (67108864 bytes)", as `qemu-img info` prints the virtual size. */
export function formatSizeExact(bytes: number): string {
  return bytes < 1024 ? formatSize(bytes) : `${formatSize(bytes)} (${bytes} bytes)`;
}

export function hexOffset(n: number, width = 8): string {
  return '0x' + n.toString(16).padStart(width, '0');
}

/**
 * Parses an offset the user typed: decimal, 0x-hex, or with a unit suffix
 * (k/M/G/T, powers of 1024, as qemu-io). Returns undefined when it is not one.
 */
export function parseOffset(text: string): number | undefined {
  const t = text.trim();
  if (/^0x[0-9a-f]+$/i.test(t)) return parseInt(t.slice(2), 16);
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(t);
  if (!m) return undefined;
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const v = Math.floor(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** The last path component of a file name or URL. */
export function baseName(name: string): string {
  const noQuery = name.replace(/[?#].*$/, '');
  return noQuery.slice(noQuery.lastIndexOf('/') + 1) || name;
}
