// The agent's unix socket: one JSON request per line, one JSON reply per line.
// The CNI plugin registers and removes pods here; `twill` asks for status.
import net from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';

export type Handler = (req: Record<string, unknown>) => Promise<unknown>;

export function serve(socketPath: string, handler: Handler): net.Server {
  if (existsSync(socketPath)) unlinkSync(socketPath); // a previous agent's, dead: we hold the node now
  const server = net.createServer((conn) => {
    let buf = '';
    conn.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let req: Record<string, unknown>;
        try {
          req = JSON.parse(line) as Record<string, unknown>;
        } catch {
          conn.write(JSON.stringify({ ok: false, error: 'request is not JSON' }) + '\n');
          continue;
        }
        handler(req).then(
          (result) => conn.write(JSON.stringify({ ok: true, result }) + '\n'),
          (e: unknown) => conn.write(JSON.stringify({ ok: false, error: e instanceof Error ? e.message : String(e) }) + '\n'),
        );
      }
    });
    conn.on('error', () => conn.destroy());
  });
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
  });
}
