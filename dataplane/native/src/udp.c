// UDP sockets (the VXLAN underlay), IPv4 or IPv6: batched receive with GRO,
// batched send, and one-call GSO send. An IPv6 socket takes and gives addresses
// as 4 host-order int32 words each (most significant first) where an IPv4 one
// uses one; each call finds the socket's family in fam_of (below).
#include "twill.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

// Per-thread scratch: worker_threads may call concurrently, calls never nest.
static __thread struct {
  struct mmsghdr m[TW_BATCH];
  struct iovec iov[TW_IOV];
  struct sockaddr_in sa[TW_BATCH];
  struct sockaddr_in6 sa6[TW_BATCH];
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl[TW_BATCH];
} S;

// The family of each socket udp_open_fd made, by fd (0: not ours, or closed
// by tw_close), so the hot path learns it with one load instead of a
// getsockopt(SO_DOMAIN). Process-wide like the fds (every worker_thread's
// instance shares this object's statics); relaxed loads and stores suffice:
// the fd number itself reaches another thread through JavaScript, after the
// store. An fd not in the table (above its size, or not from udpOpen) costs a
// getsockopt per call. Contract: close udpOpen's fds with native.close, or a
// later socket that reuses the number (not made by udpOpen) inherits the entry.
#define FAM_FDS 65536
static uint8_t fam_of[FAM_FDS]; // 0 unknown, 4 IPv4, 6 IPv6

static void remember(int fd, int family) {
  if ((unsigned)fd < FAM_FDS) __atomic_store_n(&fam_of[fd], family == AF_INET6 ? 6 : 4, __ATOMIC_RELAXED);
}

void tw_udp_forget(int fd) {
  if ((unsigned)fd < FAM_FDS) __atomic_store_n(&fam_of[fd], 0, __ATOMIC_RELAXED);
}

// True when fd is an IPv6 socket. Anything else (IPv4, a bad fd, not a socket)
// takes the IPv4 path, whose system call then reports what is wrong as before.
static inline bool is_v6(int32_t fd) {
  if ((uint32_t)fd < FAM_FDS) {
    uint8_t f = __atomic_load_n(&fam_of[fd], __ATOMIC_RELAXED);
    if (f) return f == 6;
  }
  int d;
  socklen_t l = sizeof d;
  return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &l) == 0 && d == AF_INET6;
}

bool udp_parse(napi_env env, napi_value addr, napi_value port, napi_value opts, struct udp_args *a) {
  char buf[64];
  size_t len;
  int32_t p;
  struct in_addr in;
  memset(a, 0, sizeof *a);
  if (!tw_str(env, addr, "addr", buf, sizeof buf, &len) || !tw_i32(env, port, "port", &p) || !tw_opts(env, opts))
    return false;
  // Text with a ':' is IPv6 (no zone: "%eth0" is refused); otherwise dotted IPv4.
  a->family = len < sizeof buf && strchr(buf, ':') ? AF_INET6 : AF_INET;
  if (len >= sizeof buf || (a->family == AF_INET ? inet_pton(AF_INET, buf, &in) : inet_pton(AF_INET6, buf, a->addr6)) != 1)
    return tw_throw_type(env, "addr must be an IPv4 or IPv6 address"), false;
  if (p < 0 || p > 0xffff) return tw_throw_range(env, "port must be 0..65535"), false;
  a->addr = a->family == AF_INET ? in.s_addr : 0;
  a->port = (uint16_t)p;
  a->incoming_cpu = -1;
  return tw_opt_bool(env, opts, "reusePort", &a->reuse_port) && tw_opt_bool(env, opts, "gro", &a->gro) &&
         tw_opt_i32(env, opts, "incomingCpu", &a->incoming_cpu);
}

static int setopt(int fd, int level, int name, int val) {
  return setsockopt(fd, level, name, &val, sizeof val);
}

int udp_open_fd(const void *p, const char **call) {
  const struct udp_args *a = p;
  int fd = socket(a->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return *call = "socket", -errno;
  // No SO_REUSEADDR: for UDP it lets two sockets that both set it bind the same
  // addr:port (and split traffic) instead of failing with EADDRINUSE.
  tw_set_bufs(fd);
  union { struct sockaddr sa; struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
  socklen_t salen;
  memset(&sa, 0, sizeof sa);
  if (a->family == AF_INET6) {
    sa.v6.sin6_family = AF_INET6;
    sa.v6.sin6_port = htons(a->port);
    memcpy(&sa.v6.sin6_addr, a->addr6, 16);
    salen = sizeof sa.v6;
  } else {
    sa.v4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(a->port), .sin_addr.s_addr = a->addr};
    salen = sizeof sa.v4;
  }
  // IPV6_V6ONLY: an IPv6 socket never sees IPv4 (no v4-mapped sources), and
  // "::" leaves the IPv4 port free for the IPv4 socket.
  if (a->family == AF_INET6 && setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0) *call = "IPV6_V6ONLY";
  else if (a->reuse_port && setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) *call = "SO_REUSEPORT";
  // Linux 6.2+: a reuseport group prefers the socket whose SO_INCOMING_CPU is
  // the receiving CPU, so a datagram wakes the worker already on that CPU.
  else if (a->incoming_cpu >= 0 && setopt(fd, SOL_SOCKET, SO_INCOMING_CPU, a->incoming_cpu) < 0) *call = "SO_INCOMING_CPU";
  else if (bind(fd, &sa.sa, salen) < 0) *call = "bind";
  else if (a->gro && setopt(fd, SOL_UDP, UDP_GRO, 1) < 0 && errno != ENOPROTOOPT) *call = "UDP_GRO";
  else { // ENOPROTOOPT: old kernel, receives just are not coalesced
    remember(fd, a->family);
    return fd;
  }
  int e = errno;
  close(fd);
  return -e;
}

napi_value tw_udp_open(napi_env env, napi_callback_info info) {
  TW_ARGS(3);
  struct udp_args a;
  const char *call = "";
  if (!udp_parse(env, argv[0], argv[1], argv[2], &a)) return NULL;
  int r = udp_open_fd(&a, &call);
  return tw_open_result(env, r, call);
}

// The segment size of a coalesced receive (UDP_GRO cmsg), else 0.
static inline int gro_size(struct msghdr *h) {
  int gso = 0; // the kernel adds the cmsg only for coalesced receives
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) memcpy(&gso, CMSG_DATA(c), sizeof gso);
  return gso;
}

// udpRecv(fd, arena, offs, lens, src, meta, max, cap). IPv6: src[4i..4i+3].
napi_value tw_udp_recv(napi_env env, napi_callback_info info) {
  TW_ARGS(8);
  int32_t fd, max, cap, *offs, *lens, *src, *meta;
  uint8_t *arena;
  size_t alen, no, nl, ns, nm;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_u8(env, argv[1], "arena", &arena, &alen) ||
      !tw_i32a(env, argv[2], "offs", &offs, &no) || !tw_i32a(env, argv[3], "lens", &lens, &nl) ||
      !tw_i32a(env, argv[4], "src", &src, &ns) || !tw_i32a(env, argv[5], "meta", &meta, &nm) ||
      !tw_i32(env, argv[6], "max", &max) || !tw_i32(env, argv[7], "cap", &cap))
    return NULL;
  bool v6 = is_v6(fd);
  if (v6) {
    if (max > 0 && ns / 4 < (size_t)max) return tw_throw_type(env, "src must hold 4 * max words on an IPv6 socket");
    ns = SIZE_MAX; // checked: 4 words for each of max entries
  }
  int n = max < 0 ? 0 : (int)tw_min(tw_min((size_t)max, TW_BATCH), tw_min(tw_min(no, nl), tw_min(ns, nm)));
  if (!tw_check_rx(env, offs, n, cap, alen)) return NULL;
  for (int i = 0; i < n; i++) {
    S.iov[i] = (struct iovec){arena + offs[i], (size_t)cap};
    S.m[i].msg_hdr = (struct msghdr){.msg_name = &S.sa[i], .msg_namelen = sizeof S.sa[i],
                                     .msg_iov = &S.iov[i], .msg_iovlen = 1,
                                     .msg_control = S.ctl[i].buf, .msg_controllen = sizeof S.ctl[i].buf};
    if (v6) S.m[i].msg_hdr.msg_name = &S.sa6[i], S.m[i].msg_hdr.msg_namelen = sizeof S.sa6[i];
  }
  int r;
  do r = recvmmsg(fd, S.m, (unsigned)n, MSG_DONTWAIT, NULL);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN ? tw_int(env, 0) : tw_throw_errno(env, "recvmmsg", errno);
  if (v6)
    for (int i = 0; i < r; i++) {
      lens[i] = (int32_t)S.m[i].msg_len;
      for (int w = 0; w < 4; w++) src[4 * i + w] = (int32_t)ntohl(S.sa6[i].sin6_addr.s6_addr32[w]);
      meta[i] = gro_size(&S.m[i].msg_hdr);
    }
  else
    for (int i = 0; i < r; i++) {
      lens[i] = (int32_t)S.m[i].msg_len;
      src[i] = (int32_t)ntohl(S.sa[i].sin_addr.s_addr);
      meta[i] = gro_size(&S.m[i].msg_hdr);
    }
  return tw_int(env, r);
}

// The host-order int32 IPv4 JavaScript holds, as a sockaddr.
static struct sockaddr_in dest(int32_t ip, int32_t port) {
  return (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl((uint32_t)ip)};
}

// The 4 host-order words JavaScript holds for an IPv6 address, as a sockaddr.
static struct sockaddr_in6 dest6(const int32_t *w, int32_t port) {
  struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
  for (int k = 0; k < 4; k++) sa.sin6_addr.s6_addr32[k] = htonl((uint32_t)w[k]);
  return sa;
}

// Destinations of the entries idx[0..count) lists (dst, dport as JavaScript passes them);
// on an IPv6 socket dst holds 4 words per entry.
static bool dests(napi_env env, const napi_value *argv, const struct tw_tx *t, bool v6, int32_t **dst, int32_t **dport) {
  size_t nd, np;
  if (!tw_i32a(env, argv[6], "dst", dst, &nd) || !tw_i32a(env, argv[7], "dport", dport, &np) ||
      !tw_tx_check(env, t, v6 ? np : tw_min(nd, np)))
    return false;
  int32_t top = -1; // the largest entry index
  for (int32_t k = 0; k < t->count; k++) {
    int32_t j = t->idx[k];
    if ((*dport)[j] < 0 || (*dport)[j] > 0xffff) return tw_throw_range(env, "dport must be 0..65535"), false;
    if (j > top) top = j;
  }
  if (v6 && nd / 4 < (size_t)top + 1)
    return tw_throw_type(env, "dst must hold 4 words per entry on an IPv6 socket (4 * (largest idx + 1))"), false;
  return true;
}

// Message `msg` of the scratch: `n` iovecs from iov[at], to entry j's destination.
static struct msghdr *message(int msg, int at, int n, bool v6, const int32_t *dst, int32_t j, int32_t port) {
  if (v6) {
    S.sa6[msg] = dest6(&dst[4 * (size_t)j], port);
    S.m[msg].msg_hdr = (struct msghdr){.msg_name = &S.sa6[msg], .msg_namelen = sizeof S.sa6[msg],
                                       .msg_iov = &S.iov[at], .msg_iovlen = (size_t)n};
  } else {
    S.sa[msg] = dest(dst[j], port);
    S.m[msg].msg_hdr = (struct msghdr){.msg_name = &S.sa[msg], .msg_namelen = sizeof S.sa[msg],
                                       .msg_iov = &S.iov[at], .msg_iovlen = (size_t)n};
  }
  return &S.m[msg].msg_hdr;
}

// udpSend(fd, arena, offs, lens, idx, count, dst, dport, more?): one datagram
// per packet (a chain of entries with `more`), to dst:dport of its first
// entry. Returns the number of entries sent (whole datagrams).
napi_value tw_udp_send(napi_env env, napi_callback_info info) {
  TW_ARGS(9);
  int32_t fd, *dst, *dport;
  struct tw_tx t;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_tx_args(env, argv, argv[8], &t)) return NULL;
  bool v6 = is_v6(fd);
  if (!dests(env, argv, &t, v6, &dst, &dport)) return NULL;
  int32_t sent = 0;
  while (sent < t.count) {
    int msgs = 0, iovs = 0, n;
    for (int32_t k = sent; k < t.count && msgs < TW_BATCH && (n = tw_tx_chain(&t, k, &S.iov[iovs], TW_IOV - iovs, NULL)); k += n) {
      int32_t j = t.idx[k];
      message(msgs++, iovs, n, v6, dst, j, dport[j]);
      iovs += n;
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

// udpSendGso(fd, arena, off, len, segSize, dst, dport)
napi_value tw_udp_send_gso(napi_env env, napi_callback_info info) {
  TW_ARGS(7);
  int32_t fd, off, len, seg, ip = 0, port, *ip6 = NULL;
  uint8_t *arena;
  size_t alen, n6 = 0;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_u8(env, argv[1], "arena", &arena, &alen) ||
      !tw_i32(env, argv[2], "off", &off) || !tw_i32(env, argv[3], "len", &len) ||
      !tw_i32(env, argv[4], "segSize", &seg))
    return NULL;
  bool v6 = is_v6(fd);
  if (v6 ? !tw_i32a(env, argv[5], "dst", &ip6, &n6) : !tw_i32(env, argv[5], "dst", &ip)) return NULL;
  if (v6 && n6 < 4) return tw_throw_type(env, "dst must be an Int32Array of 4 words on an IPv6 socket");
  if (!tw_i32(env, argv[6], "dport", &port)) return NULL;
  if (off < 0 || len < 0 || (size_t)off + (size_t)len > alen) return tw_throw_range(env, "off + len lies outside the arena");
  if (seg <= 0 || seg > 0xffff) return tw_throw_range(env, "segSize must be 1..65535");
  if (port < 0 || port > 0xffff) return tw_throw_range(env, "dport must be 0..65535");
  union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
  if (v6) sa.v6 = dest6(ip6, port);
  else sa.v4 = dest(ip, port);
  struct iovec iov = {arena + off, (size_t)len};
  union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct msghdr h = {.msg_name = &sa, .msg_namelen = v6 ? sizeof sa.v6 : sizeof sa.v4, .msg_iov = &iov, .msg_iovlen = 1,
                     .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t s = (uint16_t)seg;
  memcpy(CMSG_DATA(c), &s, sizeof s);
  ssize_t r;
  do r = sendmsg(fd, &h, MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) return tw_throw_errno(env, "sendmsg", errno);
  return tw_undef(env);
}

// Probe with getsockopt only, so the socket's behaviour is unchanged.
napi_value tw_udp_offloads(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  int32_t fd;
  if (!tw_i32(env, argv[0], "fd", &fd)) return NULL;
  int v;
  socklen_t l = sizeof v;
  bool gso = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &l) == 0;
  if (!gso && (errno == EBADF || errno == ENOTSOCK)) return tw_throw_errno(env, "getsockopt", errno);
  l = sizeof v;
  bool gro = getsockopt(fd, SOL_UDP, UDP_GRO, &v, &l) == 0;
  napi_value o, b1, b2;
  if (napi_create_object(env, &o) != napi_ok || napi_get_boolean(env, gso, &b1) != napi_ok ||
      napi_get_boolean(env, gro, &b2) != napi_ok || napi_set_named_property(env, o, "gso", b1) != napi_ok ||
      napi_set_named_property(env, o, "gro", b2) != napi_ok)
    return NULL;
  return o;
}

// udpSendRuns(fd, arena, offs, lens, idx, count, dst, dport, runs, nruns, more?):
// idx[0..count) falls into nruns consecutive runs of runs[r] entries, each run
// whole packets (chains with `more`). A run of one packet is a plain datagram;
// a longer run is one UDP_SEGMENT message whose segments are its packets, the
// segment size the first one's length (JavaScript chose them: same destination,
// every packet that length but the last, which may be shorter; checked here).
// All runs go out in sendmmsg calls. Returns the number of entries sent (whole
// runs only).
napi_value tw_udp_send_runs(napi_env env, napi_callback_info info) {
  TW_ARGS(11);
  int32_t fd, nruns, *dst, *dport, *runs;
  size_t nr, bytes;
  struct tw_tx t;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_tx_args(env, argv, argv[10], &t) ||
      !tw_i32a(env, argv[8], "runs", &runs, &nr) || !tw_i32(env, argv[9], "nruns", &nruns))
    return NULL;
  bool v6 = is_v6(fd);
  if (!dests(env, argv, &t, v6, &dst, &dport)) return NULL;
  if (nruns < 0 || (size_t)nruns > nr) return tw_throw_range(env, "nruns outside runs");
  int32_t k = 0;
  for (int32_t r = 0; r < nruns; r++) {
    if (runs[r] < 1 || runs[r] > TW_IOV || runs[r] > t.count - k) return tw_throw_range(env, "runs[r] must be 1..1024 and add up to count");
    int32_t end = k + runs[r];
    size_t seg = 0;
    for (int n; k < end; k += n) {
      n = tw_tx_chain(&t, k, S.iov, TW_IOV, &bytes);
      if (k + n > end) return tw_throw_range(env, "a run must hold whole chains");
      if (seg == 0) seg = bytes;
      else if (bytes > seg || (bytes < seg && k + n < end)) return tw_throw_range(env, "a run's packets must be its first one's length, the last no longer");
    }
    if (seg > 0xffff) return tw_throw_range(env, "a run's segment size must be at most 65535");
  }
  if (k != t.count) return tw_throw_range(env, "runs must add up to count");
  int32_t sent = 0, r = 0;
  k = 0; // r: next run, k: its first entry
  while (r < nruns) {
    int msgs = 0, iovs = 0;
    int32_t kk = k;
    // Fill one sendmmsg with as many whole runs as the scratch holds.
    while (r + msgs < nruns && msgs < TW_BATCH && iovs + runs[r + msgs] <= TW_IOV) {
      int32_t end = kk + runs[r + msgs], first = t.idx[kk];
      size_t seg = 0;
      int segs = 0;
      for (int n; kk < end; kk += n, segs++) {
        n = tw_tx_chain(&t, kk, &S.iov[iovs], TW_IOV - iovs, &bytes);
        iovs += n;
        if (segs == 0) seg = bytes;
      }
      struct msghdr *h = message(msgs, iovs - runs[r + msgs], runs[r + msgs], v6, dst, first, dport[first]);
      if (segs > 1) {
        memset(S.ctl[msgs].buf, 0, sizeof S.ctl[msgs].buf);
        h->msg_control = S.ctl[msgs].buf;
        h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s16 = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &s16, sizeof s16);
      }
      msgs++;
    }
    int got = sendmmsg(fd, S.m, (unsigned)msgs, MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (tw_send_stops(env, sent, "sendmmsg")) break;
      return NULL;
    }
    for (int i = 0; i < got; i++) { sent += runs[r]; k += runs[r]; r++; }
    if (got < msgs) break;
  }
  return tw_int(env, sent);
}

// udpSteer(fd, prog): the classic BPF program that picks the socket of the
// reuseport group (index in binding order; it sees the UDP payload, from
// offset 0, on IPv4 and IPv6 sockets alike: the kernel pulls the UDP header
// in both families before it runs the program).
napi_value tw_udp_steer(napi_env env, napi_callback_info info) {
  return tw_attach_cbpf(env, info, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, "SO_ATTACH_REUSEPORT_CBPF");
}
