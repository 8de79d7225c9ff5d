// twill-cni: the CNI plugin (spec 0.3.1 … 1.1.0: ADD, DEL, CHECK, VERSION,
// STATUS, GC). The runtime runs it inside the node's network namespace with
// CNI_* variables and the network configuration on stdin. ADD takes one address
// per family from the node's pod CIDRs (learnt from the agent, as flannel users
// expect, or fixed by ipam.subnet/subnet6), wires the veth (cni/wire.ts) and
// registers the pod with the node's agent, which serves it. Everything half-made
// is undone on failure.
//
// Families. The agent's status says podCIDR/gatewayIP (IPv4) and, on an IPv6 or
// dual-stack node, podCIDR6/gatewayIP6. With both the pod is dual-stack: an IPv4
// address (.2 up) and an IPv6 one (::2 up), a default route per family, and the
// result lists IPv4 first, as host-local does for a dual-stack kind cluster. With
// podCIDR6 only (podCIDR '' or absent) the pod is IPv6-only. ipam.subnet and
// ipam.subnet6 override the agent's ranges each for its family (so a conf can add
// a family the agent does not announce).
//
// Network configuration (twill's own fields, all optional):
//   agentSocket  the agent's unix socket             (default /run/twill/agent.sock)
//   mtu          the pod's MTU                         (default: the agent's)
//   hostMtu      the node side's MTU                   (default: mtu + 50)
//   ipam.dataDir where addresses are kept             (default /var/lib/twill/ipam; <dataDir>/<name>/, both families)
//   ipam.subnet, ipam.gateway, ipam.rangeStart, ipam.rangeEnd       IPv4 (default: the agent's podCIDR and gatewayIP)
//   ipam.subnet6, ipam.gateway6, ipam.rangeStart6, ipam.rangeEnd6   IPv6 (default: the agent's podCIDR6 and
//                gatewayIP6; a gateway6 defaults to the subnet6's ::1 when the agent's is not inside it)
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { request } from '../agent/socket.js';
import { wirePod, unwirePod, podExec } from './wire.js';
import { run } from '../lib/sh.js';
import { Ipam, IpamExhausted, canonicalIP, type Owner } from './ipam.js';
import { parseIPv4Cidr } from '../lib/ipv4.js';
import { addToIPv6, formatIPv6Address, inIPv6Cidr, parseIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';
import type { AddReply, NodeStatus } from '../agent/node-socket.js';
import type { PodRecord } from '../agent/pods.js';
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
  ipam: {
    dataDir: string;
    subnet?: string; gateway?: string; rangeStart?: string; rangeEnd?: string; // IPv4
    subnet6?: string; gateway6?: string; rangeStart6?: string; rangeEnd6?: string; // IPv6
  };
  dns?: Dns;
  prevResult?: unknown;
  raw: Record<string, unknown>;
}


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
      subnet6: str('ipam.subnet6', ipamRaw.subnet6), gateway6: str('ipam.gateway6', ipamRaw.gateway6),
      rangeStart6: str('ipam.rangeStart6', ipamRaw.rangeStart6), rangeEnd6: str('ipam.rangeEnd6', ipamRaw.rangeEnd6),
    },
    dns: r.dns as Dns | undefined, prevResult: r.prevResult, raw: r,
  };
  const check = (k: string, v: string | undefined, parse: (s: string) => unknown, fix: string) => {
    if (v === undefined) return;
    try { parse(v); } catch (e) { throw new CniError(ERR.INVALID_CONFIG, `${k}: ${(e as Error).message}`, fix); }
  };
  check('ipam.subnet', conf.ipam.subnet, parseIPv4Cidr, 'ipam.subnet is the IPv4 range, e.g. 10.244.1.0/24 (IPv6 goes in ipam.subnet6)');
  check('ipam.subnet6', conf.ipam.subnet6, parseIPv6Cidr, 'ipam.subnet6 is the IPv6 range, e.g. fd00:10:244:1::/64');
  for (const k of ['gateway6', 'rangeStart6', 'rangeEnd6'] as const) check(`ipam.${k}`, conf.ipam[k], parseIPv6Address, `ipam.${k} is an IPv6 address`);
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

/** The network's address store; with a range (ADD, STATUS) it can allocate, without (DEL, CHECK, GC) it finds and releases by owner, both families. */
function ipamOf(conf: NetConf, range?: { subnet: string; gateway: string; rangeStart?: string; rangeEnd?: string }): Ipam {
  const dir = path.join(conf.ipam.dataDir, conf.name);
  if (!range) return new Ipam(dir);
  try {
    return new Ipam(dir, range);
  } catch (e) {
    const six = range.subnet.includes(':') ? '6' : '';
    throw new CniError(ERR.INVALID_CONFIG, `ipam: ${(e as Error).message}`, `fix ipam.subnet${six}/gateway${six}/rangeStart${six}/rangeEnd${six}`);
  }
}

/** A family's range, store and gateway for this ADD (or STATUS). */
interface Stack { ipam: Ipam; gateway: string }

/**
 * The ranges this node's pods get addresses from: IPv4 from ipam.subnet or the agent's podCIDR,
 * IPv6 from ipam.subnet6 or the agent's podCIDR6; either may be absent, not both.
 */
function stacksOf(conf: NetConf, st: NodeStatus): { v4?: Stack; v6?: Stack } {
  const out: { v4?: Stack; v6?: Stack } = {};
  const subnet = conf.ipam.subnet ?? (st.podCIDR || undefined);
  if (subnet) {
    const gateway = conf.ipam.gateway ?? st.gatewayIP;
    out.v4 = { gateway, ipam: ipamOf(conf, { subnet, gateway, rangeStart: conf.ipam.rangeStart, rangeEnd: conf.ipam.rangeEnd }) };
  }
  const subnet6 = conf.ipam.subnet6 ?? (st.podCIDR6 || undefined);
  if (subnet6) {
    let c: { addr: Uint32Array; len: number };
    try { c = parseIPv6Cidr(subnet6); } catch (e) { throw new CniError(ERR.INVALID_CONFIG, `the node's IPv6 pod CIDR: ${(e as Error).message}`, 'fix ipam.subnet6 (or the agent\'s podCIDR6)'); }
    const inside = (g: string | undefined): string | undefined => {
      try { return g && inIPv6Cidr(parseIPv6Address(g), c.addr, c.len) ? formatIPv6Address(parseIPv6Address(g)) : undefined; } catch { return undefined; }
    };
    // The agent's gateway when it lies in the range; else the range's ::1 (the node's TUN has it, by convention).
    const gateway = conf.ipam.gateway6 ? formatIPv6Address(parseIPv6Address(conf.ipam.gateway6)) : inside(st.gatewayIP6) ?? formatIPv6Address(addToIPv6(c.addr, 1));
    out.v6 = { gateway, ipam: ipamOf(conf, { subnet: `${formatIPv6Address(c.addr)}/${c.len}`, gateway, rangeStart: conf.ipam.rangeStart6, rangeEnd: conf.ipam.rangeEnd6 }) };
  }
  if (!out.v4 && !out.v6) {
    throw new CniError(ERR.TRY_AGAIN_LATER, `the twill agent at ${conf.agentSocket} announces no pod CIDR for node ${st.node ?? '?'}`, 'the node has no podCIDR/podCIDR6 yet: the runtime retries (or set ipam.subnet / ipam.subnet6)');
  }
  return out;
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
  const st = (await agent(conf, { op: 'status' }, 3000)) as NodeStatus;
  const mtu = conf.mtu ?? st.mtu;
  const hostMtu = conf.hostMtu ?? mtu + VXLAN_OVERHEAD;
  const { v4, v6 } = stacksOf(conf, st);
  const owner: Owner = { containerId: t.containerId, ifname: t.ifname };
  const hostIf = hostIfName(t.containerId, t.ifname);

  let registered = false;
  let a4: { ip: string; existing: boolean } | undefined;
  let a6: { ip: string; existing: boolean } | undefined;
  try {
    // IPv4 first, then IPv6; a kill between the two leaves the IPv4 address held, which a
    // retried ADD finds again (and a DEL or GC frees: release() takes both families).
    const extra = { netns, pod: `${t.podNamespace}/${t.podName}` };
    a4 = v4?.ipam.allocate(owner, extra);
    a6 = v6?.ipam.allocate(owner, extra);
    if (a4?.existing || a6?.existing) {
      // A retried ADD (the last one died or failed half-way): start again from scratch.
      log(`ADD ${t.containerId}: ${[a4, a6].filter((a) => a?.existing).map((a) => a!.ip).join(', ')} already held by this attachment; rewiring`);
      unwirePod('', hostIf);
    }
    const spec = {
      hostNs: '', podNs: netns, hostIf, podIf: t.ifname, mtu, hostMtu, txOffload: st.podTxOffload === true,
      ip: a4?.ip, prefixLen: v4?.ipam.prefixLen, gateway: v4?.gateway,
      ip6: a6?.ip, prefixLen6: v6?.ipam.prefixLen, gateway6: v6?.gateway,
    };
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
    const pod: PodRecord = { containerId: t.containerId, name: t.podName, namespace: t.podNamespace, ip: a4?.ip ?? '', ...(a6 ? { ip6: a6.ip } : {}), mac: macs.podMac, hostIf, netns };
    const reply = (await agent(conf, { op: 'add', pod })) as Partial<AddReply> | undefined;
    registered = true;
    if (v4 && reply?.gatewayIP && reply.gatewayIP !== v4.gateway) log(`ADD ${t.containerId}: agent's gateway ${reply.gatewayIP} differs from ${v4.gateway}`);
    if (v6 && reply?.gatewayIP6 && canonicalOrNull(reply.gatewayIP6) !== v6.gateway) log(`ADD ${t.containerId}: agent's IPv6 gateway ${reply.gatewayIP6} differs from ${v6.gateway}`);

    const base: Result = prev ?? { interfaces: [], ips: [], routes: [], dns: {} };
    const off = base.interfaces.length;
    const ips: Result['ips'] = [], routes: Result['routes'] = [];
    if (v4 && a4) { ips.push({ address: `${a4.ip}/${v4.ipam.prefixLen}`, gateway: v4.gateway, interface: off + 1 }); routes.push({ dst: '0.0.0.0/0', gw: v4.gateway }); }
    if (v6 && a6) { ips.push({ address: `${a6.ip}/${v6.ipam.prefixLen}`, gateway: v6.gateway, interface: off + 1 }); routes.push({ dst: '::/0', gw: v6.gateway }); }
    const result: Result = {
      interfaces: [...base.interfaces, { name: hostIf, mac: macs.hostMac, mtu: hostMtu }, { name: t.ifname, mac: macs.podMac, mtu, sandbox: netns }],
      ips: [...base.ips, ...ips],
      routes: [...base.routes, ...routes],
      dns: conf.dns && Object.keys(conf.dns).length ? conf.dns : base.dns,
    };
    return formatResult(conf.cniVersion, result);
  } catch (e) {
    // Roll back whatever this ADD made: registration, veth pair, addresses (both families).
    if (registered) await request(conf.agentSocket, { op: 'del', containerId: t.containerId }, 2000).catch(() => undefined);
    unwirePod('', hostIf);
    try { ipamOf(conf).release(owner); } catch (re) { log(`rollback: releasing ${[a4?.ip, a6?.ip].filter(Boolean).join(', ')}: ${(re as Error).message}`); }
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
  const held = ipamOf(conf).findAll({ containerId: t.containerId, ifname: t.ifname }); // IPv4 first
  if (!held.length) throw new CniError(ERR.UNKNOWN_CONTAINER, `no address is held for ${t.containerId}/${t.ifname}`, 'the attachment was never added, or was deleted');
  if (!existsSync(netns)) throw new CniError(ERR.UNKNOWN_CONTAINER, `CNI_NETNS ${netns} does not exist`);
  const idx = prev.interfaces.findIndex((i) => i.name === t.ifname && (i.sandbox === undefined || i.sandbox === netns));
  // Every address held (one per family) must be in prevResult, on our interface (anywhere, if it does not list
  // the interface). Others there may be a chained plugin's: not ours to judge.
  const mine = prev.ips.filter((x) => x.interface === idx || idx < 0).map((x) => ({ ...x, ip: canonicalOrNull(x.address.split('/')[0]) }));
  const pips = held.map((ip) => mine.find((x) => x.ip === ip));
  if (pips.some((x) => !x)) throw fail(`prevResult does not match: the attachment holds ${held.join(', ')}`, `prevResult ips: ${JSON.stringify(prev.ips)}`);
  const hostIf = hostIfName(t.containerId, t.ifname);
  try { run('ip', ['link', 'show', 'dev', hostIf]); } catch { throw fail(`the node side ${hostIf} of the veth is missing`); }
  let addrs: { ifname: string; operstate: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  try {
    addrs = JSON.parse(podExec(netns, 'ip', '-j', 'addr', 'show', 'dev', t.ifname));
  } catch { throw fail(`interface ${t.ifname} is missing in ${netns}`); }
  const routes: Record<string, { gateway?: string; dev?: string }[]> = {};
  for (const pip of pips as (typeof mine[number])[]) {
    const six = pip.ip!.includes(':');
    const [, len] = pip.address.split('/');
    if (!addrs[0]?.addr_info.some((a) => a.family === (six ? 'inet6' : 'inet') && canonicalOrNull(a.local) === pip.ip && String(a.prefixlen) === len)) {
      throw fail(`${t.ifname} in ${netns} does not have ${pip.address}`);
    }
    if (!pip.gateway) continue;
    const fam = six ? '-6' : '-4';
    routes[fam] ??= JSON.parse(podExec(netns, 'ip', '-j', fam, 'route', 'show', 'default')) as { gateway?: string; dev?: string }[];
    const gw = canonicalOrNull(pip.gateway);
    if (!routes[fam].some((r) => r.gateway !== undefined && canonicalOrNull(r.gateway) === gw && r.dev === t.ifname)) {
      throw fail(`${netns} has no default route${six ? ' (::/0)' : ''} via ${pip.gateway} dev ${t.ifname}`);
    }
  }
  const ip4 = held.find((ip) => !ip.includes(':')), ip6 = held.find((ip) => ip.includes(':'));
  const pods = (await agent(conf, { op: 'pods' })) as PodRecord[];
  const p = pods.find((x) => x.containerId === t.containerId);
  if (!p) throw fail(`the agent does not serve ${t.containerId}`, 'DEL and ADD the pod again');
  const as = (ip: string, v6?: string) => [ip, v6].filter(Boolean).join(' and ') || 'no address';
  if ((p.ip || undefined) !== ip4 || (p.ip6 ? canonicalOrNull(p.ip6) : undefined) !== ip6 || p.hostIf !== hostIf) {
    throw fail(`the agent serves ${t.containerId} as ${as(p.ip, p.ip6)} on ${p.hostIf}, expected ${as(ip4 ?? '', ip6)} on ${hostIf}`);
  }
}

/** An address in the IPAM store's canonical text, or null when it is not one. */
function canonicalOrNull(ip: string): string | null {
  try { return canonicalIP(ip); } catch { return null; }
}

// ---------------------------------------------------------------- STATUS

async function cmdStatus(conf: NetConf): Promise<void> {
  if (!versionAtLeast(conf.cniVersion, '1.1.0')) throw new CniError(ERR.INCOMPATIBLE_VERSION, `STATUS is not part of cniVersion ${conf.cniVersion}`, 'STATUS needs cniVersion 1.1.0');
  let st: NodeStatus;
  try {
    st = (await request(conf.agentSocket, { op: 'status' }, 2000)) as NodeStatus;
  } catch (e) {
    throw new CniError(ERR.STATUS_UNAVAILABLE, `the twill agent is not available at ${conf.agentSocket}`, `${(e as Error).message}; start the agent on this node`);
  }
  let stacks: { v4?: Stack; v6?: Stack };
  try { stacks = stacksOf(conf, st); } catch (e) { throw new CniError(ERR.STATUS_UNAVAILABLE, (e as Error).message, (e as CniError).details ?? ''); }
  for (const s of [stacks.v4, stacks.v6]) {
    if (s && s.ipam.free() === 0) throw new CniError(ERR.STATUS_UNAVAILABLE, `no free address in ${s.ipam.range!.subnet}`, 'delete pods or run GC');
  }
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
  // One attachment may hold two addresses (IPv4 and IPv6): each stale owner is released once, both together.
  const gone = new Map<string, { owner: Owner; ips: string[] }>();
  for (const { ip, owner } of ipam.list()) {
    const key = `${owner.containerId}:${owner.ifname}`;
    if (valid.has(key)) continue;
    const g = gone.get(key) ?? gone.set(key, { owner, ips: [] }).get(key)!;
    g.ips.push(ip);
  }
  for (const { owner, ips } of gone.values()) {
    try {
      if (!validIds.has(owner.containerId)) await request(conf.agentSocket, { op: 'del', containerId: owner.containerId }, 3000).catch(() => undefined);
      unwirePod('', hostIfName(owner.containerId, owner.ifname));
      ipam.release(owner);
      log(`GC: released ${ips.join(', ')} of ${owner.containerId}/${owner.ifname}`);
    } catch (e) {
      errors.push(`${ips.join(', ')} (${owner.containerId}/${owner.ifname}): ${(e as Error).message}`);
    }
  }
  ipam.sweep();
  if (errors.length) throw new CniError(ERR.IO, `GC could not release ${errors.length} address(es)`, errors.join('; '));
}
