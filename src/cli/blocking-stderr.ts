/**
 * Writes to the process's stderr that wait for the reader, as qemu-img's
 * unbuffered fprintf does. Node queues a pipe's writes in memory while the
 * reader is slower (an iotest's `2>&1 | filter`), so the millions of lines a
 * check can print would pile up there: these go to fd 2 with writeSync,
 * retried while the pipe is full. Anything already queued on process.stderr
 * is left to go first (the chunk joins that queue).
 */
import { fs } from '../protocols/node-fs.js';

const pause = new Int32Array(new SharedArrayBuffer(4));

export function writeStderrBlocking(s: string): void {
  if (process.stderr.writableLength > 0) {
    process.stderr.write(s);
    return;
  }
  let buf = Buffer.from(s);
  while (buf.length) {
    try {
      buf = buf.subarray(fs.writeSync(2, buf));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // The reader went away: nothing more can be shown (qemu-img would get SIGPIPE).
      if (code === 'EPIPE') return;
      if (code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}
