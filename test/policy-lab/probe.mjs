// Runs inside a source pod's network namespace: probes every target on every
// (port, protocol) at once with real connections and prints one JSON line,
// {"TCP/80": {"10.244.1.3": "echo" | "refused" | "timeout" | "error"}, ...}.
// Targets may be IPv4 or IPv6 addresses (a dual-stack pod's ip6), mixed at will.
//   TCP: connect, send a token, wait for the echo. A reset ("refused") proves the SYN
//        went through (a port nobody serves); a dropped SYN times out.
//   UDP: send a token every retryMs until the echo comes back or timeoutMs passes.
// usage: node probe.mjs '{"targets": [...], "specs": [[80, "TCP"], [81, "UDP"]], "timeoutMs": 600, "retryMs": 100}'
//    or: node probe.mjs --serve   (one such JSON request per stdin line, one result line each;
//                                  exits at stdin EOF: a probe process kept per pod saves a
//                                  node start-up per probe round)
// Plain JavaScript on purpose: it runs as is, without the TypeScript build.
import net from 'node:net';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';

function tcp(ip, port, timeoutMs) {
  return new Promise((resolve) => {
    const token = `twill-${randomBytes(4).toString('hex')}\n`;
    const s = net.connect({ host: ip, port });
    let got = '';
    const done = (r) => { clearTimeout(t); s.destroy(); resolve(r); };
    const t = setTimeout(() => done('timeout'), timeoutMs);
    s.on('connect', () => s.write(token));
    s.on('data', (d) => { got += d; if (got.startsWith(token)) done('echo'); });
    s.on('error', (e) => done(e.code === 'ECONNREFUSED' ? 'refused' : 'error'));
  });
}

function udp(ip, port, timeoutMs, retryMs) {
  return new Promise((resolve) => {
    const token = `twill-${randomBytes(4).toString('hex')}`;
    const s = dgram.createSocket(net.isIPv6(ip) ? 'udp6' : 'udp4');
    const send = () => s.send(token, port, ip, () => undefined);
    const done = (r) => { clearTimeout(t); clearInterval(again); s.close(); resolve(r); };
    const t = setTimeout(() => done('timeout'), timeoutMs);
    const again = setInterval(send, retryMs); // UDP is lossy by design: retry
    s.on('message', (m) => { if (m.toString() === token) done('echo'); });
    s.on('error', () => undefined); // ICMP errors surface here; keep waiting for the echo or the timeout
    send();
  });
}

async function probe(cfg) {
  const timeoutMs = cfg.timeoutMs ?? 600;
  const retryMs = cfg.retryMs ?? 100;
  const out = {};
  await Promise.all(cfg.specs.flatMap(([port, proto]) => {
    const key = `${proto}/${port}`;
    out[key] = {};
    return cfg.targets.map(async (ip) => { out[key][ip] = await (proto === 'TCP' ? tcp(ip, port, timeoutMs) : udp(ip, port, timeoutMs, retryMs)); });
  }));
  return out;
}

if (process.argv[2] === '--serve') {
  const { createInterface } = await import('node:readline');
  process.stdout.write('ready\n');
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) process.stdout.write(`${JSON.stringify(await probe(JSON.parse(line)))}\n`);
  }
} else {
  process.stdout.write(`${JSON.stringify(await probe(JSON.parse(process.argv[2])))}\n`);
}
