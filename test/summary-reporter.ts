// Ends the run with one plain line, "N passed, N failed[, N skipped]", that CI reads.
// Printed on process exit so it comes after vitest's own summary.
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryLine implements Reporter {
  private line = '';
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0, failed = 0, skipped = 0;
    for (const m of modules) {
      let failedHere = 0;
      for (const t of m.children.allTests()) {
        const s = t.result().state;
        if (s === 'passed') passed++;
        else if (s === 'failed') { failed++; failedHere++; }
        else skipped++;
      }
      // A file that failed with no test failing: it did not load, or a hook
      // (beforeAll, afterAll) threw and its tests were skipped. It counts.
      if (m.state() === 'failed' && failedHere === 0) failed++;
    }
    if (!this.line) process.once('exit', () => process.stdout.write(this.line));
    this.line = `\ntests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
  }
}
