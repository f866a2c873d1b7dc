/**
 * Getting bytes out of the worker onto the user's disk: a download built from
 * chunked reads, or a file the user picked with the File System Access API.
 */
import type { BlocktabClient } from '../client/index.js';

/** Read size when copying an image out of the worker. */
const CHUNK = 8 * 1024 * 1024;
/** Largest image we assemble in page memory for a download. */
export const MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3;

export type SaveFilePicker = (opts: { suggestedName?: string }) => Promise<FileSystemFileHandle>;

export function saveFilePicker(): SaveFilePicker | undefined {
  const w = window as unknown as { showSaveFilePicker?: SaveFilePicker };
  return typeof w.showSaveFilePicker === 'function' ? w.showSaveFilePicker.bind(window) : undefined;
}

/** Reads the file `filename` of `storage` byte for byte (opened as raw) and offers it as a download. */
export async function downloadFile(
  client: BlocktabClient,
  storage: string,
  filename: string,
  downloadName: string,
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const node = await client.open(storage, filename, { format: 'raw', readOnly: true });
  try {
    const size = await client.size(node);
    if (size > MAX_DOWNLOAD_BYTES) {
      throw Object.assign(new Error(`${downloadName} is ${size} bytes: too large to assemble for a download in the page; save it to a file you choose instead`), {
        code: 'EFBIG',
      });
    }
    const parts: BlobPart[] = [];
    for (let off = 0; off < size; off += CHUNK) {
      if (signal?.aborted) throw Object.assign(new Error(`export of ${downloadName} cancelled by the user`), { code: 'ECANCELED' });
      parts.push(await client.read(node, off, Math.min(CHUNK, size - off)));
      onProgress?.(Math.min(size, off + CHUNK), size);
    }
    offerDownload(new Blob(parts, { type: 'application/octet-stream' }), downloadName);
  } finally {
    await client.close(node);
  }
}

/** Starts the browser's download of `blob` (a File from OPFS is read from disk) as `name`. */
export function offerDownload(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference once started; free ours a little later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
