// The agent's two endpoints hold their connections within bounds (issue 15: the
// metrics port kept 2,000 idle connections from one pod). The HTTP /metrics
// server, on loopback with the limits the agent runs with: idle connections,
// slow senders and kept-alive connections are closed after their timeouts, a
// source over its share and connections over the cap are closed at once, and a
// scrape still works. The unix socket the CNI plugin uses: idle connections
// closed, a cap, a line too long refused, a slow request still answered, and
// requests of one connection handled a bounded number at a time.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { pino } from 'pino';
import { METRICS_LIMITS, serveMetrics } from '../../agent/metrics.js';
import { SOCKET_LIMITS, request, serve } from '../../agent/socket.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client connection that records when it opened and when the server closed it. */
interface Conn { sock: net.Socket; openedAt: number; closedAt?: number; data: string }

function connect(opts: net.NetConnectOpts): Promise<Conn> {
  return new Promise((resolve) => {
    const c: Conn = { sock: net.connect(opts), openedAt: Date.now(), data: '' };
    c.sock.setEncoding('utf8');
    c.sock.on('data', (d: string) => (c.data += d));
    c.sock.on('error', () => undefined);
    c.sock.on('close', () => { c.closedAt ??= Date.now(); resolve(c); });
    c.sock.on('connect', () => { c.openedAt = Date.now(); resolve(c); });
  });
}

async function openMany(n: number, opts: net.NetConnectOpts): Promise<Conn[]> {
  const out: Conn[] = [];
  for (let i = 0; i < n; i++) out.push(await connect(opts)); // one by one: the server has counted each before the next
  await sleep(100); // and has had the chance to close any it refuses
  return out;
}

async function untilClosed(conns: Conn[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (conns.some((c) => c.closedAt === undefined) && Date.now() < deadline) await sleep(50);
}

const open = (conns: Conn[]) => conns.filter((c) => c.closedAt === undefined).length;
const lifetimes = (conns: Conn[]) => conns.map((c) => (c.closedAt ?? Infinity) - c.openedAt);

describe('GET /metrics over HTTP', () => {
  let server: http.Server;
  let port = 0;
  const L = METRICS_LIMITS;
  const tcp = (localAddress: string): net.NetConnectOpts => ({ host: '127.0.0.1', port, localAddress });

  function scrape(localAddress = '127.0.0.1'): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/metrics', localAddress, agent: false, timeout: 3000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('timeout', () => req.destroy(new Error('scrape timed out')));
      req.on('error', reject);
    });
  }

  beforeAll(async () => {
    server = serveMetrics('127.0.0.1:0', () => 'twill_test_metric 1\n', pino({ level: 'silent' }));
    await new Promise<void>((r) => server.once('listening', () => r()));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('the agent\'s limits are a few connections for a few seconds', () => {
    expect(L.maxConnections).toBeLessThanOrEqual(64);
    expect(L.perSource).toBeLessThan(L.maxConnections);
    for (const ms of [L.headersMs, L.idleMs, L.keepAliveMs]) expect(ms).toBeLessThanOrEqual(5000);
    expect(L.requestMs).toBeLessThanOrEqual(10_000);
    expect(server.maxConnections).toBe(L.maxConnections);
  });

  test('silent connections, a slow sender and a kept-alive connection are closed after their timeouts; a scrape works meanwhile', async () => {
    const silent = await openMany(10, tcp('127.0.0.2'));
    // Sends a header line every 500 ms: never idle, so only the headers deadline ends it.
    const slow = await connect(tcp('127.0.0.3'));
    slow.sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => { if (!slow.sock.destroyed) slow.sock.write('X-Slow: 1\r\n'); }, 500);
    // One full request, answered, then nothing: keep-alive.
    const kept = await connect(tcp('127.0.0.4'));
    kept.sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
    try {
      await sleep(1000);
      expect(open(silent)).toBe(10); // not closed on sight: the timeouts close them
      expect(slow.closedAt).toBeUndefined();
      expect(kept.data).toMatch(/^HTTP\/1\.1 200 OK/);
      const r = await scrape();
      expect(r.status).toBe(200);
      expect(r.body).toBe('twill_test_metric 1\n');
      await untilClosed([...silent, slow, kept], L.requestMs + 3000);
      const t = { silent: lifetimes(silent), slow: lifetimes([slow])[0], kept: lifetimes([kept])[0] };
      console.log(`closed after (ms): silent ${Math.min(...t.silent)}-${Math.max(...t.silent)}, slow sender ${t.slow}, kept-alive ${t.kept}`);
      for (const ms of t.silent) expect(ms).toBeLessThanOrEqual(Math.max(L.headersMs, L.idleMs) + 2 * L.checkMs + 500);
      expect(t.slow).toBeGreaterThanOrEqual(L.headersMs - 100);
      expect(t.slow).toBeLessThanOrEqual(L.headersMs + 2 * L.checkMs + 500);
      expect(slow.data).toMatch(/^HTTP\/1\.1 408/); // Node answers a headers timeout with 408
      expect(t.kept).toBeLessThanOrEqual(L.keepAliveMs + 2000); // Node gives kept-alive sockets 1 s beyond keepAliveTimeout
      const n = await new Promise<number>((res) => server.getConnections((_e, k) => res(k)));
      expect(n).toBe(0);
    } finally {
      clearInterval(drip);
      for (const c of [...silent, slow, kept]) c.sock.destroy();
    }
  });

  test('a source over its share and connections over the cap are closed at once; the timeouts free them again', async () => {
    const all: Conn[] = [];
    try {
      // One source takes its share; one more from it is closed at once, while another source scrapes.
      const mine = await openMany(L.perSource, tcp('127.0.0.2'));
      all.push(...mine);
      expect(open(mine)).toBe(L.perSource);
      const extra = await openMany(1, tcp('127.0.0.2'));
      all.push(...extra);
      expect(lifetimes(extra)[0]).toBeLessThan(500);
      expect((await scrape('127.0.0.1')).status).toBe(200);
      // More sources up to the cap; the next connection, from anyone, is closed at once.
      const sources = Math.ceil(L.maxConnections / L.perSource);
      for (let k = 1; k < sources; k++) all.push(...(await openMany(Math.min(L.perSource, L.maxConnections - k * L.perSource), tcp(`127.0.0.${2 + k}`))));
      expect(open(all)).toBe(L.maxConnections);
      const over = await openMany(3, tcp('127.0.0.100'));
      all.push(...over);
      for (const ms of lifetimes(over)) expect(ms).toBeLessThan(500);
      await expect(scrape('127.0.0.101')).rejects.toThrow(); // at the cap, a scrape waits for the timeouts too
      console.log(`open at the cap: ${open(all)}; over the cap closed after (ms): ${lifetimes(over).join(', ')}`);
      // Nobody closes anything: the idle timeout does, and scrapes work again.
      await untilClosed(all, L.idleMs + 2 * L.checkMs + 1000);
      expect(open(all)).toBe(0);
      const r = await scrape('127.0.0.101');
      expect(r.status).toBe(200);
    } finally {
      for (const c of all) c.sock.destroy();
    }
  });
});

describe('the agent\'s unix socket', () => {
  let dir = '';
  beforeAll(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'twt-sock-')); });
  afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  async function withServer(handler: (req: Record<string, unknown>) => Promise<unknown>, limits: typeof SOCKET_LIMITS, body: (sock: string) => Promise<void>): Promise<void> {
    const sock = path.join(dir, `agent-${Math.random().toString(16).slice(2)}.sock`);
    const server = serve(sock, handler, limits);
    await new Promise<void>((r) => server.once('listening', () => r()));
    try {
      await body(sock);
    } finally {
      await new Promise((r) => server.close(r));
    }
  }
  const status = async (req: Record<string, unknown>) => ({ op: req.op, pid: process.pid });

  test('silent connections are closed after the idle timeout; over the cap at once, and request() then fails fast', async () => {
    const L = SOCKET_LIMITS;
    await withServer(status, L, async (sock) => {
      const idle = await openMany(L.maxConnections, { path: sock });
      const over = await openMany(2, { path: sock });
      try {
        expect(open(idle)).toBe(L.maxConnections);
        for (const ms of lifetimes(over)) expect(ms).toBeLessThan(500);
        const t0 = Date.now();
        const err = await request(sock, { op: 'status' }).then(() => undefined, (e: NodeJS.ErrnoException) => e);
        expect(['ECONNRESET', 'EPIPE']).toContain(err?.code); // either way the CNI plugin answers TRY_AGAIN_LATER, and the runtime retries
        expect(Date.now() - t0).toBeLessThan(1000);
        await untilClosed(idle, L.idleMs + 2000);
        const t = lifetimes(idle);
        console.log(`unix socket: ${L.maxConnections} silent connections closed after ${Math.min(...t)}-${Math.max(...t)} ms`);
        for (const ms of t) { expect(ms).toBeGreaterThanOrEqual(L.idleMs - 100); expect(ms).toBeLessThanOrEqual(L.idleMs + 1000); }
        expect(await request(sock, { op: 'status' })).toEqual({ op: 'status', pid: process.pid });
      } finally {
        for (const c of [...idle, ...over]) c.sock.destroy();
      }
    });
  });

  test('a request slower than the idle timeout is still answered; the connection then idles out', async () => {
    const L = { ...SOCKET_LIMITS, idleMs: 300 };
    await withServer(async (req) => { await sleep(1000); return req.op; }, L, async (sock) => {
      const c = await connect({ path: sock });
      c.sock.write('{"op":"slow"}\n');
      await untilClosed([c], 3000);
      expect(c.data).toBe('{"ok":true,"result":"slow"}\n');
      expect(lifetimes([c])[0]).toBeGreaterThanOrEqual(1000 + L.idleMs - 50);
      expect(lifetimes([c])[0]).toBeLessThan(1000 + L.idleMs + 500);
    });
  });

  test('a line longer than the limit is refused and its connection closed; others are still served', async () => {
    const L = SOCKET_LIMITS;
    await withServer(status, L, async (sock) => {
      const c = await connect({ path: sock });
      const chunk = 'x'.repeat(64 * 1024);
      for (let sent = 0; sent <= L.maxLineBytes && !c.sock.destroyed; sent += chunk.length) c.sock.write(chunk);
      await untilClosed([c], 3000);
      expect(c.closedAt).toBeDefined();
      expect(JSON.parse(c.data.split('\n')[0])).toEqual({ ok: false, error: `request longer than ${L.maxLineBytes} bytes` });
      expect(await request(sock, { op: 'status' })).toEqual({ op: 'status', pid: process.pid });
    });
  });

  test('requests pipelined on one connection are handled at most maxPending at a time, and all answered', async () => {
    const L = SOCKET_LIMITS;
    let now = 0, most = 0;
    const handler = async (req: Record<string, unknown>) => { now++; most = Math.max(most, now); await sleep(5); now--; return req.n; };
    await withServer(handler, L, async (sock) => {
      const c = await connect({ path: sock });
      c.sock.write(Array.from({ length: 200 }, (_, n) => JSON.stringify({ n })).join('\n') + '\n');
      const deadline = Date.now() + 5000;
      while (c.data.split('\n').length <= 200 && Date.now() < deadline) await sleep(20);
      const got = c.data.trim().split('\n').map((l) => (JSON.parse(l) as { result: number }).result).sort((a, b) => a - b);
      expect(got).toEqual(Array.from({ length: 200 }, (_, n) => n));
      expect(most).toBe(L.maxPending);
      c.sock.destroy();
    });
  });
});
