/**
 * A folder of the disk as a zip, streamed. client-zip writes the archive
 * (stored entries, Zip64 past 4 GiB) and pulls each file from the worker in
 * chunks as it goes, so neither a file nor the folder is ever whole in page
 * memory: the zip goes to a file the user picked (File System Access API) or,
 * for a plain download, into a Blob that the browser spills to disk.
 *
 * Names come from the image, so every path component is made safe
 * (`safeName`): nothing in the archive can land outside the folder it is
 * extracted into. Symlinks and special files are left out, as are directories
 * that could not be read (a loop, a corrupt block); the caller gets the list.
 */
import { makeZip } from 'client-zip';
import { safeName, type BlocktabClient, type InspectTreeEntry, type InspectView } from '../client/index.js';

/** Bytes asked of the worker per read while zipping. */
const CHUNK = 8 * 1024 * 1024;

/** A path from the image ("a/../b", "x/y") as a safe "/"-separated zip entry name. */
export function zipEntryName(path: string): string {
  return path
    .split('/')
    .filter((p) => p !== '')
    .map(safeName)
    .join('/');
}

export interface ZipPlan {
  entries: InspectTreeEntry[];
  files: number;
  bytes: number;
  /** Paths left out, with why. */
  skipped: string[];
}

/** Lists the folder and decides what goes into its zip. */
export async function planZip(client: BlocktabClient, view: InspectView, partition: number | null, dir: string): Promise<ZipPlan> {
  const all = await client.inspectTree(view, partition, dir);
  const entries: InspectTreeEntry[] = [];
  const skipped: string[] = [];
  let files = 0;
  let bytes = 0;
  for (const e of all) {
    if (e.error !== undefined) skipped.push(`${e.path}: ${e.error}`);
    else if (e.type === 'file') {
      entries.push(e);
      files++;
      bytes += e.size;
    } else if (e.type === 'dir') entries.push(e);
    else skipped.push(`${e.path}: ${e.type === 'symlink' ? 'a symbolic link' : 'not a regular file'}`);
  }
  return { entries, files, bytes, skipped };
}

async function* fileChunks(client: BlocktabClient, view: InspectView, partition: number | null, path: string, size: number): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < size; off += CHUNK) {
    const chunk = await client.inspectRead(view, partition, path, off, Math.min(CHUNK, size - off));
    if (chunk.length === 0) throw new Error(`${path}: the file ended at ${off} of ${size} bytes`);
    yield chunk;
  }
}

/** The zip of a planned folder as a byte stream; files are read while the stream is consumed. */
export function zipStream(client: BlocktabClient, view: InspectView, partition: number | null, dir: string, plan: ZipPlan, onFile?: (done: number) => void): ReadableStream<Uint8Array> {
  const base = dir.replace(/\/+$/, '');
  async function* inputs() {
    let done = 0;
    for (const e of plan.entries) {
      const name = zipEntryName(e.path);
      const lastModified = e.mtime !== null ? new Date(e.mtime * 1000) : undefined;
      if (e.type === 'dir') {
        yield { name: `${name}/`, lastModified };
        continue;
      }
      yield { name, lastModified, size: e.size, input: fileChunks(client, view, partition, `${base}/${e.path}`, e.size) };
      onFile?.(++done);
    }
  }
  return makeZip(inputs());
}
