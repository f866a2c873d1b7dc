import { describe, expect, it } from 'vitest';
import { dumpHuman, qdictKeys, toJsonPretty } from '../../src/img/qobject.js';

// Orders as qemu-img 7.2 printed them for `info --output=json` (keys given here in QAPI schema order).
describe('QDict key order', () => {
  it('matches qemu-img info for ImageInfo keys', () => {
    const keys = qdictKeys({
      filename: 'a', format: 'qcow2', 'dirty-flag': false, 'actual-size': 1, 'virtual-size': 2, 'cluster-size': 3,
      'backing-filename': 'b', 'full-backing-filename': 'b', 'backing-filename-format': 'qcow2', snapshots: [], 'format-specific': {},
    });
    expect(keys).toEqual([
      'backing-filename-format', 'snapshots', 'virtual-size', 'filename', 'cluster-size', 'format', 'actual-size',
      'format-specific', 'full-backing-filename', 'backing-filename', 'dirty-flag',
    ]);
  });
  it('matches qemu-img info for qcow2 format-specific and snapshot keys', () => {
    expect(qdictKeys({ compat: '1.1', 'compression-type': 'zlib', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false }))
      .toEqual(['compat', 'compression-type', 'lazy-refcounts', 'refcount-bits', 'corrupt', 'extended-l2']);
    expect(qdictKeys({ id: '1', name: 's', 'vm-state-size': 0, 'date-sec': 0, 'date-nsec': 0, 'vm-clock-sec': 0, 'vm-clock-nsec': 0, icount: 0 }))
      .toEqual(['icount', 'vm-clock-nsec', 'name', 'date-sec', 'date-nsec', 'vm-clock-sec', 'id', 'vm-state-size']);
  });
});

describe('printers', () => {
  it('pretty-prints JSON as QEMU does', () => {
    expect(toJsonPretty({ a: [], b: {}, c: [{ d: 'x"\u00e9' }] })).toBe(
      '{\n    "a": [],\n    "b": {},\n    "c": [\n        {\n            "d": "x\\"\\u00E9"\n        }\n    ]\n}',
    );
  });
  it('dumps human key: value lines with dashes as spaces', () => {
    expect(dumpHuman({ 'lazy-refcounts': false, list: [1, { x: 'y' }] }, 1)).toBe(
      '    list:\n        [0]: 1\n        [1]:\n            x: y\n    lazy refcounts: false\n',
    );
  });
});
