// A stand-in node agent in its own process (the tests run the plugin with spawnSync, which blocks
// theirs), speaking the agent socket's protocol: one JSON request per line, {ok, result|error} back.
// argv: <socket> <extra status JSON> [real agent socket]
// `status` is the real agent's reply with the extra fields merged in (a field set to null is
// removed), or, without a real agent, the extra fields alone. add/del/pods go to the real agent when there is one (so
// the engine serves the pod as usual), else are served from memory. Every `add` is recorded;
// {op:'standin-adds'} returns them. Prints "ready" once listening; runs until killed.
import net from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';

const [sock, extraJson, real] = process.argv.slice(2);
const extra = JSON.parse(extraJson);
const adds = [];
const mem = new Map();

function request(req) {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(real);
    let buf = '';
    c.setTimeout(10_000, () => { c.destroy(); reject(new Error('real agent timed out')); });
    c.on('connect', () => c.write(JSON.stringify(req) + '\n'));
    c.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      c.end();
      const r = JSON.parse(buf.slice(0, nl));
      if (r.ok) resolve(r.result); else reject(new Error(r.error));
    });
    c.on('error', reject);
  });
}

async function handle(req) {
  if (req.op === 'status') {
    const st = { ...(real ? await request(req) : {}), ...extra };
    for (const k of Object.keys(st)) if (st[k] === null) delete st[k];
    return st;
  }
  if (req.op === 'standin-adds') return adds;
  if (req.op === 'add') adds.push(req.pod);
  if (real) return request(req);
  switch (req.op) {
    case 'add': mem.set(req.pod.containerId, req.pod); return { gatewayIP: extra.gatewayIP || '', gatewayIP6: extra.gatewayIP6, mtu: extra.mtu ?? 1450 };
    case 'del': return { removed: mem.delete(String(req.containerId)) };
    case 'pods': return [...mem.values()];
    default: throw new Error(`unknown op ${String(req.op)}`);
  }
}

if (existsSync(sock)) unlinkSync(sock);
net.createServer((conn) => {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('error', () => conn.destroy());
  conn.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let req;
      try { req = JSON.parse(line); } catch { conn.write(JSON.stringify({ ok: false, error: 'request is not JSON' }) + '\n'); continue; }
      handle(req).then((result) => conn.write(JSON.stringify({ ok: true, result }) + '\n'), (e) => conn.write(JSON.stringify({ ok: false, error: e.message }) + '\n'));
    }
  });
}).listen(sock, () => console.log('ready'));
