// One IPAM operation in its own process (the CNI plugin is one process per call).
// argv: <bundled ipam module> <dir> <subnet> <op: alloc|release|cycle> <containerId> [rangeEnd]
const [mod, dir, subnet, op, id, rangeEnd] = process.argv.slice(2);
const { Ipam } = await import(mod);
const ipam = new Ipam(dir, { subnet, gateway: subnet.replace(/\.0\/\d+$/, '.1'), rangeEnd: rangeEnd || undefined });
const owner = { containerId: id, ifname: 'eth0' };
try {
  if (op === 'alloc') console.log(JSON.stringify({ ok: true, ip: ipam.allocate(owner).ip }));
  else if (op === 'release') console.log(JSON.stringify({ ok: true, freed: ipam.release(owner) }));
  else if (op === 'cycle') { for (;;) { ipam.allocate(owner); ipam.release(owner); } } // until killed
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message, exhausted: /no free address/.test(e.message) }));
}
