/**
 * Opening images for the CLI: the host file system and, for http(s) URLs, the
 * web as storage (a local image may name a URL as its backing file, as with
 * qemu-img), read-only by default, and qemu-img's "Could not open 'NAME':
 * reason" wording for failures.
 */
import '../node.js';
import { FileStorage } from '../protocols/file.js';
import { HttpStorage } from '../protocols/http.js';
import { CompositeStorage } from '../protocols/browser-composite.js';
import { BlockError, isBlockError } from '../block/errors.js';
import type { OpenImageOptions, Storage } from '../block/open.js';
import { openTree } from '../block/open-tree.js';
import type { BlockNode } from '../block/node.js';
import { imageSpec, type ImageSpec } from './objects.js';
import { curlOptions } from './http-options.js';
import { cliWarn } from './progname.js';
import { UsageError } from './args.js';

const files = new FileStorage();

function withWeb(http: HttpStorage): CompositeStorage {
  return new CompositeStorage(files, http, { allowRemoteBacking: true });
}

export const storage: Storage = withWeb(new HttpStorage(undefined));

/** The storage for one image: curl options (`file.readahead`, `file.timeout`…) make an HTTP storage of their own. */
function storageFor(spec: ImageSpec): Storage {
  const d = spec.fileDriver;
  if (d !== 'http' && d !== 'https') return storage;
  if (!new RegExp(`^${d}://`, 'i').test(spec.filename)) {
    throw new UsageError(`The '${d}' driver needs a ${d}:// URL, not '${spec.filename}'`);
  }
  return withWeb(new HttpStorage(undefined, curlOptions(d, spec.fileOptions ?? {})));
}

export async function openForCli(name: string, options: OpenImageOptions & { readOnly?: boolean; plainName?: boolean }): Promise<BlockNode> {
  // `--image-opts` / json: names carry the file, the driver and its options (luks's key-secret).
  const spec = imageSpec(name, options.plainName ? false : undefined);
  const filename = spec.filename;
  const where = storageFor(spec);
  try {
    return await openTree(where, spec.tree, {
      readOnly: options.readOnly ?? true,
      backing: options.backing,
      format: options.format,
      driverOptions: options.driverOptions,
      warn: options.warn ?? cliWarn,
    });
  } catch (e) {
    let why = isBlockError(e) ? e.message : e instanceof Error ? e.message : String(e);
    // Driver messages start with the image name; qemu-img's wording names it once already.
    if (why.startsWith(`${filename}: `)) why = why.slice(filename.length + 2);
    throw new BlockError(isBlockError(e) ? e.code : 'EIO', `Could not open '${filename}': ${why}`, { cause: e });
  }
}
