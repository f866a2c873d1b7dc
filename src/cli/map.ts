/** `blocktab map`: qemu-img map's options and both output formats. */
import { mapExtents, type MapEntry } from '../img/map.js';
import { closeNode } from '../block/open.js';
import { BlockError } from '../block/errors.js';
import { outputFormat, parseCommand, parseSize, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

/** printf("%#-16" PRIx64): hex with 0x (plain "0" for zero), left-aligned in 16 columns. */
const hex16 = (n: number) => (n === 0 ? '0' : '0x' + n.toString(16)).padEnd(16);

function jsonEntry(e: MapEntry): string {
  let s = `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== undefined) s += `, "offset": ${e.offset}`;
  return s + '}';
}

export async function runMap(args: string[], out: Output): Promise<number> {
  const p = parseCommand('map', args, {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    'start-offset': { type: 'string', short: 's' },
    'max-length': { type: 'string', short: 'l' },
    'force-share': { type: 'boolean', short: 'U' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const fmt = outputFormat(p);
  const startText = str(p, 'start-offset');
  const lenText = str(p, 'max-length');
  const start = startText === undefined ? 0 : parseSize('start offset', startText);
  const maxLength = lenText === undefined ? undefined : parseSize('max length', lenText);

  const bs = await openForCli(p.positionals[0]!, { format: str(p, 'format') });
  // Output is buffered in pieces: a fragmented image has millions of entries.
  let buf = '';
  const emit = (s: string) => {
    buf += s;
    if (buf.length > 1 << 16) {
      out.stdout(buf);
      buf = '';
    }
  };
  try {
    if (fmt === 'human') emit(`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`);
    else emit('[');
    let first = true;
    for await (const e of mapExtents(bs, { start, maxLength, human: fmt === 'human' })) {
      if (fmt === 'json') {
        emit((first ? '' : ',\n') + jsonEntry(e));
      } else {
        if (e.data && e.offset === undefined) {
          throw new BlockError('ENOTSUP', 'File contains external, encrypted or compressed clusters.');
        }
        if (e.data && !e.zero) emit(`${hex16(e.start)}${hex16(e.length)}${hex16(e.offset ?? 0)}${e.filename ?? ''}\n`);
      }
      first = false;
    }
    if (fmt === 'json') emit(']\n');
  } finally {
    out.stdout(buf);
    await closeNode(bs);
  }
  return 0;
}
