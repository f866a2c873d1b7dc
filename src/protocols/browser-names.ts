/**
 * Names inside a browser storage namespace (OPFS directory, IndexedDB
 * database, a set of dropped files).
 *
 * An image stores the names of its backing and data files. Inside a browser
 * namespace those names must never reach outside it: a crafted image must not
 * be able to make us open another directory's files or fetch a URL. So every
 * name is normalised to slash-separated components below the namespace root:
 * `.` and empty components vanish, `..` climbs one level and is refused when
 * it would climb above the root, a leading `/` means the namespace root, and
 * anything that looks like a URL (`scheme:`) is refused.
 */
import { BlockError } from '../block/errors.js';
import { pathCombine } from '../block/open.js';

const SCHEME = /^[a-z][a-z0-9+.-]*:/i;

/**
 * Normalises `name` to components under the namespace root. `image` is the
 * image that referred to it (for messages; the name itself when opened directly).
 */
export function namespaceComponents(storage: string, image: string, name: string): string[] {
  const refuse = (why: string): never => {
    throw new BlockError('EPERM', `${image}: refusing to open '${name}': ${why} (outside the ${storage} namespace)`);
  };
  if (SCHEME.test(name)) refuse('a URL');
  if (name.includes('\0')) refuse('a NUL character in the name');
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) refuse("'..' climbs above the root");
      out.pop();
      continue;
    }
    out.push(part);
  }
  if (out.length === 0) throw new BlockError('EINVAL', `${image}: '${name}' does not name a file in the ${storage} namespace`);
  return out;
}

/** The normalised name ("dir/sub/file.img"). */
export function namespaceName(storage: string, image: string, name: string): string {
  return namespaceComponents(storage, image, name).join('/');
}

/** Storage.resolve for a namespace: QEMU's path_combine, then normalised and checked. */
export function namespaceResolve(storage: string, from: string, reference: string): string {
  return namespaceName(storage, from, pathCombine(from, reference));
}
