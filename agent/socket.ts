// The agent's unix socket: one JSON request per line, one JSON reply per line.
// The CNI plugin registers and removes pods here; `twill` asks for status.
import net from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';

export type Handler = (req: Record<string, unknown>) => Promise<unknown>;

/**
 * Bounds on the socket: its clients (the CNI plugin, `twill`) connect, send a
 * request at once and wait for the reply, so a connection that says nothing,
 * an endless line, or a flood of requests nobody reads is not one of them.
 */
export const SOCKET_LIMITS = {
  maxConnections: 128, // more are closed as soon as they are accepted; the plugin's runtime retries (TRY_AGAIN_LATER)
  idleMs: 10_000, // no request in progress and no bytes either way: closed
  maxLineBytes: 1 << 20, // one request; a longer line is refused and the connection closed
  maxPending: 16, // requests of one connection being handled at once; reading waits beyond that
};
export type SocketLimits = typeof SOCKET_LIMITS;

export function serve(socketPath: string, handler: Handler, limits: SocketLimits = SOCKET_LIMITS): net.Server {
  if (existsSync(socketPath)) unlinkSync(socketPath); // a previous agent's, dead: we hold the node now
  const server = net.createServer((conn) => {
    let buf = '', pending = 0, refused = false;
    const reply = (r: unknown) => { if (!conn.destroyed && conn.writable) conn.write(JSON.stringify(r) + '\n'); };
    const pump = () => {
      let nl: number;
      while (pending < limits.maxPending && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let req: Record<string, unknown>;
        try {
          req = JSON.parse(line) as Record<string, unknown>;
        } catch {
          reply({ ok: false, error: 'request is not JSON' });
          continue;
        }
        pending++;
        handler(req).then(
          (result) => reply({ ok: true, result }),
          (e: unknown) => reply({ ok: false, error: e instanceof Error ? e.message : String(e) }),
        ).finally(() => { pending--; pump(); });
      }
      if (buf.length > limits.maxLineBytes && buf.indexOf('\n') < 0) {
        reply({ ok: false, error: `request longer than ${limits.maxLineBytes} bytes` });
        refused = true;
        buf = '';
        conn.end(() => conn.destroy()); // once the answer is out, whatever the client still sends
        return;
      }
      if (pending >= limits.maxPending) conn.pause();
      else if (conn.isPaused()) conn.resume();
    };
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => { if (!refused) { buf += d; pump(); } });
    conn.setTimeout(limits.idleMs);
    conn.on('timeout', () => { if (pending === 0) conn.destroy(); }); // a reply being worked on re-arms it when written
    conn.on('error', () => conn.destroy());
  });
  server.maxConnections = limits.maxConnections;
  server.listen(socketPath);
  return server;
}

/** One request to an agent; rejects with code 'ENOENT'/'ECONNREFUSED' when no agent listens. */
export function request(socketPath: string, req: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => { conn.destroy(); reject(Object.assign(new Error(`agent at ${socketPath} did not answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })); }, timeoutMs);
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      const res = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string };
      if (res.ok) resolve(res.result);
      else reject(new Error(res.error));
    });
    conn.on('error', (e) => { clearTimeout(timer); reject(e); });
    // Closed without an answer (an agent at its connection cap, or stopping): as a reset.
    conn.on('close', () => { clearTimeout(timer); reject(Object.assign(new Error(`agent at ${socketPath} closed the connection without answering`), { code: 'ECONNRESET' })); });
  });
}
