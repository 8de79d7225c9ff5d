// twill-cni: the CNI plugin (spec 0.3.1 … 1.1.0: ADD, DEL, CHECK, VERSION,
// STATUS, GC). The runtime runs it inside the node's network namespace with
// CNI_* variables and the network configuration on stdin. ADD takes an address
// from the node's pod CIDR (learnt from the agent, as flannel users expect, or
// fixed by ipam.subnet), wires the veth (cni/wire.ts) and registers the pod with
// the node's agent, which serves it. Everything half-made is undone on failure.
//
// Network configuration (twill's own fields, all optional):
//   agentSocket  the agent's unix socket             (default /run/twill/agent.sock)
//   mtu          the pod's MTU                         (default: the agent's)
//   hostMtu      the node side's MTU                   (default: mtu + 50)
//   ipam.dataDir where addresses are kept             (default /var/lib/twill/ipam; <dataDir>/<name>/)
//   ipam.subnet, ipam.gateway, ipam.rangeStart, ipam.rangeEnd   (default: the agent's podCIDR and gateway)
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { request } from '../agent/socket.js';
import { wirePod, unwirePod, podExec } from './wire.js';
import { run } from '../lib/sh.js';
import { Ipam, IpamExhausted, type Owner } from './ipam.js';
import { parseIPv4Cidr } from '../lib/ipv4.js';
import { CniError, ERR, LATEST, SUPPORTED_VERSIONS, errorJson, formatResult, parseResult, supported, versionAtLeast, type Dns, type Result } from './spec.js';
import { VXLAN_OVERHEAD } from '../dataplane/packet/vxlan.js';

export type Env = Record<string, string | undefined>;

export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  agentSocket: string;
  mtu?: number;
  hostMtu?: number;
  ipam: { dataDir: string; subnet?: string; gateway?: string; rangeStart?: string; rangeEnd?: string };
  dns?: Dns;
  prevResult?: unknown;
  raw: Record<string, unknown>;
}

interface AgentStatus { node: string; podCIDR: string; gatewayIP: string; mtu: number; podTxOffload?: boolean }

export const DEFAULT_SOCKET = '/run/twill/agent.sock';
export const DEFAULT_IPAM_DIR = '/var/lib/twill/ipam';

const log = (msg: string) => { try { process.stderr.write(`twill-cni: ${msg}\n`); } catch { /* stderr closed */ } };

/** Runs one CNI invocation; returns what to print on stdout and the exit code. */
export async function cniMain(env: Env, stdin: string): Promise<{ out: string; exit: number }> {
  let version = LATEST;
  try {
    const cmd = env.CNI_COMMAND;
    if (!cmd) throw new CniError(ERR.INVALID_ENV, 'CNI_COMMAND is not set', 'set CNI_COMMAND to one of ADD, DEL, CHECK, VERSION, STATUS, GC');
    if (cmd === 'VERSION') return { out: JSON.stringify({ cniVersion: LATEST, supportedVersions: SUPPORTED_VERSIONS }), exit: 0 };
    if (!['ADD', 'DEL', 'CHECK', 'STATUS', 'GC'].includes(cmd)) {
      throw new CniError(ERR.INVALID_ENV, `unknown CNI_COMMAND ${JSON.stringify(cmd)}`, 'set CNI_COMMAND to one of ADD, DEL, CHECK, VERSION, STATUS, GC');
    }
    const conf = parseConf(stdin);
    version = conf.cniVersion;
    switch (cmd) {
      case 'ADD': return { out: JSON.stringify(await cmdAdd(env, conf)), exit: 0 };
      case 'DEL': await cmdDel(env, conf); return { out: '', exit: 0 };
      case 'CHECK': await cmdCheck(env, conf); return { out: '', exit: 0 };
      case 'STATUS': await cmdStatus(conf); return { out: '', exit: 0 };
      default: await cmdGc(env, conf); return { out: '', exit: 0 };
    }
  } catch (e) {
    const ce = toCniError(e);
    log(`${env.CNI_COMMAND ?? '?'} ${env.CNI_CONTAINERID ?? ''} failed: code ${ce.code}: ${ce.message}${ce.details ? ` (${ce.details})` : ''}`);
    return { out: errorJson(version, ce), exit: 1 };
  }
}

function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof IpamExhausted) return new CniError(ERR.TRY_AGAIN_LATER, e.message, 'every address of the node\'s pod CIDR is held: delete pods (or run GC) and retry');
  const code = (e as NodeJS.ErrnoException)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  if (code && /^E[A-Z]+$/.test(code)) return new CniError(ERR.IO, msg, 'check that the IPAM directory is writable and the node has the tools (ip, nsenter, ethtool)');
  return new CniError(ERR.INTERNAL, msg);
}

// ---------------------------------------------------------------- config and env

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function parseConf(stdin: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(ERR.DECODE, 'the network configuration on stdin is not valid JSON', `${e instanceof Error ? e.message : String(e)}; pass the network configuration as a JSON object on stdin`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CniError(ERR.DECODE, 'the network configuration on stdin is not a JSON object', 'pass {"cniVersion":…, "name":…, "type":"twill-cni", …}');
  const r = raw as Record<string, unknown>;
  if (typeof r.cniVersion !== 'string' || !r.cniVersion) throw new CniError(ERR.INVALID_CONFIG, 'the network configuration has no "cniVersion"', `set "cniVersion" to one of ${SUPPORTED_VERSIONS.join(', ')}`);
  if (!supported(r.cniVersion)) throw new CniError(ERR.INCOMPATIBLE_VERSION, `cniVersion ${r.cniVersion} is not supported`, `twill-cni supports ${SUPPORTED_VERSIONS.join(', ')}: set "cniVersion" to one of them`);
  if (typeof r.name !== 'string' || !NAME_RE.test(r.name)) throw new CniError(ERR.INVALID_CONFIG, 'the network configuration has no valid "name"', '"name" must start with a letter or digit, then letters, digits, _ . or -');
  if (typeof r.type !== 'string' || !r.type) throw new CniError(ERR.INVALID_CONFIG, 'the network configuration has no "type"', 'set "type" to "twill-cni"');
  const num = (k: string, v: unknown): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 68 || v > 65535) throw new CniError(ERR.INVALID_CONFIG, `"${k}" must be an integer MTU between 68 and 65535`, `got ${JSON.stringify(v)}`);
    return v;
  };
  const ipamRaw = (r.ipam ?? {}) as Record<string, unknown>;
  if (typeof ipamRaw !== 'object' || Array.isArray(ipamRaw)) throw new CniError(ERR.INVALID_CONFIG, '"ipam" must be an object');
  if (ipamRaw.type !== undefined && ipamRaw.type !== 'twill-cni' && ipamRaw.type !== 'twill') {
    throw new CniError(ERR.UNSUPPORTED_FIELD, `ipam.type ${JSON.stringify(ipamRaw.type)} is not supported`, 'twill-cni allocates from the node\'s pod CIDR itself: remove "ipam.type" (or set it to "twill-cni")');
  }
  const str = (k: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !v) throw new CniError(ERR.INVALID_CONFIG, `"${k}" must be a non-empty string`, `got ${JSON.stringify(v)}`);
    return v;
  };
  const conf: NetConf = {
    cniVersion: r.cniVersion, name: r.name, type: r.type,
    agentSocket: str('agentSocket', r.agentSocket) ?? DEFAULT_SOCKET,
    mtu: num('mtu', r.mtu), hostMtu: num('hostMtu', r.hostMtu),
    ipam: {
      dataDir: str('ipam.dataDir', ipamRaw.dataDir) ?? DEFAULT_IPAM_DIR,
      subnet: str('ipam.subnet', ipamRaw.subnet), gateway: str('ipam.gateway', ipamRaw.gateway),
      rangeStart: str('ipam.rangeStart', ipamRaw.rangeStart), rangeEnd: str('ipam.rangeEnd', ipamRaw.rangeEnd),
    },
    dns: r.dns as Dns | undefined, prevResult: r.prevResult, raw: r,
  };
  if (conf.ipam.subnet) {
    try { parseIPv4Cidr(conf.ipam.subnet); } catch (e) { throw new CniError(ERR.INVALID_CONFIG, `ipam.subnet: ${(e as Error).message}`); }
  }
  return conf;
}

interface Target { containerId: string; ifname: string; netns?: string; podName: string; podNamespace: string }

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function target(env: Env, needNetns: boolean): Target {
  const missing = ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH', ...(needNetns ? ['CNI_NETNS'] : [])].filter((k) => !env[k]);
  if (missing.length) throw new CniError(ERR.INVALID_ENV, `required environment variables missing: ${missing.join(', ')}`, `${env.CNI_COMMAND} needs ${['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH', ...(needNetns ? ['CNI_NETNS'] : [])].join(', ')}`);
  const containerId = env.CNI_CONTAINERID!, ifname = env.CNI_IFNAME!;
  if (!NAME_RE.test(containerId)) throw new CniError(ERR.INVALID_ENV, `CNI_CONTAINERID ${JSON.stringify(containerId)} is not a valid container id`, 'it must start with a letter or digit, then letters, digits, _ . or -');
  if (!IFNAME_RE.test(ifname) || ifname === '.' || ifname === '..') throw new CniError(ERR.INVALID_ENV, `CNI_IFNAME ${JSON.stringify(ifname)} is not a valid interface name`, 'use 1-15 letters, digits, _ . or - (e.g. eth0)');
  const args = parseCniArgs(env.CNI_ARGS ?? '');
  return {
    containerId, ifname, netns: env.CNI_NETNS || undefined,
    podName: args.K8S_POD_NAME || containerId.slice(0, 12), podNamespace: args.K8S_POD_NAMESPACE || '',
  };
}

export function parseCniArgs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(';')) {
    if (!part) continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new CniError(ERR.INVALID_ENV, `CNI_ARGS is malformed at ${JSON.stringify(part)}`, 'CNI_ARGS must be KEY=VALUE pairs separated by ";" (e.g. K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0)');
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** The node-side veth of an attachment: twc + 12 hex of (containerId, ifname): 15 characters. */
export function hostIfName(containerId: string, ifname: string): string {
  return `twc${createHash('sha256').update(`${containerId}:${ifname}`).digest('hex').slice(0, 12)}`;
}

/** The network's address store; with a range (ADD, STATUS) it can allocate, without (DEL, CHECK, GC) it finds and releases by owner. */
function ipamOf(conf: NetConf, range?: { subnet: string; gateway: string }): Ipam {
  const dir = path.join(conf.ipam.dataDir, conf.name);
  if (!range) return new Ipam(dir);
  try {
    return new Ipam(dir, { ...range, rangeStart: conf.ipam.rangeStart, rangeEnd: conf.ipam.rangeEnd });
  } catch (e) {
    throw new CniError(ERR.INVALID_CONFIG, `ipam: ${(e as Error).message}`, 'fix ipam.subnet/rangeStart/rangeEnd');
  }
}

// ---------------------------------------------------------------- the agent

function agentDown(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ECONNRESET' || code === 'EPIPE';
}

async function agent(conf: NetConf, req: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  try {
    return await request(conf.agentSocket, req, timeoutMs);
  } catch (e) {
    if (agentDown(e)) {
      throw new CniError(ERR.TRY_AGAIN_LATER, `the twill agent is not ready at ${conf.agentSocket}`, `${(e as Error).message}; the runtime retries: start the agent on this node (twill agent) or fix "agentSocket"`);
    }
    throw new CniError(ERR.TRY_AGAIN_LATER, `the twill agent refused ${String(req.op)}: ${(e as Error).message}`, 'transient on a busy node: retry');
  }
}

// ---------------------------------------------------------------- ADD

async function cmdAdd(env: Env, conf: NetConf): Promise<Record<string, unknown>> {
  const t = target(env, true);
  const netns = t.netns!;
  if (!existsSync(netns)) throw new CniError(ERR.UNKNOWN_CONTAINER, `CNI_NETNS ${netns} does not exist`, 'the container\'s network namespace is gone or the path is wrong: pass its path (e.g. /var/run/netns/<name> or /proc/<pid>/ns/net)');
  const prev = conf.prevResult !== undefined ? parseResult(conf.prevResult) : undefined;
  const st = (await agent(conf, { op: 'status' }, 3000)) as AgentStatus;
  const subnet = conf.ipam.subnet ?? st.podCIDR;
  const gateway = conf.ipam.gateway ?? st.gatewayIP;
  const mtu = conf.mtu ?? st.mtu;
  const hostMtu = conf.hostMtu ?? mtu + VXLAN_OVERHEAD;
  const ipam = ipamOf(conf, { subnet, gateway });
  const owner: Owner = { containerId: t.containerId, ifname: t.ifname };
  const hostIf = hostIfName(t.containerId, t.ifname);

  const alloc = ipam.allocate(owner, { netns, pod: `${t.podNamespace}/${t.podName}` });
  let registered = false;
  try {
    if (alloc.existing) {
      // A retried ADD (the last one died or failed half-way): start again from scratch.
      log(`ADD ${t.containerId}: ${alloc.ip} was already held by this attachment; rewiring`);
      unwirePod('', hostIf);
    }
    const spec = { hostNs: '', podNs: netns, hostIf, podIf: t.ifname, ip: alloc.ip, prefixLen: ipam.prefixLen, gateway, mtu, hostMtu, txOffload: st.podTxOffload === true };
    let macs: { podMac: string; hostMac: string };
    try {
      macs = wirePod(spec);
    } catch (e) {
      if (!/File exists/.test((e as Error).message)) throw e;
      if (podLinkExists(netns, t.ifname)) {
        throw new CniError(ERR.INVALID_ENV, `interface ${t.ifname} already exists in ${netns}`, `CNI_IFNAME must name an interface the pod does not have yet: delete it or pick another name`);
      }
      unwirePod('', hostIf); // our node-side name, left from an attachment whose address record is gone
      macs = wirePod(spec);
    }
    const reply = (await agent(conf, { op: 'add', pod: { containerId: t.containerId, name: t.podName, namespace: t.podNamespace, ip: alloc.ip, mac: macs.podMac, hostIf, netns } })) as { gatewayIP?: string; mtu?: number };
    registered = true;
    if (reply?.gatewayIP && reply.gatewayIP !== gateway) log(`ADD ${t.containerId}: agent's gateway ${reply.gatewayIP} differs from ${gateway}`);

    const base: Result = prev ?? { interfaces: [], ips: [], routes: [], dns: {} };
    const off = base.interfaces.length;
    const result: Result = {
      interfaces: [...base.interfaces, { name: hostIf, mac: macs.hostMac, mtu: hostMtu }, { name: t.ifname, mac: macs.podMac, mtu, sandbox: netns }],
      ips: [...base.ips, { address: `${alloc.ip}/${ipam.prefixLen}`, gateway, interface: off + 1 }],
      routes: [...base.routes, { dst: '0.0.0.0/0', gw: gateway }],
      dns: conf.dns && Object.keys(conf.dns).length ? conf.dns : base.dns,
    };
    return formatResult(conf.cniVersion, result);
  } catch (e) {
    // Roll back whatever this ADD made: registration, veth pair, address.
    if (registered) await request(conf.agentSocket, { op: 'del', containerId: t.containerId }, 2000).catch(() => undefined);
    unwirePod('', hostIf);
    try { ipam.release(owner); } catch (re) { log(`rollback: releasing ${alloc.ip}: ${(re as Error).message}`); }
    throw e;
  }
}

function podLinkExists(netns: string, ifname: string): boolean {
  try { podExec(netns, 'ip', 'link', 'show', 'dev', ifname); return true; } catch { return false; }
}

// ---------------------------------------------------------------- DEL

async function cmdDel(env: Env, conf: NetConf): Promise<void> {
  const t = target(env, false);
  // Idempotent, and succeeds with the agent down or the netns gone: each step is best effort
  // except releasing the address, which is what DEL is for.
  try {
    await request(conf.agentSocket, { op: 'del', containerId: t.containerId }, 3000);
  } catch (e) {
    log(`DEL ${t.containerId}: agent not told (${(e as Error).message}); it skips pods whose veth is gone`);
  }
  unwirePod('', hostIfName(t.containerId, t.ifname));
  ipamOf(conf).release({ containerId: t.containerId, ifname: t.ifname });
}

// ---------------------------------------------------------------- CHECK

async function cmdCheck(env: Env, conf: NetConf): Promise<void> {
  if (!versionAtLeast(conf.cniVersion, '0.4.0')) throw new CniError(ERR.INCOMPATIBLE_VERSION, `CHECK is not part of cniVersion ${conf.cniVersion}`, 'CHECK needs cniVersion 0.4.0 or later');
  const t = target(env, true);
  const netns = t.netns!;
  if (conf.prevResult === undefined) throw new CniError(ERR.INVALID_CONFIG, 'CHECK needs "prevResult"', 'pass the result of the ADD as "prevResult"');
  const prev = parseResult(conf.prevResult);
  const fail = (msg: string, details = 'the attachment is not as ADD left it: DEL and ADD it again') => new CniError(ERR.CHECK_FAILED, msg, details);
  const ip = ipamOf(conf).find({ containerId: t.containerId, ifname: t.ifname });
  if (!ip) throw new CniError(ERR.UNKNOWN_CONTAINER, `no address is held for ${t.containerId}/${t.ifname}`, 'the attachment was never added, or was deleted');
  if (!existsSync(netns)) throw new CniError(ERR.UNKNOWN_CONTAINER, `CNI_NETNS ${netns} does not exist`);
  const idx = prev.interfaces.findIndex((i) => i.name === t.ifname && (i.sandbox === undefined || i.sandbox === netns));
  const pip = prev.ips.find((x) => x.interface === idx || idx < 0);
  if (!pip || pip.address.split('/')[0] !== ip) throw fail(`prevResult does not match: the attachment holds ${ip}`, `prevResult ips: ${JSON.stringify(prev.ips)}`);
  const hostIf = hostIfName(t.containerId, t.ifname);
  try { run('ip', ['link', 'show', 'dev', hostIf]); } catch { throw fail(`the node side ${hostIf} of the veth is missing`); }
  let addrs: { ifname: string; operstate: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  try {
    addrs = JSON.parse(podExec(netns, 'ip', '-j', 'addr', 'show', 'dev', t.ifname));
  } catch { throw fail(`interface ${t.ifname} is missing in ${netns}`); }
  if (!addrs[0]?.addr_info.some((a) => a.family === 'inet' && `${a.local}/${a.prefixlen}` === pip.address)) throw fail(`${t.ifname} in ${netns} does not have ${pip.address}`);
  const routes = JSON.parse(podExec(netns, 'ip', '-j', 'route', 'show', 'default')) as { gateway?: string; dev?: string }[];
  if (pip.gateway && !routes.some((r) => r.gateway === pip.gateway && r.dev === t.ifname)) throw fail(`${netns} has no default route via ${pip.gateway} dev ${t.ifname}`);
  const pods = (await agent(conf, { op: 'pods' })) as { containerId: string; ip: string; hostIf: string }[];
  const p = pods.find((x) => x.containerId === t.containerId);
  if (!p) throw fail(`the agent does not serve ${t.containerId}`, 'DEL and ADD the pod again');
  if (p.ip !== ip || p.hostIf !== hostIf) throw fail(`the agent serves ${t.containerId} as ${p.ip} on ${p.hostIf}, expected ${ip} on ${hostIf}`);
}

// ---------------------------------------------------------------- STATUS

async function cmdStatus(conf: NetConf): Promise<void> {
  if (!versionAtLeast(conf.cniVersion, '1.1.0')) throw new CniError(ERR.INCOMPATIBLE_VERSION, `STATUS is not part of cniVersion ${conf.cniVersion}`, 'STATUS needs cniVersion 1.1.0');
  let st: AgentStatus;
  try {
    st = (await request(conf.agentSocket, { op: 'status' }, 2000)) as AgentStatus;
  } catch (e) {
    throw new CniError(ERR.STATUS_UNAVAILABLE, `the twill agent is not available at ${conf.agentSocket}`, `${(e as Error).message}; start the agent on this node`);
  }
  const ipam = ipamOf(conf, { subnet: conf.ipam.subnet ?? st.podCIDR, gateway: conf.ipam.gateway ?? st.gatewayIP });
  if (ipam.free() === 0) throw new CniError(ERR.STATUS_UNAVAILABLE, `no free address in ${ipam.range!.subnet}`, 'delete pods or run GC');
}

// ---------------------------------------------------------------- GC

async function cmdGc(env: Env, conf: NetConf): Promise<void> {
  if (!versionAtLeast(conf.cniVersion, '1.1.0')) throw new CniError(ERR.INCOMPATIBLE_VERSION, `GC is not part of cniVersion ${conf.cniVersion}`, 'GC needs cniVersion 1.1.0');
  if (!env.CNI_PATH) throw new CniError(ERR.INVALID_ENV, 'required environment variables missing: CNI_PATH', 'GC needs CNI_PATH');
  const list = conf.raw['cni.dev/valid-attachments'] ?? conf.raw['cni.dev/attachments'];
  if (!Array.isArray(list)) throw new CniError(ERR.INVALID_CONFIG, 'GC needs "cni.dev/valid-attachments"', 'pass the list of attachments to keep, [{"containerID":…, "ifname":…}] ([] frees every address)');
  const valid = new Set<string>();
  const validIds = new Set<string>();
  for (const a of list as { containerID?: unknown; ifname?: unknown }[]) {
    if (!a || typeof a.containerID !== 'string' || typeof a.ifname !== 'string') throw new CniError(ERR.INVALID_CONFIG, 'an entry of "cni.dev/valid-attachments" lacks containerID or ifname', JSON.stringify(a));
    valid.add(`${a.containerID}:${a.ifname}`);
    validIds.add(a.containerID);
  }
  const ipam = ipamOf(conf);
  const errors: string[] = [];
  const gone = ipam.list().filter((x) => !valid.has(`${x.owner.containerId}:${x.owner.ifname}`));
  for (const { ip, owner } of gone) {
    try {
      if (!validIds.has(owner.containerId)) await request(conf.agentSocket, { op: 'del', containerId: owner.containerId }, 3000).catch(() => undefined);
      unwirePod('', hostIfName(owner.containerId, owner.ifname));
      ipam.release(owner);
      log(`GC: released ${ip} of ${owner.containerId}/${owner.ifname}`);
    } catch (e) {
      errors.push(`${ip} (${owner.containerId}/${owner.ifname}): ${(e as Error).message}`);
    }
  }
  ipam.sweep();
  if (errors.length) throw new CniError(ERR.IO, `GC could not release ${errors.length} address(es)`, errors.join('; '));
}
