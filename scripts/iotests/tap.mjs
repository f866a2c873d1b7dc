/**
 * check's TAP verdicts: name → 'pass'|'fail'|'skip'. A skipped test is
 * "ok … # SKIP" with or without a reason after it (QEMU 7.2 prints none when
 * a test calls _notrun for an unsupported format), and with -j the
 * "# running" lines and verdicts of parallel tests may run into each other
 * unbroken ("ok raw 033ok raw 063": two verdicts, both passes).
 */
export function parseTap(stdout) {
  const results = new Map();
  const separated = stdout
    .replace(/# running/g, '\n# running')
    .replace(/(?<=\S)(not ok|ok) (?=\S+ \S+)/g, '\n$1 ');
  for (const line of separated.split('\n')) {
    const m = /^(not ok|ok) \S+ (\S+)(\s+#\s*SKIP\b.*)?\s*$/.exec(line);
    if (!m) continue;
    results.set(m[2], m[3] !== undefined ? 'skip' : m[1] === 'ok' ? 'pass' : 'fail');
  }
  return results;
}
