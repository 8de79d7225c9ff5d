// Watch streams (Kubernetes, etcd's gateway) send one JSON value per line.
import type http from 'node:http';

/**
 * Reads `res` line by line and hands each parsed value to `onValue`, which may
 * return an Error to end the stream with it. `end` is called once the stream
 * ends, fails, carries a line that is not JSON, or onValue ends it.
 */
export function readJsonLines(req: http.ClientRequest, res: http.IncomingMessage, what: string, onValue: (v: unknown) => Error | void, end: (err?: Error) => void, stopped: () => boolean): void {
  let buf = '';
  res.setEncoding('utf8');
  res.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line || stopped()) continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        req.destroy();
        return end(new Error(`${what}: not JSON: ${(e as Error).message}`));
      }
      const err = onValue(v);
      if (err) {
        req.destroy();
        return end(err);
      }
    }
  });
  res.on('end', () => end());
  res.on('error', (e) => end(e));
}
