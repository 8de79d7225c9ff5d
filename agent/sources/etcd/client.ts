// The little of etcd's v3 API the agent needs, through etcd's own JSON gateway
// (POST /v3/...; keys and values base64): ranges over a prefix, a create-if-absent
// transaction, leases, and watch streams (one JSON object per line). HTTP or
// HTTPS to the first endpoint that answers; with HTTPS the server is verified
// against `caFile` (else the system's CAs) and `certFile`/`keyFile` are presented
// (flanneld's -etcd-cafile/-etcd-certfile/-etcd-keyfile). With `username`, the
// client authenticates (POST /v3/auth/authenticate) and sends the token in the
// Authorization header, authenticating again when etcd says it is invalid
// (simple tokens expire, and each member keeps its own).
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { readJsonLines } from '../json-lines.js';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString() : '');

/** The end of a prefix range: the prefix with its last byte plus one, as etcd wants it. */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  let i = b.length - 1;
  while (i >= 0 && b[i] === 0xff) i--;
  if (i < 0) return Buffer.from([0]); // every key
  const out = Buffer.from(b.subarray(0, i + 1));
  out[i]++;
  return out;
}

export interface KV { key: string; value: string; modRevision: number; lease: string }
export interface EtcdEvent { type: 'PUT' | 'DELETE'; kv: KV }
interface RawKV { key?: string; value?: string; mod_revision?: string; lease?: string }
const kvOf = (r: RawKV): KV => ({ key: unb64(r.key), value: unb64(r.value), modRevision: Number(r.mod_revision ?? 0), lease: r.lease ?? '0' });

/** How to reach etcd: the agent config's "etcd" (flanneld's -etcd-* flags). */
export interface EtcdConfig {
  endpoints: string[]; // http://host:port or https://host:port, tried in order
  prefix?: string; // flannel's -etcd-prefix, default /coreos.com/network
  caFile?: string; // PEM: the CAs the servers' certificates must chain to (default: the system's)
  certFile?: string; // PEM: the client certificate (etcd's --client-cert-auth)
  keyFile?: string; // PEM: its key
  username?: string; // etcd user (auth enabled)
  password?: string;
  passwordFile?: string; // the password read from a file (a mounted Secret) instead
}

// Node's TLS verification codes, said plainly.
const TLS_VERIFY: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its certificate is not signed by a trusted CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'its certificate is not signed by a trusted CA',
  UNABLE_TO_GET_ISSUER_CERT: 'its certificate is not signed by a trusted CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'its certificate chains to a CA that is not trusted',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed and not trusted',
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its certificate does not name this host',
};

type Flagged = Error & { http?: boolean; auth?: boolean; compacted?: boolean };

export class EtcdClient {
  private readonly agents: { http: http.Agent; https?: https.Agent };
  private readonly tlsOpts: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  private readonly password?: string;
  private current = 0;
  private token?: Promise<string>; // of endpoints[current]

  constructor(readonly endpoints: string[], private readonly cfg: Omit<EtcdConfig, 'endpoints'> = {}) {
    if (!endpoints.length) throw new Error('etcd: no endpoints');
    for (const e of endpoints) if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new Error(`etcd endpoint ${e}: want http://host:port or https://host:port`);
    const secure = endpoints.some((e) => e.startsWith('https:'));
    const files = (['caFile', 'certFile', 'keyFile'] as const).filter((k) => cfg[k]);
    if (files.length && !secure) throw new Error(`etcd: ${files.join(', ')} given, but no endpoint is https:// (${endpoints.join(', ')})`);
    if (!cfg.certFile !== !cfg.keyFile) throw new Error('etcd: certFile and keyFile go together');
    const read = (what: string, file: string) => {
      try { return readFileSync(file); } catch (e) { throw new Error(`etcd ${what} ${file}: ${(e as Error).message}`); }
    };
    if (cfg.caFile) this.tlsOpts.ca = read('caFile', cfg.caFile);
    if (cfg.certFile) this.tlsOpts.cert = read('certFile', cfg.certFile);
    if (cfg.keyFile) this.tlsOpts.key = read('keyFile', cfg.keyFile);
    if (secure) {
      try { tls.createSecureContext(this.tlsOpts); } catch (e) {
        throw new Error(`etcd TLS files (${files.map((k) => `${k} ${cfg[k]}`).join(', ')}): ${(e as Error).message}`);
      }
    }
    if (cfg.passwordFile) this.password = read('passwordFile', cfg.passwordFile).toString('utf8').replace(/\r?\n$/, '');
    else this.password = cfg.password;
    if (cfg.username && this.password === undefined) throw new Error(`etcd: username "${cfg.username}" without password or passwordFile`);
    if (!cfg.username && this.password !== undefined) throw new Error('etcd: password without username');
    this.agents = { http: new http.Agent({ keepAlive: true }), ...(secure ? { https: new https.Agent({ keepAlive: true, ...this.tlsOpts }) } : {}) };
  }

  private get endpoint(): string { return this.endpoints[this.current].replace(/\/$/, ''); }

  private open(path: string, token: string | undefined, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
    const u = new URL(path, this.endpoint);
    const secure = u.protocol === 'https:';
    const opts: https.RequestOptions = {
      host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port || 2379, path: u.pathname, method: 'POST', agent: secure ? this.agents.https : this.agents.http,
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: token } : {}) },
      ...(secure ? this.tlsOpts : {}),
    };
    return (secure ? https : http).request(opts, onResponse);
  }

  /** What went wrong reaching the current endpoint, said with its URL (and the file to look at for TLS). */
  private failure(what: string, e: Error & { code?: string }): Flagged {
    const code = e.code ?? '';
    const ep = this.endpoint;
    if (TLS_VERIFY[code]) {
      return new Error(`etcd ${ep}: refused the server: ${TLS_VERIFY[code]} (${code}; ${this.cfg.caFile ? `caFile ${this.cfg.caFile}` : 'no caFile: the system CAs'})`);
    }
    if (/alert|certificate|handshake|EPROTO|SSL/i.test(`${code} ${e.message}`)) {
      return new Error(`etcd ${ep}: TLS handshake failed${this.cfg.certFile ? ` (client certificate ${this.cfg.certFile})` : ' (no client certificate given: set certFile and keyFile if etcd runs with --client-cert-auth)'}: ${e.message.trim()}`);
    }
    if (code === 'ECONNRESET' && ep.startsWith('https:') && !this.cfg.certFile) {
      return new Error(`etcd ${ep}: connection reset during ${what} (no client certificate given: set certFile and keyFile if etcd runs with --client-cert-auth): ${e.message}`);
    }
    return new Error(`etcd ${ep}: ${what}: ${e.message}`);
  }

  /** One POST to the current endpoint; an HTTP error is flagged `http` (and `auth` when the token is the problem). */
  private post<T>(path: string, body: unknown, token: string | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = this.open(path, token, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: Record<string, unknown> | undefined;
          try { json = JSON.parse(text) as Record<string, unknown>; } catch { /* below */ }
          if (res.statusCode === 200 && json) return resolve(json as T);
          const msg = String(json?.error ?? json?.message ?? text).trim().slice(0, 300);
          let hint = '';
          if (/CommonName of client/.test(msg)) hint = ` (with auth and --client-cert-auth on, etcd's JSON gateway refuses client certificates that carry a Common Name: issue ${this.cfg.certFile ?? 'certFile'} without one, e.g. subject /O=twill)`;
          if (/user name is empty|permission denied/.test(msg) && !this.cfg.username) hint = ' (no username given: if etcd has auth enabled, set username and password)';
          reject(Object.assign(new Error(`etcd ${this.endpoint}${path}: HTTP ${res.statusCode}: ${msg}${hint}`), { http: true, auth: res.statusCode === 401 || /invalid auth token/.test(msg) }));
        });
        res.on('error', (e) => reject(this.failure(path, e)));
      });
      req.setTimeout(10_000, () => req.destroy(Object.assign(new Error(`no answer within 10 s`), { code: 'ETIMEDOUT' })));
      req.on('error', (e) => reject(this.failure(path, e)));
      req.end(JSON.stringify(body));
    });
  }

  /** The auth token for the current endpoint (none without a username), authenticating once per token. */
  private auth(): Promise<string | undefined> {
    if (!this.cfg.username) return Promise.resolve(undefined);
    if (!this.token) {
      const user = this.cfg.username;
      const p = this.post<{ token?: string }>('/v3/auth/authenticate', { name: user, password: this.password }, undefined).then((r) => {
        if (!r.token) throw Object.assign(new Error(`etcd ${this.endpoint}: authenticated as "${user}" but got no token (is auth enabled?)`), { http: true });
        return r.token;
      }, (e: Flagged) => {
        throw e.http ? Object.assign(new Error(`etcd ${this.endpoint}: authenticating as "${user}" failed: ${e.message.replace(/^etcd \S+: /, '')}`), { http: true }) : e;
      });
      this.token = p;
      p.catch(() => { if (this.token === p) this.token = undefined; });
    }
    return this.token;
  }

  private dropToken(): void { this.token = undefined; }

  /** One call; on a connection failure the next endpoint is tried, each once; an invalid token is renewed once. */
  async call<T>(path: string, body: unknown): Promise<T> {
    const errs: string[] = [];
    for (let tries = 0; tries < this.endpoints.length; tries++) {
      try {
        try {
          return await this.post<T>(path, body, await this.auth());
        } catch (e) {
          if (!(e as Flagged).auth || !this.cfg.username) throw e;
          this.dropToken(); // expired or from another member: once more with a new one
          return await this.post<T>(path, body, await this.auth());
        }
      } catch (e) {
        if ((e as Flagged).http) throw e; // etcd answered: another member would answer the same
        errs.push((e as Error).message);
        this.current = (this.current + 1) % this.endpoints.length;
        this.dropToken();
      }
    }
    throw new Error(errs.length === 1 ? errs[0] : `no etcd endpoint answered: ${errs.join('; ')}`);
  }

  /** Every key under `prefix`, and the store's revision they are as of. */
  async range(prefix: string): Promise<{ kvs: KV[]; revision: number }> {
    const r = await this.call<{ header: { revision: string }; kvs?: RawKV[] }>('/v3/kv/range', { key: b64(prefix), range_end: b64(prefixEnd(prefix)) });
    return { kvs: (r.kvs ?? []).map(kvOf), revision: Number(r.header.revision) };
  }

  async get(key: string): Promise<KV | undefined> {
    const r = await this.call<{ kvs?: RawKV[] }>('/v3/kv/range', { key: b64(key) });
    return r.kvs?.[0] ? kvOf(r.kvs[0]) : undefined;
  }

  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.call('/v3/kv/put', { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) });
  }

  async delete(key: string): Promise<void> {
    await this.call('/v3/kv/deleterange', { key: b64(key) });
  }

  /** Puts `key` only if it does not exist; true when this call created it. */
  async create(key: string, value: string, lease?: string): Promise<boolean> {
    const r = await this.call<{ succeeded?: boolean }>('/v3/kv/txn', {
      compare: [{ key: b64(key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
      success: [{ request_put: { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) } }],
    });
    return r.succeeded === true;
  }

  /**
   * Puts every entry of `puts` in one transaction, only if each key of `absent` does
   * not exist (with `prefix`: no key starting with it exists). etcd compares a range
   * key by key, and an empty range as a missing key. Returns whether this call wrote
   * them, and when it did not, which of `absent` were there (read in the same transaction).
   */
  async createAll(puts: { key: string; value: string }[], absent: { key: string; prefix?: boolean }[], lease?: string): Promise<{ ok: boolean; present: boolean[] }> {
    const range = (a: { key: string; prefix?: boolean }) => ({ key: b64(a.key), ...(a.prefix ? { range_end: b64(prefixEnd(a.key)) } : {}) });
    const r = await this.call<{ succeeded?: boolean; responses?: { response_range?: { count?: string } }[] }>('/v3/kv/txn', {
      compare: absent.map((a) => ({ ...range(a), target: 'CREATE', result: 'EQUAL', create_revision: '0' })),
      success: puts.map((p) => ({ request_put: { key: b64(p.key), value: b64(p.value), ...(lease ? { lease } : {}) } })),
      failure: absent.map((a) => ({ request_range: { ...range(a), count_only: true } })),
    });
    if (r.succeeded === true) return { ok: true, present: absent.map(() => false) };
    return { ok: false, present: absent.map((_, i) => Number(r.responses?.[i]?.response_range?.count ?? 0) > 0) };
  }

  async grant(ttlSeconds: number): Promise<string> {
    return (await this.call<{ ID: string }>('/v3/lease/grant', { TTL: ttlSeconds })).ID;
  }

  async keepAlive(lease: string): Promise<void> {
    const r = await this.call<{ result?: { TTL?: string } }>('/v3/lease/keepalive', { ID: lease });
    if (!r.result?.TTL || r.result.TTL === '0') throw new Error(`etcd lease ${lease} has expired`);
  }

  /** Watches keys under `prefix` from `fromRevision`; onEnd when the stream ends or fails. Returns a stop function. */
  watch(prefix: string, fromRevision: number, onEvents: (events: EtcdEvent[], revision: number) => void, onEnd: (err?: Error) => void): () => void {
    let stopped = false, ended = false, req: http.ClientRequest | undefined;
    const end = (err?: Error) => {
      if (stopped || ended) return;
      ended = true;
      if ((err as Flagged | undefined)?.auth) this.dropToken(); // the next watch authenticates again
      else if (err && !(err as Flagged).http && !(err as Flagged).compacted) { this.current = (this.current + 1) % this.endpoints.length; this.dropToken(); }
      onEnd(err);
    };
    const ep = this.endpoint;
    this.auth().then((token) => {
      if (stopped) return;
      const r = this.open('/v3/watch', token, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return end(Object.assign(new Error(`etcd ${ep} watch: HTTP ${res.statusCode}`), { http: true, auth: res.statusCode === 401 }));
        }
        readJsonLines(r, res, `etcd ${ep} watch`, (v) => {
          const o = v as { result?: { header?: { revision?: string }; events?: { type?: string; kv: RawKV }[]; compact_revision?: string; canceled?: boolean; cancel_reason?: string }; error?: { message?: string; http_code?: number } };
          if (o.error) return Object.assign(new Error(`etcd ${ep} watch: ${o.error.message ?? JSON.stringify(o.error)}`), { http: true, auth: o.error.http_code === 401 });
          const x = o.result;
          if (!x) return;
          if (x.compact_revision && x.compact_revision !== '0') {
            return Object.assign(new Error(`etcd ${ep} watch canceled: revision ${fromRevision} compacted (now ${x.compact_revision})`), { compacted: true });
          }
          if (x.canceled) { // refused (auth, permissions): not a compaction, reading everything again would not help
            const reason = x.cancel_reason ?? 'no reason given';
            return Object.assign(new Error(`etcd ${ep} watch canceled: ${reason}`), { http: true, auth: /Unauthenticated|invalid auth token/.test(reason) });
          }
          if (x.events?.length) onEvents(x.events.map((e) => ({ type: e.type === 'DELETE' ? 'DELETE' : 'PUT', kv: kvOf(e.kv) })), Number(x.header?.revision ?? 0));
        }, end, () => stopped);
      });
      r.on('error', (e) => end(this.failure('watch', e)));
      r.end(JSON.stringify({ create_request: { key: b64(prefix), range_end: b64(prefixEnd(prefix)), start_revision: String(fromRevision) } }));
      req = r;
    }, (e: Error) => end(e));
    return () => { stopped = true; req?.destroy(); };
  }

  close(): void { this.agents.http.destroy(); this.agents.https?.destroy(); }
}
