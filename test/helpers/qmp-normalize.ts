/**
 * What QMP transcripts mask before they are compared (plain code, shared by
 * the Node monitor helper and the browser suite): generated node names
 * (#blockNNN → #block1, #block2… in order of appearance), a directory
 * (→ $DIR), time measurements (→ "time"), the version members; object
 * keys sorted. One masker per transcript, so node names number alike.
 */
const TIME_KEY = /(_time_ns|_latency_ns|_queue_depth)$/;

export function transcriptMasker(dir: string | null): (v: unknown) => unknown {
  const names = new Map<string, string>();
  const walk = (v: unknown, key?: string): unknown => {
    if (typeof v === 'string') {
      const s = dir === null ? v : v.split(dir).join('$DIR');
      return s.replace(/#block\d+/g, (n) => {
        if (!names.has(n)) names.set(n, `#block${names.size + 1}`);
        return names.get(n)!;
      });
    }
    if (typeof v === 'number' && key !== undefined && (TIME_KEY.test(key) || key === 'idle_time_ns')) return 'time';
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        if (k === 'version' || k === 'package' || k === 'micro') continue;
        o[k] = walk((v as Record<string, unknown>)[k], k);
      }
      return o;
    }
    return v;
  };
  return (v) => walk(v);
}

/** A snapshot's date and VM clock differ run to run (QEMU's VM clock runs; blocktab has none): kept as "time". */
export function maskSnapshotTimes(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(maskSnapshotTimes);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, /^(date|vm-clock)-n?sec$/.test(k) ? 'time' : maskSnapshotTimes(x)]));
  }
  return v;
}
