// Probes run from inside a source pod's netns: a TCP echo and a UDP echo
// round trip per target. Prints one JSON line: {ip: {tcp, udp}}.
import net from 'node:net';
import dgram from 'node:dgram';
import { TCP_ECHO_PORT, UDP_ECHO_PORT } from './workload.js';

export function probeTcp(ip: string, port = TCP_ECHO_PORT, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port });
    const done = (ok: boolean) => { clearTimeout(t); s.destroy(); resolve(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write('twill\n'));
    s.on('data', (d) => done(d.toString().startsWith('twill')));
    s.on('error', () => done(false));
  });
}

export function probeUdp(ip: string, port = UDP_ECHO_PORT, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
    const done = (ok: boolean) => { clearTimeout(t); clearInterval(again); s.close(); resolve(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    const send = () => s.send('twill', port, ip, () => undefined);
    const again = setInterval(send, 300); // UDP is lossy by design: retry a few times
    s.on('message', (m) => { if (m.toString() === 'twill') done(true); });
    s.on('error', () => done(false));
    send();
  });
}

export async function probeAll(targets: string[]): Promise<Record<string, { tcp: boolean; udp: boolean }>> {
  const out: Record<string, { tcp: boolean; udp: boolean }> = {};
  await Promise.all(targets.map(async (ip) => { out[ip] = { tcp: await probeTcp(ip), udp: await probeUdp(ip) }; }));
  return out;
}
