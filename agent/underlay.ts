// The underlay: which interface VXLAN runs over, the address the engine sends
// from and receives on, the address announced to the other nodes, and the MTU.
// Chosen as flanneld chooses its external interface (main.go, pkg/ipmatch):
//   - `iface`: names or IPv4 addresses, tried in order; the first that exists wins
//     (an address picks the interface that holds it, and is itself the address);
//   - then `ifaceRegex`: regexes, tried in order, each against every interface's
//     IPv4 addresses first, then against the interfaces' names;
//   - with neither, the interface holding `publicIP` (or the address the cluster
//     source already knows for this node), else the interface of the IPv4 default
//     route (flanneld's default);
// and the interface's first IPv4 address (global before link-local). `publicIP`
// only changes what is announced. The pod MTU is the interface's MTU minus
// VXLAN's 50 bytes (flannel's vxlan backend), unless `underlayMTU` overrides it.
//
// IPv6 (flanneld's dual stack, pkg/ipmatch): the same interface, and its first
// global IPv6 address as flannel orders them (GetInterfaceIP6Addrs: deprecated ones
// never; permanent before autoconfigured, non-temporary before temporary); an
// `iface` entry that is an IPv6 address, or `publicIPv6` when an interface holds
// it, picks the interface holding it and is itself the address. `publicIPv6`
// (flanneld's --public-ipv6) changes what is announced. An interface without a
// global IPv6 address gives the node no IPv6 underlay (flannel would fall back to
// a link-local address, which no other node can reach without a zone).
import { execFileSync } from 'node:child_process';
import { isIPv4, isIPv6 } from 'node:net';
import { VXLAN_OVERHEAD } from '../dataplane/packet/vxlan.js';
import { parseIPv6Address } from '../lib/ipv6.js';

export interface UnderlayConfig {
  iface?: string | string[]; // flanneld's --iface (repeatable): interface names, IPv4 or IPv6 addresses
  ifaceRegex?: string | string[]; // flanneld's --iface-regex (repeatable)
  publicIP?: string; // flanneld's --public-ip: the address announced to the other nodes
  publicIPv6?: string; // flanneld's --public-ipv6: the IPv6 address announced to the other nodes
  underlayMTU?: number; // overrides the interface's MTU
}

export interface Underlay {
  iface: string; // the interface VXLAN runs over
  address: string; // its IPv4 address: the engine sends from and receives on it
  publicIP: string; // what the other nodes send to: publicIP, else address
  address6?: string; // the interface's IPv6 address IPv6 VXLAN is sent from and received on (absent: no IPv6 underlay)
  publicIP6?: string; // what the other nodes send IPv6 VXLAN to: publicIPv6, else address6 (absent with address6)
  linkMTU: number; // the interface's MTU
  mtu: number; // the underlay MTU in force: underlayMTU if set, else linkMTU
  podMTU: number; // mtu - 50
  chosenBy: string; // how the interface was found, for the log
}

const MIN_POD_MTU = 68; // IPv4's minimum

interface Link { ifindex: number; ifname: string; mtu: number; addrs: string[]; addrs6: Addr6[] }
interface Addr6 { local: string; dynamic?: boolean; temporary?: boolean; deprecated?: boolean }

function ipJson(netns: string | undefined, args: string[]): unknown[] {
  const argv = [...(netns ? ['-n', netns] : []), '-j', ...args];
  try {
    return JSON.parse(execFileSync('ip', argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) || '[]') as unknown[];
  } catch (e) {
    throw new Error(`underlay: \`ip ${argv.join(' ')}\` failed: ${String((e as { stderr?: string }).stderr || (e as Error).message).trim()}`);
  }
}

const isLinkLocal = (a: string) => a.startsWith('169.254.');
// flannel's GetInterfaceIP4Addrs: global unicast first, then link-local; loopback, multicast, 0.0.0.0 and broadcast never.
const usable = (a: string) => {
  const first = Number(a.split('.')[0]);
  return first !== 127 && first !== 0 && first < 224;
};

function links(netns?: string): Link[] {
  return (ipJson(netns, ['addr', 'show']) as { ifindex: number; ifname: string; mtu: number; addr_info?: ({ family: string; local: string } & Addr6)[] }[])
    .map((l) => ({
      ifindex: l.ifindex, ifname: l.ifname, mtu: l.mtu,
      addrs: (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local),
      addrs6: (l.addr_info ?? []).filter((a) => a.family === 'inet6').map((a) => ({ local: a.local, dynamic: a.dynamic, temporary: a.temporary, deprecated: a.deprecated })),
    }));
}

/** Go's IsGlobalUnicast for IPv6: not ::, ::1, multicast (ff00::/8) or link-local (fe80::/10). ULAs are global. */
function isGlobal6(a: string): boolean {
  const w = parseIPv6Address(a);
  if ((w[0] | w[1] | w[2]) === 0 && (w[3] === 0 || w[3] === 1)) return false;
  const top = w[0] >>> 16;
  return (top & 0xff00) !== 0xff00 && (top & 0xffc0) !== 0xfe80;
}

/**
 * The interface's global IPv6 addresses as flannel orders them (GetInterfaceIP6Addrs,
 * compareAddrs): deprecated ones left out; permanent (configured) before dynamic
 * (autoconfigured), non-temporary before temporary; otherwise the kernel's order.
 */
function ordered6(l: Link): string[] {
  const rank = (a: Addr6) => (a.dynamic ? 2 : 0) + (a.temporary ? 1 : 0);
  return l.addrs6.filter((a) => !a.deprecated && isGlobal6(a.local))
    .map((a, i) => ({ a, i }))
    .sort((x, y) => rank(x.a) - rank(y.a) || x.i - y.i)
    .map((x) => x.a.local);
}
/** Whether the interface holds this IPv6 address (compared as addresses, not text). */
const holds6 = (l: Link, a: string) => { const w = parseIPv6Address(a).join(); return l.addrs6.some((x) => parseIPv6Address(x.local).join() === w); };

/** The interface's IPv4 addresses as flannel orders them: global first, then link-local. */
function ordered(l: Link): string[] {
  const ok = l.addrs.filter(usable);
  return [...ok.filter((a) => !isLinkLocal(a)), ...ok.filter(isLinkLocal)];
}

const describe = (all: Link[]) => all.map((l) => `${l.ifname}:[${l.addrs.join(' ')}]`).join(', ');
const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** The interface of the first IPv4 default route of the main table. */
function defaultRouteLink(all: Link[], netns?: string): Link {
  const routes = ipJson(netns, ['-4', 'route', 'show', 'default']) as { dev?: string; nexthops?: { dev?: string }[] }[];
  if (!routes.length) throw new Error(`underlay: no IPv4 default route${netns ? ` in ${netns}` : ''} to take the interface from: set "iface", "ifaceRegex" or "publicIP"`);
  const dev = routes[0].dev ?? routes[0].nexthops?.[0]?.dev;
  const l = all.find((x) => x.ifname === dev);
  if (!l) throw new Error(`underlay: the default route names no interface here (${JSON.stringify(routes[0])})`);
  return l;
}

/**
 * Picks the underlay as flanneld would; `known` is the address the cluster source
 * already holds for this node (the lab's datastore), used like publicIP to find
 * the interface, and `known6` its IPv6 address, used like publicIPv6. `netns` runs
 * the lookups in another network namespace (tests).
 */
export function chooseUnderlay(cfg: UnderlayConfig, o: { known?: string; known6?: string; netns?: string } = {}): Underlay {
  if (cfg.publicIP !== undefined && !isIPv4(cfg.publicIP)) throw new Error(`publicIP "${cfg.publicIP}" is not an IPv4 address`);
  if (cfg.publicIPv6 !== undefined && !isIPv6(cfg.publicIPv6)) throw new Error(`publicIPv6 "${cfg.publicIPv6}" is not an IPv6 address`);
  const regexes = list(cfg.ifaceRegex).map((r) => {
    try { return { src: r, re: new RegExp(r) }; } catch (e) { throw new Error(`ifaceRegex "${r}": ${(e as Error).message}`); }
  });
  const names = list(cfg.iface);
  const all = links(o.netns);
  let found: { link: Link; address?: string; address6?: string; re?: RegExp; chosenBy: string } | undefined;
  if (names.length || regexes.length) {
    const skipped: string[] = []; // what matched but could not serve (flanneld moves on to the next option)
    const take = (link: Link, address: string | undefined, chosenBy: string, more: { address6?: string; re?: RegExp } = {}): boolean => {
      const a = address ?? ordered(link)[0];
      if (!a) { skipped.push(`${link.ifname} (${chosenBy}) has no IPv4 address`); return false; }
      found = { link, address: a, chosenBy, ...more };
      return true;
    };
    for (const n of names) {
      const link = isIPv4(n) ? all.find((l) => l.addrs.includes(n)) : isIPv6(n) ? all.find((l) => holds6(l, n)) : all.find((l) => l.ifname === n);
      if (link && take(link, isIPv4(n) ? n : undefined, `iface ${n}`, isIPv6(n) ? { address6: n } : {})) break;
    }
    for (const { src, re } of found ? [] : regexes) {
      let hit: { link: Link; address: string } | undefined;
      for (const link of all) {
        const a = ordered(link).find((x) => re.test(x));
        if (a) { hit = { link, address: a }; break; }
      }
      if (hit && take(hit.link, hit.address, `ifaceRegex ${src} (address)`, { re })) break;
      const link = hit ? undefined : all.find((l) => re.test(l.ifname));
      if (link && take(link, undefined, `ifaceRegex ${src} (name)`)) break;
    }
    if (!found) {
      const asked = [names.length ? `iface ${JSON.stringify(names)}` : '', regexes.length ? `ifaceRegex ${JSON.stringify(regexes.map((r) => r.src))}` : ''].filter(Boolean).join(' or ');
      throw new Error(`underlay: no interface matches ${asked}${skipped.length ? ` with an IPv4 address (${skipped.join('; ')})` : ''}; interfaces here: ${describe(all)}`);
    }
  } else {
    // flanneld looks the interface up by its --public-ip (else its --public-ipv6); an
    // address no interface holds (a NAT's) leaves it at the default route's, where
    // flanneld would stop.
    const want = cfg.publicIP ?? o.known, want6 = cfg.publicIPv6 ?? o.known6;
    const link = want ? all.find((l) => l.addrs.includes(want)) : undefined;
    const link6 = link || !want6 ? undefined : all.find((l) => holds6(l, want6));
    found = link ? { link, address: want, chosenBy: `the interface holding ${want}` }
      : link6 ? { link: link6, address6: want6, chosenBy: `the interface holding ${want6}` }
      : { link: defaultRouteLink(all, o.netns), chosenBy: 'the default route' };
  }
  const { link } = found;
  const address = found.address ?? ordered(link)[0];
  if (!address) throw new Error(`underlay: interface ${link.ifname} (${found.chosenBy}) has no IPv4 address`);
  if (!link.mtu) throw new Error(`underlay: could not read the MTU of ${link.ifname}`);
  if (cfg.underlayMTU !== undefined && (!Number.isInteger(cfg.underlayMTU) || cfg.underlayMTU <= 0)) throw new Error(`underlayMTU ${String(cfg.underlayMTU)} is not a positive integer`);
  const mtu = cfg.underlayMTU ?? link.mtu;
  const podMTU = podMtuOf(mtu);
  if (podMTU < MIN_POD_MTU) throw new Error(`underlay MTU ${mtu} (${cfg.underlayMTU !== undefined ? 'config "underlayMTU"' : `interface ${link.ifname}`}) leaves ${podMTU} bytes for pods after VXLAN's ${VXLAN_OVERHEAD}, under IPv4's minimum ${MIN_POD_MTU}`);
  const u: Underlay = { iface: link.ifname, address, publicIP: cfg.publicIP ?? o.known ?? address, linkMTU: link.mtu, mtu, podMTU, chosenBy: found.chosenBy };
  const address6 = found.address6 ?? address6Of(link, cfg.publicIPv6, o.known6, all, found);
  if (address6) Object.assign(u, { address6, publicIP6: cfg.publicIPv6 ?? o.known6 ?? address6 });
  return u;
}

/**
 * The chosen interface's IPv6 address: publicIPv6 (or the known one) when it holds
 * it, else one its ifaceRegex matched, else its first global one; undefined when it
 * has none. As flanneld, publicIPv6 held by another interface is refused, and so is
 * publicIPv6 given for an interface with no IPv6 address to send from.
 */
function address6Of(link: Link, publicIPv6: string | undefined, known6: string | undefined, all: Link[], found: { re?: RegExp; chosenBy: string }): string | undefined {
  const want6 = publicIPv6 ?? known6;
  if (want6 && holds6(link, want6)) return want6;
  const elsewhere = publicIPv6 ? all.find((l) => holds6(l, publicIPv6)) : undefined;
  if (elsewhere) throw new Error(`underlay: publicIPv6 ${publicIPv6} is on interface ${elsewhere.ifname}, not on ${link.ifname} (${found.chosenBy}): IPv4 and IPv6 VXLAN run over one interface, as flanneld requires`);
  const mine = ordered6(link);
  const a = (found.re && mine.find((x) => found.re!.test(x))) || mine[0];
  if (!a && publicIPv6) throw new Error(`underlay: publicIPv6 ${publicIPv6} given, but interface ${link.ifname} (${found.chosenBy}) has no global IPv6 address to send IPv6 VXLAN from`);
  return a;
}

/** The pod MTU over an underlay of this MTU (flannel's vxlan backend: minus 50 for IPv4). */
export function podMtuOf(underlayMTU: number): number {
  return underlayMTU - VXLAN_OVERHEAD;
}
