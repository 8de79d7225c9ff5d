// The agent process's own figures, the first thing to look at for a dataplane in
// JavaScript, under the names prom-client's default metrics use (so existing
// Node.js dashboards read them): CPU, memory, heap, open files, event-loop lag
// and GC pauses. The event loop and GC are the main thread's; the workers'
// time is in twill_worker_* (metrics.ts).
import { monitorEventLoopDelay, PerformanceObserver, constants } from 'node:perf_hooks';
import { readdirSync } from 'node:fs';

export interface ProcessSample { name: string; help: string; type: 'counter' | 'gauge'; samples: [labels: string, value: number][] }

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/** Starts watching the event loop and GC; the returned function reads everything. */
export function processMetrics(): () => ProcessSample[] {
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const gc = new Map<string, { count: number; seconds: number }>();
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = GC_KINDS[((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? -1] ?? 'other';
      const g = gc.get(kind) ?? { count: 0, seconds: 0 };
      g.count++; g.seconds += e.duration / 1000;
      gc.set(kind, g);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
  return () => {
    const cpu = process.cpuUsage(), mem = process.memoryUsage();
    let fds = NaN;
    try { fds = readdirSync('/proc/self/fd').length; } catch { /* not Linux */ }
    const one = (name: string, help: string, type: ProcessSample['type'], v: number): ProcessSample => ({ name, help, type, samples: [['', v]] });
    const out: ProcessSample[] = [
      one('process_cpu_user_seconds_total', 'User CPU time spent, in seconds (all threads, workers included).', 'counter', cpu.user / 1e6),
      one('process_cpu_system_seconds_total', 'System CPU time spent, in seconds (all threads, workers included).', 'counter', cpu.system / 1e6),
      one('process_resident_memory_bytes', 'Resident memory size in bytes.', 'gauge', mem.rss),
      one('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds.', 'gauge', startSeconds),
      one('process_open_fds', 'Open file descriptors.', 'gauge', fds),
      one('nodejs_heap_size_used_bytes', 'Main thread V8 heap used, in bytes.', 'gauge', mem.heapUsed),
      one('nodejs_heap_size_total_bytes', 'Main thread V8 heap size, in bytes.', 'gauge', mem.heapTotal),
      one('nodejs_external_memory_bytes', 'Memory outside the V8 heap (SharedArrayBuffers and buffers among it), in bytes.', 'gauge', mem.external),
      { name: 'nodejs_eventloop_lag_seconds', help: 'Main thread event-loop delay since start, in seconds, by quantile (max: the worst).', type: 'gauge',
        samples: [['quantile="0.5"', lag.percentile(50) / 1e9], ['quantile="0.99"', lag.percentile(99) / 1e9], ['quantile="1"', lag.max / 1e9]] },
      { name: 'nodejs_gc_duration_seconds_total', help: 'Main thread time spent in garbage collection, in seconds, by kind.', type: 'counter',
        samples: [...gc].map(([k, g]) => [`kind="${k}"`, g.seconds]) },
      { name: 'nodejs_gc_runs_total', help: 'Main thread garbage collections, by kind.', type: 'counter',
        samples: [...gc].map(([k, g]) => [`kind="${k}"`, g.count]) },
    ];
    return out.filter((f) => f.samples.length > 0);
  };
}
