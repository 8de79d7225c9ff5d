import { describe, expect, it } from 'vitest';
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
