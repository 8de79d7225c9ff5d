// The lab's stand-in for a pod's application: a TCP echo and a UDP echo on each
// of the pod's ports (by default TCP 8080 and UDP 8081), so reachability is
// probed with real connections of both kinds. SCTP has no socket here (the
// kernel lacks it): SCTP policy is tested with raw packets instead.
import net from 'node:net';
import dgram from 'node:dgram';

export const TCP_ECHO_PORT = 8080;
export const UDP_ECHO_PORT = 8081;

export interface WorkloadPorts { tcp: number[]; udp: number[] }

/** Serves every port; resolves once all of them listen. */
export async function startWorkload(ports: WorkloadPorts = { tcp: [TCP_ECHO_PORT], udp: [UDP_ECHO_PORT] }): Promise<{ close(): void }> {
  const closers: (() => void)[] = [];
  const listening: Promise<void>[] = [];
  for (const p of ports.tcp) {
    const tcp = net.createServer((c) => { c.on('error', () => c.destroy()); c.pipe(c); });
    listening.push(new Promise((r) => tcp.listen(p, r)));
    closers.push(() => tcp.close());
  }
  for (const p of ports.udp) { // one socket per family: an IPv6 one only where the pod has IPv6 (a dual-stack lab)
    for (const type of ['udp4', 'udp6'] as const) {
      const udp = dgram.createSocket(type === 'udp6' ? { type, ipv6Only: true } : { type });
      udp.on('message', (m, r) => udp.send(m, r.port, r.address));
      listening.push(new Promise((r) => {
        udp.once('error', () => { if (type === 'udp6') r(); }); // no IPv6 in this namespace
        udp.bind(p, type === 'udp6' ? '::' : undefined, () => r());
      }));
      closers.push(() => { try { udp.close(); } catch { /* never bound */ } });
    }
  }
  await Promise.all(listening);
  return { close: () => closers.forEach((c) => c()) };
}

export const READY_LINE = 'twill-workload-ready';

/** Command-line form: `--tcp 80,81 --udp 80,81`. */
export function parseWorkloadArgs(args: string[]): WorkloadPorts | undefined {
  if (!args.length) return undefined;
  const list = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 && args[i + 1] ? args[i + 1].split(',').filter(Boolean).map(Number) : [];
  };
  return { tcp: list('--tcp'), udp: list('--udp') };
}

export function workloadArgs(p: WorkloadPorts): string[] {
  return ['--tcp', p.tcp.join(','), '--udp', p.udp.join(',')];
}
