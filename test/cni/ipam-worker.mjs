// One IPAM operation in its own process (the CNI plugin is one process per call).
// argv: <bundled ipam module> <dir> <subnets> <op: alloc|release|cycle> <containerId> [rangeEnds]
// <subnets> is one CIDR or several, comma-separated (e.g. 10.244.1.0/24,fd00:10:244:1::/64: a
// dual-stack ADD, which allocates IPv4 then IPv6 in the same store); [rangeEnds] likewise, by position.
// The gateway of each is its network + 1 (.1, ::1).
const [mod, dir, subnetList, op, id, rangeEndList] = process.argv.slice(2);
const { Ipam } = await import(mod);
const ends = (rangeEndList || '').split(',');
const gatewayOf = (s) => (s.includes(':') ? s.replace(/::\/\d+$/, '::1') : s.replace(/\.0\/\d+$/, '.1'));
const stores = subnetList.split(',').map((subnet, i) => new Ipam(dir, { subnet, gateway: gatewayOf(subnet), rangeEnd: ends[i] || undefined }));
const owner = { containerId: id, ifname: 'eth0' };
try {
  if (op === 'alloc') {
    const ips = stores.map((s) => s.allocate(owner).ip);
    console.log(JSON.stringify({ ok: true, ip: ips[0], ips }));
  } else if (op === 'release') console.log(JSON.stringify({ ok: true, freed: stores[0].release(owner) }));
  else if (op === 'cycle') { for (;;) { for (const s of stores) s.allocate(owner); stores[0].release(owner); } } // until killed
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message, exhausted: /no free address/.test(e.message) }));
}
