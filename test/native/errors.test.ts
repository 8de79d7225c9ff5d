import { describe, expect, it } from 'vitest';
import { native } from '../../dataplane/native/index.js';
import { udpOnRandomPort } from './helpers.js';

function thrown(f: () => unknown): Error & { code?: string } {
  try {
    f();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

describe('native errors', () => {
  it('tunOpen with a name longer than 15 bytes fails like TUNSETIFF', () => {
    const e = thrown(() => native.tunOpen('twt-this-name-is-way-too-long', {}));
    expect(e).toBeInstanceOf(Error);
    expect(e.message).toBe('TUNSETIFF: EINVAL');
    expect(e.code).toBe('EINVAL');
  });

  it('ifIndex of a missing interface throws ENODEV', () => {
    const e = thrown(() => native.ifIndex('nope0'));
    expect(e.message).toBe('if_nametoindex: ENODEV');
    expect(e.code).toBe('ENODEV');
    expect(native.ifIndex('lo')).toBe(1);
  });

  it('udpOpen on a port in use without reusePort throws bind: EADDRINUSE', () => {
    const { fd, port } = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, {}));
    try {
      const e = thrown(() => native.udpOpen('127.0.0.1', port, {}));
      expect(e.message).toBe('bind: EADDRINUSE');
      expect(e.code).toBe('EADDRINUSE');
    } finally {
      native.close(fd);
    }
  });

  it('reusePort sockets share a port', () => {
    const a = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, { reusePort: true }));
    const b = native.udpOpen('127.0.0.1', a.port, { reusePort: true });
    native.close(a.fd);
    native.close(b);
  });

  it('close of a bad fd throws EBADF', () => {
    expect(thrown(() => native.close(1 << 30)).code).toBe('EBADF');
  });

  it('argument type errors throw TypeError, bad ranges RangeError', () => {
    expect(thrown(() => native.tunOpen(42 as unknown as string, {}))).toBeInstanceOf(TypeError);
    expect(thrown(() => native.udpOpen('127.0.0.1', 1, { gro: 'yes' as unknown as boolean }))).toBeInstanceOf(TypeError);
    const arena = new Uint8Array(new SharedArrayBuffer(100));
    const i32 = new Int32Array(4);
    expect(thrown(() => native.tunRead(0, arena as unknown as Uint8Array, new Uint32Array(4) as unknown as Int32Array, i32, 4, 10))).toBeInstanceOf(TypeError);
    // Slot 1 would run past the arena: rejected before any system call.
    expect(thrown(() => native.tunRead(0, arena, Int32Array.of(0, 95), i32, 2, 10))).toBeInstanceOf(RangeError);
    expect(thrown(() => native.tunWrite(0, arena, Int32Array.of(0), Int32Array.of(10), Int32Array.of(3), 1))).toBeInstanceOf(RangeError);
  });
});
