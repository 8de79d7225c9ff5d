// A TCP stream with a checksum at both ends, for the offload tests (run inside
// a namespace with `ip netns exec`).
//   node stream.mjs serve <port>                    prints "ready", then "<sha256> <bytes>" when the stream ends
//   node stream.mjs send <ip> <port> <megabytes>    sends pseudo-random bytes (AES-CTR keystream), prints "<sha256> <bytes>"
import net from 'node:net';
import { createCipheriv, createHash } from 'node:crypto';

const [mode, a, b, c] = process.argv.slice(2);
if (mode === 'serve') {
  const srv = net.createServer((s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d) => { h.update(d); n += d.length; });
    s.on('end', () => { console.log(`${h.digest('hex')} ${n}`); s.end(); srv.close(); });
    s.on('error', (e) => { console.error(String(e)); process.exit(1); });
  });
  srv.listen(Number(a), '0.0.0.0', () => console.log('ready'));
} else if (mode === 'send') {
  const total = Number(c) * 1024 * 1024;
  const ks = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 1));
  const zero = Buffer.alloc(256 * 1024);
  const h = createHash('sha256');
  const s = net.connect(Number(b), a);
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      const chunk = ks.update(zero.subarray(0, Math.min(zero.length, total - sent)));
      h.update(chunk);
      sent += chunk.length;
      if (!s.write(chunk)) { s.once('drain', pump); return; }
    }
    s.end();
  };
  s.on('connect', pump);
  s.on('close', () => console.log(`${h.digest('hex')} ${sent}`));
  s.on('error', (e) => { console.error(String(e)); process.exit(1); });
} else {
  console.error('usage: stream.mjs serve <port> | send <ip> <port> <MB>');
  process.exit(2);
}
