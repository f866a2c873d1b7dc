import { execFileSync } from 'node:child_process';

/** The differential suite needs Debian's qemu-utils; fail clearly without it. */
export default function setup(): void {
  for (const tool of ['qemu-img', 'qemu-io']) {
    try {
      execFileSync(tool, ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(
        `${tool} was not found. The interop tests compare blocktab with QEMU's tools: install them with ` +
          `'sudo apt-get install qemu-utils' (Debian/Ubuntu), or run 'bash .ci/run', which installs them.`,
      );
    }
  }
}
