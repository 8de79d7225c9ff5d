// AF_PACKET raw sockets: frames in and out of veths/NICs, batched with
// recvmmsg/sendmmsg.
#include "twill.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

// Per-thread scratch: worker_threads may call concurrently, calls never nest.
static __thread struct {
  struct mmsghdr m[TW_BATCH];
  struct iovec iov[TW_IOV];
  struct sockaddr_ll sa[TW_BATCH];
} S;

bool pkt_parse(napi_env env, napi_value ifname, napi_value opts, struct pkt_args *a) {
  size_t len;
  memset(a, 0, sizeof *a);
  if (!tw_str(env, ifname, "ifname", a->ifname, sizeof a->ifname, &len) || !tw_opts(env, opts)) return false;
  if (len >= IFNAMSIZ) return tw_throw_errno(env, "if_nametoindex", ENODEV), false;
  if (!tw_opt_i32(env, opts, "fanoutGroup", &a->fanout) || !tw_opt_bool(env, opts, "fanoutCpu", &a->fanout_cpu) ||
      !tw_opt_bool(env, opts, "fanoutCbpf", &a->fanout_cbpf) ||
      !tw_opt_bool(env, opts, "vnetHdr", &a->vnet_hdr) ||
      !tw_opt_bool(env, opts, "qdiscBypass", &a->qdisc_bypass) ||
      !tw_opt_bool(env, opts, "ignoreOutgoing", &a->ignore_outgoing))
    return false;
  if (a->fanout < 0 || a->fanout > 0xffff) return tw_throw_range(env, "fanoutGroup must be 0..65535"), false;
  if (a->fanout_cpu && a->fanout_cbpf) return tw_throw_type(env, "fanoutCpu and fanoutCbpf exclude each other"), false;
  return true;
}

static int setopt(int fd, int name, int val) {
  return setsockopt(fd, SOL_PACKET, name, &val, sizeof val);
}

// A fanout group has one tap of its own: the members' PACKET_IGNORE_OUTGOING
// does not reach it, this flag (Linux 6.8+) does. Without it every frame we
// send out of a veth wakes a worker that then throws the copy away.
#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif

static int fanout(int fd, const struct pkt_args *a) {
  int mode = a->fanout_cbpf ? PACKET_FANOUT_CBPF : a->fanout_cpu ? PACKET_FANOUT_CPU : PACKET_FANOUT_HASH;
  int flags = mode | PACKET_FANOUT_FLAG_DEFRAG;
  if (a->ignore_outgoing && setopt(fd, PACKET_FANOUT, a->fanout | ((flags | PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16)) == 0)
    return 0;
  // Older kernels refuse the flag (EINVAL): join without it; copies of our sends are then skipped on receive.
  return setopt(fd, PACKET_FANOUT, a->fanout | (flags << 16));
}

int pkt_open_fd(const void *p, const char **call) {
  const struct pkt_args *a = p;
  // Protocol 0: the socket sees nothing until bind() names ETH_P_ALL and the
  // interface, so no frame of another interface slips in before bind, and an
  // unbound send-only socket never receives copies of all traffic.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return *call = "socket", -errno;
  tw_set_bufs(fd);
  struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
  if (a->vnet_hdr && setopt(fd, PACKET_VNET_HDR, 1) < 0) *call = "PACKET_VNET_HDR";
  else if (a->ignore_outgoing && setopt(fd, PACKET_IGNORE_OUTGOING, 1) < 0) *call = "PACKET_IGNORE_OUTGOING";
  else if (a->ifname[0] && !(sll.sll_ifindex = (int)if_nametoindex(a->ifname))) *call = "if_nametoindex";
  else if (a->ifname[0] && bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) *call = "bind";
  else if (a->qdisc_bypass && setopt(fd, PACKET_QDISC_BYPASS, 1) < 0) *call = "PACKET_QDISC_BYPASS";
  else if (a->fanout > 0 && fanout(fd, a) < 0)
    *call = "PACKET_FANOUT";
  else return fd;
  int e = errno;
  close(fd);
  return -e;
}

napi_value tw_packet_open(napi_env env, napi_callback_info info) {
  TW_ARGS(2);
  struct pkt_args a;
  const char *call = "";
  if (!pkt_parse(env, argv[0], argv[1], &a)) return NULL;
  int r = pkt_open_fd(&a, &call);
  return tw_open_result(env, r, call);
}

// packetRecv(fd, arena, offs, lens, meta, max, cap)
napi_value tw_packet_recv(napi_env env, napi_callback_info info) {
  TW_ARGS(7);
  int32_t fd, max, cap, *offs, *lens, *meta;
  uint8_t *arena;
  size_t alen, no, nl, nm;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_u8(env, argv[1], "arena", &arena, &alen) ||
      !tw_i32a(env, argv[2], "offs", &offs, &no) || !tw_i32a(env, argv[3], "lens", &lens, &nl) ||
      !tw_i32a(env, argv[4], "meta", &meta, &nm) || !tw_i32(env, argv[5], "max", &max) ||
      !tw_i32(env, argv[6], "cap", &cap))
    return NULL;
  int n = max < 0 ? 0 : (int)tw_min(tw_min((size_t)max, TW_BATCH), tw_min(no, tw_min(nl, nm)));
  if (!tw_check_rx(env, offs, n, cap, alen)) return NULL;
  int got = 0;
  // Outgoing frames (other sockets' sends, the stack's own transmits) are
  // dropped and the slots refilled; the round limit bounds time spent here.
  for (int round = 0; round < 8 && got < n; round++) {
    for (int i = got; i < n; i++) {
      S.iov[i] = (struct iovec){arena + offs[i], (size_t)cap};
      S.m[i].msg_hdr = (struct msghdr){.msg_name = &S.sa[i], .msg_namelen = sizeof S.sa[i],
                                       .msg_iov = &S.iov[i], .msg_iovlen = 1};
    }
    int want = n - got;
    int r = recvmmsg(fd, &S.m[got], (unsigned)want, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || got > 0) break;
      return tw_throw_errno(env, "recvmmsg", errno);
    }
    int keep = got;
    for (int i = got; i < got + r; i++) {
      if (S.sa[i].sll_pkttype == PACKET_OUTGOING) continue;
      if (keep != i) memmove(arena + offs[keep], arena + offs[i], S.m[i].msg_len);
      lens[keep] = (int32_t)S.m[i].msg_len;
      meta[keep++] = S.sa[i].sll_ifindex;
    }
    got = keep;
    if (r < want) break; // queue drained
  }
  return tw_int(env, got);
}

// packetSend(fd, arena, offs, lens, idx, count, ifindex, more?): one message
// per frame (a chain of entries with `more`), out of interface ifindex[j] of
// its first entry j. Returns the number of entries sent (whole frames).
napi_value tw_packet_send(napi_env env, napi_callback_info info) {
  TW_ARGS(8);
  int32_t fd, *ifx;
  size_t nx;
  struct tw_tx t;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_tx_args(env, argv, argv[7], &t) ||
      !tw_i32a(env, argv[6], "ifindex", &ifx, &nx) || !tw_tx_check(env, &t, nx))
    return NULL;
  int32_t sent = 0;
  while (sent < t.count) {
    int msgs = 0, iovs = 0, n;
    for (int32_t k = sent; k < t.count && msgs < TW_BATCH && (n = tw_tx_chain(&t, k, &S.iov[iovs], TW_IOV - iovs, NULL)); k += n) {
      // SOCK_RAW: the frame carries its own Ethernet header; ETH_P_ALL makes
      // the kernel take skb->protocol from that header.
      S.sa[msgs] = (struct sockaddr_ll){.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                                        .sll_ifindex = ifx[t.idx[k]], .sll_halen = 6};
      S.m[msgs].msg_hdr = (struct msghdr){.msg_name = &S.sa[msgs], .msg_namelen = sizeof S.sa[msgs],
                                          .msg_iov = &S.iov[iovs], .msg_iovlen = (size_t)n};
      iovs += n;
      msgs++;
    }
    int r = sendmmsg(fd, S.m, (unsigned)msgs, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (tw_send_stops(env, sent, "sendmmsg")) break;
      return NULL;
    }
    for (int i = 0; i < r; i++) sent += (int32_t)S.m[i].msg_hdr.msg_iovlen;
    if (r < msgs) break;
  }
  return tw_int(env, sent);
}

// packetSteer(fd, prog): the classic BPF program that picks the member of a
// PACKET_FANOUT_CBPF group (it sees the frame from the network header on).
napi_value tw_packet_steer(napi_env env, napi_callback_info info) {
  return tw_attach_cbpf(env, info, SOL_PACKET, PACKET_FANOUT_DATA, "PACKET_FANOUT_DATA");
}
