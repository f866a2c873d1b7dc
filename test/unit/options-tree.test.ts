/**
 * The one options parser for json: names, --image-opts lists and protocol
 * prefixes (src/block/options-tree.ts), and blkdebug's config file syntax.
 */
import { describe, expect, it } from 'vitest';
import { crumple, flatten, mergeTrees, parseJsonName, parseKeyValueList, parseProtocolFilename } from '../../src/block/options-tree.js';
import { parseBlkdebugConfig } from '../../src/filters/blkdebug.js';

describe('options tree', () => {
  it('nests dotted keys and turns numbered dicts into lists (qdict_crumple)', () => {
    const t = crumple(parseKeyValueList('driver=qcow2,file.driver=blkdebug,file.inject-error.0.event=l2_load,file.inject-error.1.event=read_aio,file.image.filename=a,,b'));
    expect(t).toEqual({ driver: 'qcow2', file: { driver: 'blkdebug', 'inject-error': [{ event: 'l2_load' }, { event: 'read_aio' }], image: { filename: 'a,b' } } });
    expect(crumple(flatten(t))).toEqual(t);
  });

  it('reads json: names with nested and dotted keys alike', () => {
    expect(parseJsonName('json:{"driver":"raw","file.driver":"null-co","file":{"size":1024}}')).toEqual({ driver: 'raw', file: { driver: 'null-co', size: 1024 } });
    expect(() => parseJsonName('json:{"driver":')).toThrow(/Could not parse the JSON options/);
    expect(() => crumple({ file: 'x', 'file.driver': 'y' })).toThrow(/Cannot mix scalar and non-scalar/);
  });

  it('merges -o options over a name', () => {
    expect(mergeTrees({ driver: 'qcow2', file: { filename: 'a' } }, { file: { driver: 'file' } })).toEqual({ driver: 'qcow2', file: { filename: 'a', driver: 'file' } });
  });

  it('expands protocol prefixes in file names', () => {
    expect(parseProtocolFilename('blkdebug:/tmp/c.conf:/tmp/img')).toEqual({ driver: 'blkdebug', config: '/tmp/c.conf', image: '/tmp/img' });
    expect(parseProtocolFilename('blkdebug::img')).toEqual({ driver: 'blkdebug', image: 'img' });
    expect(parseProtocolFilename('null-co://')).toEqual({ driver: 'null-co', filename: 'null-co://' });
    expect(parseProtocolFilename('file:/x')).toEqual({ driver: 'file', filename: '/x' });
    expect(parseProtocolFilename('/plain/name')).toBeUndefined();
    expect(() => parseProtocolFilename('blkdebug:nocolon')).toThrow('blkdebug requires both config file and image path');
  });

  it('parses blkdebug config files and names the bad line', () => {
    const c = parseBlkdebugConfig('# rules\n[inject-error]\nevent = "l2_load"\nonce = "on"\n\n[set-state]\nevent = "l1_update"\nstate = "1"\nnew_state = "2"\n', 'x.conf');
    expect(c).toEqual({ inject: [{ event: 'l2_load', once: 'on' }], setState: [{ event: 'l1_update', state: '1', new_state: '2' }] });
    expect(() => parseBlkdebugConfig('[inject-error]\nevent l2_load\n', 'x.conf')).toThrow('x.conf:2: Parse error');
    expect(() => parseBlkdebugConfig('[nope]\n', 'x.conf')).toThrow(/There is no option group 'nope'/);
  });
});
