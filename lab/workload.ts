// The lab's stand-in for a pod's application: TCP echo on 8080, UDP echo on
// 8081, so reachability can be probed with real connections of both kinds.
import net from 'node:net';
import dgram from 'node:dgram';

export const TCP_ECHO_PORT = 8080;
export const UDP_ECHO_PORT = 8081;

export function startWorkload(tcpPort = TCP_ECHO_PORT, udpPort = UDP_ECHO_PORT): { close(): void } {
  const tcp = net.createServer((c) => { c.on('error', () => c.destroy()); c.pipe(c); }).listen(tcpPort);
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => udp.send(m, r.port, r.address));
  udp.bind(udpPort);
  return { close: () => { tcp.close(); udp.close(); } };
}
