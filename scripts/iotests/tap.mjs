/**
 * check's TAP verdicts: name → 'pass'|'fail'|'skip'. A skipped test is
 * "ok … # SKIP" with or without a reason after it (QEMU 7.2 prints none when
 * a test calls _notrun for an unsupported format), and with -j the
 * "# running" lines of parallel tests may run into each other unbroken.
 */
export function parseTap(stdout) {
  const results = new Map();
  for (const line of stdout.replace(/# running/g, '\n# running').split('\n')) {
    const m = /^(not ok|ok) \S+ (\S+)(\s+#\s*SKIP\b.*)?\s*$/.exec(line);
    if (!m) continue;
    results.set(m[2], m[3] !== undefined ? 'skip' : m[1] === 'ok' ? 'pass' : 'fail');
  }
  return results;
}
