// The little of etcd's v3 API the agent needs, through etcd's own JSON gateway
// (POST /v3/...; keys and values base64): ranges over a prefix, a create-if-absent
// transaction, leases, and watch streams (one JSON object per line). Plain HTTP
// to the first endpoint that answers; no client TLS yet.
import http from 'node:http';
import { readJsonLines } from './json-lines.js';

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

export class EtcdClient {
  private readonly agent = new http.Agent({ keepAlive: true });
  private current = 0;

  constructor(readonly endpoints: string[]) {
    if (!endpoints.length) throw new Error('etcd: no endpoints');
    for (const e of endpoints) if (!/^http:\/\/[^/]+\/?$/.test(e)) throw new Error(`etcd endpoint ${e}: want http://host:port`);
  }

  private open(path: string, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
    const u = new URL(path, this.endpoints[this.current]);
    return http.request({ host: u.hostname, port: u.port || 2379, path: u.pathname, method: 'POST', agent: this.agent, headers: { 'Content-Type': 'application/json' } }, onResponse);
  }

  /** One call; on a connection failure the next endpoint is tried, each once. */
  async call<T>(path: string, body: unknown): Promise<T> {
    let lastErr: Error | undefined;
    for (let tries = 0; tries < this.endpoints.length; tries++) {
      try {
        return await new Promise<T>((resolve, reject) => {
          const req = this.open(path, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (text += d));
            res.on('end', () => {
              let json: Record<string, unknown> | undefined;
              try { json = JSON.parse(text) as Record<string, unknown>; } catch { /* below */ }
              if (res.statusCode === 200 && json) return resolve(json as T);
              reject(Object.assign(new Error(`etcd ${path}: HTTP ${res.statusCode}: ${String(json?.error ?? json?.message ?? text).slice(0, 200)}`), { http: true }));
            });
          });
          req.setTimeout(10_000, () => req.destroy(new Error(`etcd ${path}: no answer within 10 s`)));
          req.on('error', reject);
          req.end(JSON.stringify(body));
        });
      } catch (e) {
        lastErr = e as Error;
        if ((e as { http?: boolean }).http) throw e; // etcd answered: another member would answer the same
        this.current = (this.current + 1) % this.endpoints.length;
      }
    }
    throw lastErr!;
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

  async grant(ttlSeconds: number): Promise<string> {
    return (await this.call<{ ID: string }>('/v3/lease/grant', { TTL: ttlSeconds })).ID;
  }

  async keepAlive(lease: string): Promise<void> {
    const r = await this.call<{ result?: { TTL?: string } }>('/v3/lease/keepalive', { ID: lease });
    if (!r.result?.TTL || r.result.TTL === '0') throw new Error(`etcd lease ${lease} has expired`);
  }

  /** Watches keys under `prefix` from `fromRevision`; onEnd when the stream ends or fails. Returns a stop function. */
  watch(prefix: string, fromRevision: number, onEvents: (events: EtcdEvent[], revision: number) => void, onEnd: (err?: Error) => void): () => void {
    let stopped = false, ended = false;
    const end = (err?: Error) => { if (!stopped && !ended) { ended = true; onEnd(err); } };
    const req = this.open('/v3/watch', (res) => {
      if (res.statusCode !== 200) { res.resume(); return end(new Error(`etcd watch: HTTP ${res.statusCode}`)); }
      readJsonLines(req, res, 'etcd watch', (v) => {
        const r = (v as { result?: { header?: { revision?: string }; events?: { type?: string; kv: RawKV }[]; compact_revision?: string; canceled?: boolean } }).result;
        if (!r) return;
        if (r.canceled || (r.compact_revision && r.compact_revision !== '0')) {
          return Object.assign(new Error(`etcd watch canceled${r.compact_revision ? `: revision ${fromRevision} compacted (now ${r.compact_revision})` : ''}`), { compacted: true });
        }
        if (r.events?.length) onEvents(r.events.map((e) => ({ type: e.type === 'DELETE' ? 'DELETE' : 'PUT', kv: kvOf(e.kv) })), Number(r.header?.revision ?? 0));
      }, end, () => stopped);
    });
    req.on('error', (e) => end(e));
    req.end(JSON.stringify({ create_request: { key: b64(prefix), range_end: b64(prefixEnd(prefix)), start_revision: String(fromRevision) } }));
    return () => { stopped = true; req.destroy(); };
  }

  close(): void { this.agent.destroy(); }
}
