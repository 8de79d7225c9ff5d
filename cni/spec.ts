// CNI spec pieces: versions, well-known error codes, and the result in the
// format of each supported version (0.3.1 and 0.4.0 carry "version" in ips;
// 1.0.0 dropped it; 1.1.0 added interface mtu, among other fields).

export const SUPPORTED_VERSIONS = ['0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/**
 * twill's own version, as package.json has it (test/cli/cli.test.ts keeps the two equal);
 * `twill --version` and twill-cni print it. A constant, not a read of package.json:
 * twill-cni is a single executable with no package.json beside it. It lives here, with
 * the plugin's sources, so a change rebuilds the executable.
 */
export const VERSION = '0.1.0';
export const LATEST = '1.1.0';

export const ERR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO: 5,
  DECODE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  STATUS_UNAVAILABLE: 50,
  STATUS_LIMITED: 51,
  // plugin-specific (100+)
  CHECK_FAILED: 100,
  INTERNAL: 999,
} as const;

export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details = '') { super(msg); }
}

export function supported(v: string): boolean { return (SUPPORTED_VERSIONS as readonly string[]).includes(v); }

/** a >= b for x.y.z versions. */
export function versionAtLeast(a: string, b: string): boolean {
  const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) > (pb[i] ?? 0);
  return true;
}

export interface Iface { name: string; mac?: string; sandbox?: string; mtu?: number }
export interface IPConfig { address: string; gateway?: string; interface?: number }
export interface Route { dst: string; gw?: string }
export interface Dns { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] }
/** Version-neutral result. */
export interface Result { interfaces: Iface[]; ips: IPConfig[]; routes: Route[]; dns: Dns }

/** Reads a result of any supported version (prevResult). */
export function parseResult(raw: unknown): Result {
  if (!raw || typeof raw !== 'object') throw new CniError(ERR.DECODE, 'prevResult is not a JSON object');
  const r = raw as Record<string, unknown>;
  const arr = (k: string) => (Array.isArray(r[k]) ? (r[k] as Record<string, unknown>[]) : []);
  return {
    interfaces: arr('interfaces').map((i) => ({ name: String(i.name), mac: i.mac as string | undefined, sandbox: i.sandbox as string | undefined, mtu: i.mtu as number | undefined })),
    ips: arr('ips').map((i) => ({ address: String(i.address), gateway: i.gateway as string | undefined, interface: i.interface as number | undefined })),
    routes: arr('routes').map((x) => ({ dst: String(x.dst), gw: x.gw as string | undefined })),
    dns: (r.dns && typeof r.dns === 'object' ? r.dns : {}) as Dns,
  };
}

/** The result as the given version prints it. */
export function formatResult(version: string, r: Result): Record<string, unknown> {
  const v1 = versionAtLeast(version, '1.0.0');
  const v11 = versionAtLeast(version, '1.1.0');
  const out: Record<string, unknown> = {
    cniVersion: version,
    interfaces: r.interfaces.map((i) => strip({ name: i.name, mac: i.mac, mtu: v11 ? i.mtu : undefined, sandbox: i.sandbox })),
    ips: r.ips.map((i) => strip({ version: v1 ? undefined : (i.address.includes(':') ? '6' : '4'), address: i.address, gateway: i.gateway, interface: i.interface })),
  };
  if (r.routes.length) out.routes = r.routes.map((x) => strip({ dst: x.dst, gw: x.gw }));
  out.dns = r.dns;
  return out;
}

function strip<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

export function errorJson(version: string, e: CniError): string {
  return JSON.stringify({ cniVersion: version, code: e.code, msg: e.message, details: e.details || undefined });
}
