// Ends the run with one plain line, "N passed, N failed[, N skipped]", that CI reads.
// Printed on process exit so it comes after vitest's own summary.
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryLine implements Reporter {
  private line = '';
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0, failed = 0, skipped = 0;
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const s = t.result().state;
        if (s === 'passed') passed++;
        else if (s === 'failed') failed++;
        else skipped++;
      }
      if (m.state() === 'failed' && m.children.size === 0) failed++; // a file that failed to load
    }
    if (!this.line) process.once('exit', () => process.stdout.write(this.line));
    this.line = `\ntests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
  }
}
