// Parse result codes. Parsers return one of these instead of throwing, so the
// engine can count drops per reason with a plain Int array indexed by code.
// Plain consts (not `const enum`) so isolatedModules/vitest/esbuild all inline-or-import them alike.

export const R_OK = 0;
export const R_TRUNCATED = 1;
export const R_BAD_VERSION = 2;
export const R_BAD_IHL = 3;
export const R_BAD_TOTAL_LENGTH = 4;
export const R_BAD_CHECKSUM = 5;
export const R_BAD_EXT_HEADER = 6;
export const R_UNSUPPORTED_ETHERTYPE = 7;
export const R_BAD_VXLAN_FLAGS = 8;
export const R_BAD_ARP = 9;
/** Not returned by the parsers (they return R_OK and set F_FRAG = 2); for engines that count non-first fragments. */
export const R_FRAGMENT = 10;
export const R_BAD_L4 = 11;

export const R_COUNT = 12;

export const REASON_NAMES: readonly string[] = Object.freeze([
  'OK',
  'TRUNCATED',
  'BAD_VERSION',
  'BAD_IHL',
  'BAD_TOTAL_LENGTH',
  'BAD_CHECKSUM',
  'BAD_EXT_HEADER',
  'UNSUPPORTED_ETHERTYPE',
  'BAD_VXLAN_FLAGS',
  'BAD_ARP',
  'FRAGMENT',
  'BAD_L4',
]);
