// The packet graph's names (stages/graph.ts declares the graph with them):
// where a batch came from, and the outputs a packet leaves by.
export const FROM_POD = 0, FROM_TUN = 1, FROM_VXLAN = 2, FROM_VXLAN6 = 3; // VXLAN over the IPv4 / IPv6 underlay
export const OUT_TUN = 0, OUT_POD = 1, OUT_UDP = 2, OUT_UDP6 = 3;
