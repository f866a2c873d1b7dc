/** The facts panel: qemu-img info's fields, the backing chain as a diagram, and the snapshots table. */
import type { QmpImageInfo } from '../engine/query.js';
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

export function renderFacts(s: ImageSession): void {
  byId('image-title').textContent = s.label;
  byId('facts').replaceChildren(
    ...factsOf(s.info).map(([label, value, bad]) =>
      h('div', { 'data-fact': label }, h('dt', {}, label), h('dd', { class: bad ? 'flag-bad' : undefined }, value)),
    ),
  );
  renderChain(s);
  renderSnapshots(s.info);
}

function renderChain(s: ImageSession): void {
  const items = s.layers.map((layer, depth) => {
    const colour = depth === 0 ? '#1c2127' : layerColour(depth);
    return h(
      'li',
      {},
      h(
        'div',
        { class: 'layer', style: `border-color:${colour}`, 'aria-label': `${depth === 0 ? 'top image' : `backing layer ${depth}`}: ${layer.filename}` },
        h('strong', {}, baseName(layer.filename)),
        `${layer.format}, ${formatSize(layer['virtual-size'])}${depth === 0 ? ' · top' : ` · layer ${depth}`}`,
      ),
    );
  });
  const last = s.layers[s.layers.length - 1]!;
  if (last['backing-filename'] && !last['backing-image']) {
    items.push(h('li', {}, h('div', { class: 'layer' }, h('strong', {}, last['backing-filename']), 'not opened')));
  }
  if (items.length === 1) items.push(h('li', { class: 'no-backing' }, h('span', { class: 'muted' }, 'no backing file')));
  byId('chain').replaceChildren(...items);
}

function renderSnapshots(info: QmpImageInfo): void {
  const snaps = info.snapshots ?? [];
  const box = byId('snapshots');
  if (snaps.length === 0) {
    box.replaceChildren(h('p', { class: 'muted' }, 'none'));
    return;
  }
  const clock = (sec: number, nsec: number) => {
    const t = sec + nsec / 1e9;
    const hh = Math.floor(t / 3600);
    const mm = Math.floor((t % 3600) / 60);
    const ss = (t % 60).toFixed(3).padStart(6, '0');
    return `${String(hh).padStart(4, '0')}:${String(mm).padStart(2, '0')}:${ss}`;
  };
  box.replaceChildren(
    h(
      'table',
      { class: 'snapshots' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'ID'), h('th', { scope: 'col' }, 'Tag'), h('th', { scope: 'col' }, 'VM size'), h('th', { scope: 'col' }, 'Date'), h('th', { scope: 'col' }, 'VM clock'))),
      h(
        'tbody',
        {},
        ...snaps.map((sn) =>
          h(
            'tr',
            {},
            h('td', {}, sn.id),
            h('td', {}, sn.name),
            h('td', {}, formatSize(sn['vm-state-size'])),
            h('td', {}, new Date(sn['date-sec'] * 1000).toLocaleString()),
            h('td', {}, clock(sn['vm-clock-sec'], sn['vm-clock-nsec'])),
          ),
        ),
      ),
    ),
  );
}
