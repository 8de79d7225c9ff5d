// The little of the Kubernetes API the agent needs: GET (lists), watch streams
// (one JSON event per line), and a JSON merge patch of its own Node. Speaks
// HTTPS with the service account's token and CA inside a cluster, plain HTTP to
// an API proxy, or HTTP over a unix socket (what `kubectl proxy --unix-socket`
// serves; the lab's tests use it so no test traffic touches an IP network).
import http from 'node:http';
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { readJsonLines } from '../json-lines.js';

export interface KubeConfig {
  server: string; // https://host:port, http://host:port or unix:///path/to.sock
  token?: string;
  tokenFile?: string; // read at each request: projected tokens rotate
  caFile?: string;
  insecureSkipTLSVerify?: boolean;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The in-cluster configuration (a pod's service account), or undefined outside a cluster. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, saDir = SA_DIR): KubeConfig | undefined {
  const host = env.KUBERNETES_SERVICE_HOST, port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port || !existsSync(`${saDir}/token`)) return undefined;
  return { server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`, tokenFile: `${saDir}/token`, caFile: `${saDir}/ca.crt` };
}

/** A failed API call: the HTTP status and the Status object's reason when the server sent one. */
export class KubeError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
    this.name = 'KubeError';
  }
}

export interface WatchEvent { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: Record<string, unknown> }

export class KubeClient {
  private readonly base: { socketPath?: string; host?: string; port?: number; secure: boolean };
  private readonly agent: http.Agent;
  private readonly ca?: Buffer;

  constructor(readonly cfg: KubeConfig) {
    if (cfg.server.startsWith('unix://')) {
      this.base = { socketPath: cfg.server.slice('unix://'.length), secure: false };
    } else {
      const u = new URL(cfg.server);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`kubernetes server ${cfg.server}: want https://, http:// or unix://`);
      const secure = u.protocol === 'https:';
      this.base = { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (secure ? 443 : 80)), secure };
    }
    if (cfg.caFile) this.ca = readFileSync(cfg.caFile);
    this.agent = this.base.secure ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const token = this.cfg.tokenFile ? readFileSync(this.cfg.tokenFile, 'utf8').trim() : this.cfg.token;
    return { Accept: 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}), ...extra };
  }

  private open(method: string, path: string, headers: Record<string, string>, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
    const opts: https.RequestOptions = {
      method, path, headers: this.headers(headers), agent: this.agent,
      ...(this.base.socketPath ? { socketPath: this.base.socketPath } : { host: this.base.host, port: this.base.port }),
      ...(this.base.secure ? { ca: this.ca, rejectUnauthorized: !this.cfg.insecureSkipTLSVerify } : {}),
    };
    return (this.base.secure ? https : http).request(opts, onResponse);
  }

  /** One request with a JSON reply; a non-2xx status throws a KubeError. */
  request<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    return new Promise((resolve, reject) => {
      const req = this.open(method, path, body === undefined ? {} : { 'Content-Type': contentType }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: Record<string, unknown> | undefined;
          try { json = JSON.parse(text) as Record<string, unknown>; } catch { /* reported below */ }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300 && json) return resolve(json as T);
          reject(new KubeError(status, String(json?.reason ?? ''), `${method} ${path}: HTTP ${status}${json?.message ? `: ${String(json.message)}` : text ? `: ${text.slice(0, 200)}` : ''}`));
        });
        res.on('error', reject);
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  get<T>(path: string): Promise<T> { return this.request<T>('GET', path); }

  /** A JSON merge patch (RFC 7386), as `kubectl patch --type merge` sends. */
  mergePatch<T>(path: string, patch: unknown): Promise<T> { return this.request<T>('PATCH', path, patch, 'application/merge-patch+json'); }

  /**
   * Watches `path` from `resourceVersion`: calls onEvent per event, then onEnd
   * once the stream ends (the server closes watches after a while) or fails; an
   * ERROR event ends it with a KubeError of the Status's code (410: expired).
   * Returns a function that stops the watch without calling onEnd.
   */
  watch(path: string, resourceVersion: string, onEvent: (e: WatchEvent) => void, onEnd: (err?: Error) => void): () => void {
    let stopped = false, ended = false;
    const end = (err?: Error) => { if (!stopped && !ended) { ended = true; onEnd(err); } };
    const sep = path.includes('?') ? '&' : '?';
    const req = this.open('GET', `${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(resourceVersion)}`, {}, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return end(new KubeError(res.statusCode ?? 0, '', `watch ${path}: HTTP ${res.statusCode}`));
      }
      readJsonLines(req, res, `watch ${path}`, (v) => {
        const e = v as WatchEvent;
        // An ERROR event carries a Status: 410 Gone when the version has expired.
        if (e.type === 'ERROR') return new KubeError(Number(e.object.code ?? 500), String(e.object.reason ?? ''), `watch ${path}: ${String(e.object.message ?? 'error')}`);
        onEvent(e);
      }, end, () => stopped);
    });
    req.on('error', (e) => end(e));
    req.end();
    return () => { stopped = true; req.destroy(); };
  }

  close(): void { this.agent.destroy(); }
}
