/** The facts panel: qemu-img info's fields, the backing chain as a diagram, and the snapshots table. */
import type { QmpImageInfo } from '../engine/query.js';
import type { SnapshotInfoQapi } from '../img/info.js';
import { byId, h } from './dom.js';
import { baseName, formatSize, formatSizeExact } from './format.js';
import { layerColour } from './palette.js';
import type { ImageSession } from './session.js';

type Fact = [label: string, value: string, bad?: boolean];

function specific(info: QmpImageInfo): Record<string, unknown> {
  const fs = info['format-specific'] as { data?: Record<string, unknown> } | undefined;
  return fs?.data ?? {};
}

function yesNo(v: unknown): string {
  return v === true ? 'yes' : v === false ? 'no' : '—';
}

export function factsOf(info: QmpImageInfo): Fact[] {
  const spec = specific(info);
  const facts: Fact[] = [
    ['Format', info.format],
    ['Virtual size', formatSizeExact(info['virtual-size'])],
    ['Disk size', info['actual-size'] === undefined ? 'unknown' : formatSize(info['actual-size'])],
  ];
  if (info['cluster-size'] !== undefined) facts.push(['Cluster size', formatSizeExact(info['cluster-size'])]);
  if (spec.compat !== undefined) facts.push(['Compat', String(spec.compat)]);
  if (spec['compression-type'] !== undefined) facts.push(['Compression', String(spec['compression-type'])]);
  if (spec['refcount-bits'] !== undefined) facts.push(['Refcount bits', String(spec['refcount-bits'])]);
  if (spec['lazy-refcounts'] !== undefined) facts.push(['Lazy refcounts', yesNo(spec['lazy-refcounts'])]);
  if (spec['extended-l2'] !== undefined) facts.push(['Extended L2', yesNo(spec['extended-l2'])]);
  if (spec['data-file'] !== undefined) facts.push(['Data file', String(spec['data-file'])]);
  const bitmaps = spec.bitmaps as { name: string }[] | undefined;
  if (bitmaps?.length) facts.push(['Bitmaps', bitmaps.map((b) => b.name).join(', ')]);
  facts.push(['Dirty', yesNo(info['dirty-flag']), info['dirty-flag'] === true]);
  if (spec.corrupt !== undefined) facts.push(['Corrupt', yesNo(spec.corrupt), spec.corrupt === true]);
  if (info.encrypted) facts.push(['Encrypted', 'yes']);
  facts.push(['Snapshots', String(info.snapshots?.length ?? 0)]);
  return facts;
}

export interface FactsCallbacks {
  /** The user picked a snapshot dot in the chain picture. */
  onPickSnapshot(layer: number, id: string): void;
}

export function renderFacts(s: ImageSession, cb: FactsCallbacks): void {
  byId('image-title').textContent = s.label;
  byId('facts').replaceChildren(
    ...factsOf(s.info).map(([label, value, bad]) =>
      h('div', { 'data-fact': label }, h('dt', {}, label), h('dd', { class: bad ? 'flag-bad' : undefined }, value)),
    ),
  );
  renderChain(s, cb);
}

/** When a snapshot was taken, in local time as qemu-img snapshot -l prints it ("2026-11-21 06:35:43"). */
export function snapshotDate(sn: SnapshotInfoQapi): string {
  const d = new Date(sn['date-sec'] * 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/**
 * The picture of the image's history: the chain from the oldest backing file
 * to the active image, left to right, and on each layer its internal
 * snapshots in the order they were taken (qcow2 keeps no parent links between
 * snapshots, so a line is all there is), ending at "now" on the active one.
 * Layers and snapshot dots are focusable; a dot picks its row in the table.
 */
function renderChain(s: ImageSession, cb: FactsCallbacks): void {
  const oldestFirst = s.layers.map((layer, depth) => ({ layer, depth })).reverse();
  const items = oldestFirst.map(({ layer, depth }) => {
    const colour = depth === 0 ? '#1c2127' : layerColour(depth);
    const name = baseName(layer.filename);
    const role = depth === 0 ? (s.writable ? 'active image, writable' : 'top image, read-only') : `backing layer ${depth}`;
    const snaps = layer.snapshots ?? [];
    const dots: HTMLElement[] = snaps.map((sn) => {
      const dot = h(
        'button',
        { type: 'button', class: 'snap-dot', 'data-snapshot': sn.name, 'aria-label': `Snapshot ${sn.name} (ID ${sn.id}) of ${name}, taken ${snapshotDate(sn)}` },
        sn.name,
      );
      dot.addEventListener('click', () => cb.onPickSnapshot(depth, sn.id));
      return dot;
    });
    if (depth === 0) dots.push(h('span', { class: 'snap-now', 'aria-hidden': 'true' }, h('span', { class: 'ring' }), 'now'));
    // Short lines between the marks, so they read as one timeline.
    const line = dots.flatMap((d, i) => (i === 0 ? [d] : [h('span', { class: 'snap-link', 'aria-hidden': 'true' }), d]));
    return h(
      'li',
      {},
      h(
        'div',
        {
          class: `layer${depth === 0 ? ' top' : ''}`,
          style: `border-color:${colour}`,
          tabindex: 0,
          'aria-label': `${role}: ${layer.filename}, ${layer.format}, ${formatSize(layer['virtual-size'])}, ${snaps.length} internal snapshot${snaps.length === 1 ? '' : 's'}`,
        },
        h('strong', {}, name),
        `${layer.format}, ${formatSize(layer['virtual-size'])}${depth === 0 ? (s.writable ? ' · active, writable' : ' · top, read-only') : ` · layer ${depth}`}`,
        line.length ? h('div', { class: 'snap-line' }, ...line) : null,
      ),
    );
  });
  const last = s.layers[s.layers.length - 1]!;
  if (last['backing-filename'] && !last['backing-image']) {
    items.unshift(h('li', {}, h('div', { class: 'layer', tabindex: 0 }, h('strong', {}, last['backing-filename']), 'not opened')));
  }
  if (items.length === 1) items.push(h('li', { class: 'no-backing' }, h('span', { class: 'muted' }, 'no backing file')));
  byId('chain').replaceChildren(...items);
}
