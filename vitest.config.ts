import { defineConfig } from 'vitest/config';
import SummaryLine from './test/summary-reporter.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Network-namespace tests share the machine's kernel: run files one at a time.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', new SummaryLine()],
  },
});
