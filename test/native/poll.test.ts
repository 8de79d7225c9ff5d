import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { native } from '../../dataplane/native/index.js';
import { udpOnRandomPort } from './helpers.js';

describe('native poll + eventfd', () => {
  it('blocks for the timeout, wakes on a signal, and drains', () => {
    const efd = native.eventfd();
    const { fd: quiet } = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, {}));
    try {
      const fds = Int32Array.of(quiet, efd);
      const ready = new Int32Array(2).fill(7);
      let t = performance.now();
      expect(native.poll(fds, 2, ready, 50)).toBe(0);
      expect(performance.now() - t).toBeGreaterThanOrEqual(45);
      expect([...ready]).toEqual([0, 0]);

      native.eventfdSignal(efd);
      native.eventfdSignal(efd);
      t = performance.now();
      expect(native.poll(fds, 2, ready, 1000)).toBe(1);
      expect(performance.now() - t).toBeLessThan(500); // at once, not after the 1000 ms timeout (loose: CI machines stall)
      expect([...ready]).toEqual([0, 1]);

      native.eventfdDrain(efd);
      expect(native.poll(fds, 2, ready, 0)).toBe(0);
      expect(ready[1]).toBe(0);
      native.eventfdDrain(efd); // draining an empty doorbell is fine
    } finally {
      native.close(efd);
      native.close(quiet);
    }
  });
});

// The calling thread's scheduling policy (/proc/thread-self/stat field 41): 0 SCHED_OTHER, 1 SCHED_FIFO.
function policy(): number {
  const stat = readFileSync('/proc/thread-self/stat', 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
}

describe('native poll: busy polling and how a thread waits', () => {
  afterEach(() => native.waitPolicy(0, 0, 0)); // this test thread back to a plain normal thread

  it('spins for up to spinUs, then sleeps, and says so in wait[]', () => {
    const efd = native.eventfd();
    try {
      native.waitPolicy(0, 0, 0);
      const fds = Int32Array.of(efd), ready = new Int32Array(1), wait = new Float64Array(4);
      // Nothing comes: the spin runs out (2), then it sleeps out the 20 ms timeout.
      expect(native.poll(fds, 1, ready, 20, 2000, wait)).toBe(0);
      expect(wait[0]).toBe(2);
      expect(wait[2] - wait[1]).toBeGreaterThanOrEqual(20);
      expect(wait[3]).toBeGreaterThan(0); // the spin's CPU time, µs
      expect(wait[3]).toBeLessThan(100_000);
      // Something is there: the first poll of the spin catches it (1).
      native.eventfdSignal(efd);
      expect(native.poll(fds, 1, ready, 1000, 2000, wait)).toBe(1);
      expect(wait[0]).toBe(1);
      native.eventfdDrain(efd);
      // No spin asked for: 0.
      expect(native.poll(fds, 1, ready, 0, 0, wait)).toBe(0);
      expect(wait[0]).toBe(0);
      expect(() => native.poll(fds, 1, ready, 0, 0, new Float64Array(2))).toThrow(/Float64Array/);
    } finally {
      native.close(efd);
    }
  });

  it('cuts a spin short once the thread was off the CPU longer than gapUs', () => {
    const efd = native.eventfd();
    try {
      // 1 µs: every sched_yield and poll between two looks at the clock is longer than that.
      native.waitPolicy(1, 0, 0);
      const wait = new Float64Array(4);
      expect(native.poll(Int32Array.of(efd), 1, new Int32Array(1), 10, 100_000, wait)).toBe(0);
      expect(wait[0]).toBe(3);
      expect(wait[2] - wait[1]).toBeLessThan(90); // neither the 100 ms spin nor much more than the 10 ms sleep
    } finally {
      native.close(efd);
    }
  });

  it('waits as SCHED_FIFO with a blockPriority, and spins as a normal thread', () => {
    const efd = native.eventfd();
    try {
      native.waitPolicy(0, 10, 0);
      expect(policy()).toBe(1);
      const fds = Int32Array.of(efd), ready = new Int32Array(1), wait = new Float64Array(4);
      native.eventfdSignal(efd);
      expect(native.poll(fds, 1, ready, 1000, 1000, wait)).toBe(1); // caught while spinning: still normal
      expect(wait[0]).toBe(1);
      expect(policy()).toBe(0);
      native.eventfdDrain(efd);
      expect(native.poll(fds, 1, ready, 5, 500, wait)).toBe(0); // ran out, then slept: real-time again
      expect(policy()).toBe(1);
      native.waitPolicy(0, 0, 0);
      expect(policy()).toBe(0);
      expect(() => native.waitPolicy(0, 100, 0)).toThrow(RangeError);
    } finally {
      native.close(efd);
    }
  });

  it('counts the machine\'s runnable tasks, this one included', () => {
    expect(native.runnable()).toBeGreaterThanOrEqual(1);
  });
});
