// A steady flow from inside a pod's network namespace, through a pod's echo servers:
//   udp: datagrams carrying a sequence number at a fixed rate; the echoes are counted
//        by sequence number, so every lost datagram (either way) is known;
//   tcp: a byte stream written in small chunks at a fixed pace; the echo is checked
//        byte for byte, and a reset, an error or a stall (no echo for a while with data
//        outstanding) is recorded.
// usage: node flow.mjs '{"udp": {"ip": "10.244.2.2", "port": 80, "pps": 1000}, "tcp": {"ip": "10.244.2.2", "port": 80, "chunk": 8192, "everyMs": 5}}'
// stdout: "ready", then one JSON line per command read on stdin:
//   mark LABEL  → {"mark": LABEL, "seq": next UDP sequence number, "tcpSent": bytes, "t": ms}
//   stop        → stops sending, waits for the echoes still in flight, prints the summary, exits
// Plain JavaScript on purpose: it runs as is, without the TypeScript build.
import net from 'node:net';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const MAX_SEQ = 1 << 20;

function tcpRetrans() {
  // /proc/net is the reading process's network namespace: the pod's
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Tcp:'));
  const keys = lines[0].split(/\s+/), vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf('RetransSegs')]);
}

const udp = cfg.udp && {
  sock: dgram.createSocket('udp4'), sent: 0, echoed: new Uint8Array(MAX_SEQ), dup: 0, timer: undefined,
};
const tcp = cfg.tcp && {
  sock: undefined, sent: 0, echoed: 0, corrupt: false, errors: [], closed: false, lastData: 0, maxGapMs: 0, timer: undefined,
};
const retransBefore = tcpRetrans();
const t0 = Date.now();

async function startUdp() {
  const u = udp;
  u.sock.on('message', (m) => {
    if (m.length < 8 || m.readUInt32BE(4) !== 0x7477696c) return; // "twil"
    const seq = m.readUInt32BE(0);
    if (u.echoed[seq]) u.dup++;
    u.echoed[seq] = 1;
  });
  u.sock.on('error', () => undefined); // ICMP errors on a connected socket: the count tells
  await new Promise((r) => u.sock.connect(cfg.udp.port, cfg.udp.ip, r));
  const start = Date.now();
  u.timer = setInterval(() => {
    const due = Math.min(MAX_SEQ, Math.floor(((Date.now() - start) * cfg.udp.pps) / 1000));
    while (u.sent < due) {
      const b = Buffer.alloc(16);
      b.writeUInt32BE(u.sent, 0);
      b.writeUInt32BE(0x7477696c, 4);
      u.sock.send(b);
      u.sent++;
    }
  }, 2);
}

async function startTcp() {
  const c = tcp;
  const chunk = cfg.tcp.chunk ?? 8192;
  await new Promise((resolve, reject) => {
    c.sock = net.connect({ host: cfg.tcp.ip, port: cfg.tcp.port }, resolve);
    c.sock.once('error', reject);
  });
  c.sock.setNoDelay(true);
  c.sock.on('error', (e) => c.errors.push(e.code ?? e.message));
  c.sock.on('close', () => { c.closed = true; });
  c.lastData = Date.now();
  c.sock.on('data', (d) => {
    const now = Date.now();
    c.maxGapMs = Math.max(c.maxGapMs, now - c.lastData);
    c.lastData = now;
    for (let i = 0; i < d.length; i++) if (d[i] !== ((c.echoed + i) & 0xff)) { c.corrupt = true; break; }
    c.echoed += d.length;
  });
  c.timer = setInterval(() => {
    if (c.closed || c.sock.writableLength > 256 * 1024) return;
    const b = Buffer.allocUnsafe(chunk);
    for (let i = 0; i < chunk; i++) b[i] = (c.sent + i) & 0xff;
    c.sock.write(b);
    c.sent += chunk;
    // a stall: data outstanding and nothing echoed for a while (measured while sending)
    if (c.echoed < c.sent) c.maxGapMs = Math.max(c.maxGapMs, Date.now() - c.lastData);
    else c.lastData = Date.now();
  }, cfg.tcp.everyMs ?? 5);
}

function ranges(bits, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    if (!bits[i]) continue;
    let j = i;
    while (j + 1 < n && bits[j + 1]) j++;
    out.push([i, j]);
    i = j;
  }
  return out;
}

async function stop() {
  if (udp) clearInterval(udp.timer);
  if (tcp) clearInterval(tcp.timer);
  const deadline = Date.now() + 3000;
  // echoes still in flight
  await new Promise((r) => setTimeout(r, 300));
  while (tcp && !tcp.closed && tcp.echoed < tcp.sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const out = { ms: Date.now() - t0, retrans: tcpRetrans() - retransBefore };
  if (udp) {
    out.udp = { sent: udp.sent, echoed: ranges(udp.echoed, udp.sent), dup: udp.dup };
    udp.sock.close();
  }
  if (tcp) {
    out.tcp = { sent: tcp.sent, echoed: tcp.echoed, corrupt: tcp.corrupt, errors: tcp.errors, closedEarly: tcp.closed, maxGapMs: tcp.maxGapMs };
    tcp.sock.destroy();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

await Promise.all([udp && startUdp(), tcp && startTcp()]);
process.stdout.write('ready\n');
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, ...rest] = line.trim().split(' ');
  if (cmd === 'mark') process.stdout.write(`${JSON.stringify({ mark: rest.join(' '), seq: udp ? udp.sent : 0, tcpSent: tcp ? tcp.sent : 0, t: Date.now() })}\n`);
  if (cmd === 'stop') await stop();
}
await stop();
