/**
 * Opening images for the CLI: the host file system as storage, read-only by
 * default, and qemu-img's "Could not open 'NAME': reason" wording for failures.
 */
import '../node.js';
import { FileStorage } from '../protocols/file.js';
import { BlockError, isBlockError } from '../block/errors.js';
import { openImage, type OpenImageOptions } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { imageSpec } from './objects.js';

export const storage = new FileStorage();

export async function openForCli(name: string, options: OpenImageOptions & { readOnly?: boolean }): Promise<BlockNode> {
  // `--image-opts` / json: names carry the file, the driver and its options (luks's key-secret).
  const spec = imageSpec(name);
  const filename = spec.filename;
  try {
    return await openImage(storage, filename, {
      readOnly: true,
      ...options,
      format: spec.format ?? options.format,
      driverOptions: { ...options.driverOptions, ...spec.driverOptions },
    });
  } catch (e) {
    let why = isBlockError(e) ? e.message : e instanceof Error ? e.message : String(e);
    // Driver messages start with the image name; qemu-img's wording names it once already.
    if (why.startsWith(`${filename}: `)) why = why.slice(filename.length + 2);
    throw new BlockError(isBlockError(e) ? e.code : 'EIO', `Could not open '${filename}': ${why}`, { cause: e });
  }
}
