// Minimal typings for the parts of benchmark.js (CommonJS) that bench/micro.ts uses.
declare module 'benchmark' {
  namespace Benchmark {
    interface Options {
      maxTime?: number; // seconds of sampling
      minTime?: number;
      minSamples?: number;
      initCount?: number;
      delay?: number;
      async?: boolean;
    }
    interface Stats {
      mean: number; // seconds per call
      rme: number; // relative margin of error, %
      deviation: number;
      sample: number[];
    }
  }
  class Benchmark {
    constructor(name: string, fn: () => void, options?: Benchmark.Options);
    run(options?: { async?: boolean }): Benchmark;
    readonly name: string;
    readonly hz: number; // calls per second
    readonly stats: Benchmark.Stats;
    readonly count: number;
    readonly cycles: number;
    readonly error?: unknown;
    readonly aborted: boolean;
  }
  export = Benchmark;
}
