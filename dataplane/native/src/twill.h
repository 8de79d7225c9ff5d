// Shared declarations for the twill native addon. The addon only moves bytes
// between kernel and arena; every helper here is about arguments and errors.
#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

// Largest batch one recvmmsg/sendmmsg call handles; scratch arrays are sized by it.
#define TW_BATCH 256
// Largest iovec list (UIO_MAXIOV): bounds one chain, and the iovec scratch of one send call.
#define TW_IOV 1024

// ---- errors (addon.c) ----
const char *tw_errname(int err, char buf[16]);
napi_value tw_throw_errno(napi_env env, const char *call, int err); // returns NULL
napi_value tw_throw_type(napi_env env, const char *msg);            // returns NULL
napi_value tw_throw_range(napi_env env, const char *msg);           // returns NULL

// ---- arguments (addon.c); each returns false after throwing ----
bool tw_i32(napi_env env, napi_value v, const char *what, int32_t *out);
// Copies at most cap-1 bytes into buf; *len gets the full UTF-8 length.
bool tw_str(napi_env env, napi_value v, const char *what, char *buf, size_t cap, size_t *len);
bool tw_u8(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len);
bool tw_i32a(napi_env env, napi_value v, const char *what, int32_t **data, size_t *len);
bool tw_opts(napi_env env, napi_value v); // object, undefined or null
bool tw_opt_bool(napi_env env, napi_value opts, const char *key, bool *out);
bool tw_opt_i32(napi_env env, napi_value opts, const char *key, int32_t *out); // absent: *out unchanged
// A classic BPF program from JavaScript: an Int32Array of (code | jt << 16 | jf << 24, k) pairs.
#include <linux/filter.h>
#define TW_CBPF_MAX 256
bool tw_cbpf(napi_env env, napi_value v, struct sock_filter *insns, struct sock_fprog *prog);
// fn(fd, prog): setsockopt(fd, level, name, prog); `what` names it in errors.
napi_value tw_attach_cbpf(napi_env env, napi_callback_info info, int level, int name, const char *what);
// Receive slots: offs[0..n) each with room for cap bytes inside the arena.
bool tw_check_rx(napi_env env, const int32_t *offs, int n, int32_t cap, size_t alen);
// Send entries, as every send takes them: argv[1..5] = arena, offs, lens, idx,
// count, and `more` (a Uint8Array, or undefined: every entry is a whole packet).
// With more, a packet is a chain: more[j] = 1 says entry j's bytes continue in
// the entry idx lists next; the chain leaves as one message (one iovec list).
struct tw_tx {
  uint8_t *arena, *more;
  size_t alen, nidx, nent;
  int32_t *offs, *lens, *idx, count;
};
bool tw_tx_args(napi_env env, const napi_value *argv, napi_value more, struct tw_tx *t);
// Checks idx[0..count): entries < nent (and inside the arrays) whose [offs, offs+lens)
// lie in the arena, chains of at most TW_IOV entries, the last one ending at count.
bool tw_tx_check(napi_env env, const struct tw_tx *t, size_t nent);
// The chain that starts at idx[k] as iovecs: returns its entry count, or 0 when
// it has more than `room`; *bytes (if given) gets its length. After tw_tx_check.
int tw_tx_chain(const struct tw_tx *t, int32_t k, struct iovec *iov, int room, size_t *bytes);
// After a send failed with errno (not EINTR), `sent` entries having gone out:
// true when the caller should stop and return `sent` (backpressure, or an
// error once something went out: the retry of the next packet reports it);
// otherwise it throws the error as `call` and returns false.
bool tw_send_stops(napi_env env, int32_t sent, const char *call);
static inline size_t tw_min(size_t a, size_t b) { return a < b ? a : b; }

napi_value tw_int(napi_env env, int64_t v);
napi_value tw_undef(napi_env env);
void tw_set_bufs(int fd); // SO_RCVBUF/SO_SNDBUF 4 MB, forced when permitted

// ---- opening: pure C so it can run on a thread inside another netns ----
// Returns an fd, or -errno with *call naming the failing call.
typedef int (*tw_open_fn)(const void *args, const char **call);
int tw_run_in_ns(const char *ns_path, tw_open_fn fn, const void *args, const char **call);
napi_value tw_open_result(napi_env env, int r, const char *call);

struct tun_args { char name[16]; bool multi_queue, vnet_hdr; };
bool tun_parse(napi_env env, napi_value name, napi_value opts, struct tun_args *a);
int tun_open_fd(const void *args, const char **call);

struct pkt_args { char ifname[16]; int32_t fanout; bool fanout_cpu, fanout_cbpf, vnet_hdr, qdisc_bypass, ignore_outgoing; };
bool pkt_parse(napi_env env, napi_value ifname, napi_value opts, struct pkt_args *a);
int pkt_open_fd(const void *args, const char **call);

// family AF_INET: addr in network order; AF_INET6: addr6 (IPV6_V6ONLY). incoming_cpu -1: unset.
struct udp_args { int family; uint32_t addr; uint8_t addr6[16]; uint16_t port; bool reuse_port, gro; int32_t incoming_cpu; };
bool udp_parse(napi_env env, napi_value addr, napi_value port, napi_value opts, struct udp_args *a);
int udp_open_fd(const void *args, const char **call);
// close() of an fd: forget the family udp_open_fd recorded for it (udp.c).
void tw_udp_forget(int fd);

// sched_setattr's argument (linux/sched/types.h; glibc has no wrapper): poll.c's waitPolicy.
struct tw_sched_attr {
  uint32_t size, sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
  uint32_t sched_util_min, sched_util_max;
};

// ---- exported functions ----
#define TW_FUNCS(X)                                                                  \
  X(tunOpen, tw_tun_open) X(tunSetOffload, tw_tun_set_offload) X(tunRead, tw_tun_read) \
  X(tunWrite, tw_tun_write) X(packetOpen, tw_packet_open) X(packetRecv, tw_packet_recv) \
  X(packetSend, tw_packet_send) X(udpOpen, tw_udp_open) X(udpRecv, tw_udp_recv)        \
  X(udpSend, tw_udp_send) X(udpSendGso, tw_udp_send_gso) X(udpOffloads, tw_udp_offloads) \
  X(udpSendRuns, tw_udp_send_runs)                                                   \
  X(poll, tw_poll) X(eventfd, tw_eventfd) X(eventfdSignal, tw_eventfd_signal)          \
  X(eventfdDrain, tw_eventfd_drain) X(close, tw_close) X(ifIndex, tw_if_index)          \
  X(cpus, tw_cpus) X(pinThread, tw_pin_thread) X(threadName, tw_thread_name)         \
  X(waitPolicy, tw_wait_policy) X(runnable, tw_runnable)                            \
  X(udpSteer, tw_udp_steer) X(packetSteer, tw_packet_steer)                           \
  X(tunOpenIn, tw_tun_open_in) X(packetOpenIn, tw_packet_open_in) X(udpOpenIn, tw_udp_open_in)

#define TW_DECL(js, c) napi_value c(napi_env env, napi_callback_info info);
TW_FUNCS(TW_DECL)
#undef TW_DECL

// Fetch up to N arguments (missing ones are undefined).
#define TW_ARGS(N)                                                        \
  napi_value argv[N];                                                     \
  size_t argc = N;                                                        \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL
