// Per-worker packet counters, written only by their worker (plain stores into a
// shared Float64Array) and summed by the main thread for stats and metrics.
export const COUNTER_NAMES = [
  'rx_tun', 'rx_pod', 'rx_vxlan',
  'tx_tun', 'tx_pod', 'tx_vxlan', 'tx_errors', 'rx_errors',
  'arp_replies', 'icmp_frag_needed_sent', 'nd_replies', 'icmp6_too_big_sent', 'tx_vxlan6', 'rx_vxlan6',
  'drop_malformed', 'drop_truncated', 'drop_not_ip', 'drop_wrong_family', 'drop_spoofed', 'drop_unknown_port',
  'drop_no_route', 'drop_policy_ingress', 'drop_policy_egress', 'conntrack_full', 'drop_ttl', 'drop_too_big', 'drop_bad_vni', 'drop_hairpin', 'drop_tx_busy',
  'inner_csum_completed', 'batches',
  'rx_pod_gso', 'tx_segments', 'pod_csum_completed', 'tx_pod_gso', 'coalesced_segments', 'drop_gso_unsupported',
  'rx_tun_gso', 'tx_tun_gso',
  'rx_vxlan_gso', 'translated_replies', 'translated_full',
  // what the parsers tell apart (stages/parse.ts), and the overlay's trust checks (ingress-vxlan.ts, forward.ts)
  'drop_bad_version', 'drop_bad_header_length', 'drop_bad_total_length', 'drop_bad_checksum', 'drop_bad_vxlan_flags', 'drop_bad_arp', 'drop_bad_l4',
  'drop_unknown_vtep', 'drop_foreign_source', 'drop_overlay_port', 'drop_overlay_dst', 'arp_ignored', 'nd_ignored',
  // how each worker spends its time (µs): whether it is saturated (engine/worker.ts)
  'busy_us', 'spin_us',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;
export const NCOUNTERS = COUNTER_NAMES.length;

/** One worker's counters. */
export function workerCounters(stats: Float64Array, worker: number): Record<CounterName, number> {
  const out = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((name, i) => { out[name] = stats[worker * NCOUNTERS + i]; });
  return out;
}

export function sumCounters(stats: Float64Array, workers: number): Record<CounterName, number> {
  const out = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((name, i) => {
    let s = 0;
    for (let w = 0; w < workers; w++) s += stats[w * NCOUNTERS + i];
    out[name] = s;
  });
  return out;
}
