// TUN devices: open/attach a queue, set offloads, move packets with read/write.
#include "twill.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/if_tun.h>

#define VNET_HDR_LEN 10 // sizeof(struct virtio_net_hdr), no num_buffers

bool tun_parse(napi_env env, napi_value name, napi_value opts, struct tun_args *a) {
  size_t len;
  memset(a, 0, sizeof *a);
  if (!tw_str(env, name, "name", a->name, sizeof a->name, &len) || !tw_opts(env, opts)) return false;
  // The kernel would silently truncate ifr_name to 15 bytes and create a device
  // under another name; report what dev_valid_name() would say instead.
  if (len >= IFNAMSIZ) return tw_throw_errno(env, "TUNSETIFF", EINVAL), false;
  return tw_opt_bool(env, opts, "multiQueue", &a->multi_queue) &&
         tw_opt_bool(env, opts, "vnetHdr", &a->vnet_hdr);
}

int tun_open_fd(const void *p, const char **call) {
  const struct tun_args *a = p;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return *call = "open", -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, a->name, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (a->multi_queue ? IFF_MULTI_QUEUE : 0) |
                  (a->vnet_hdr ? IFF_VNET_HDR : 0);
  int hdr = VNET_HDR_LEN;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) *call = "TUNSETIFF";
  else if (a->vnet_hdr && ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) *call = "TUNSETVNETHDRSZ";
  else return fd;
  int e = errno;
  close(fd);
  return -e;
}

napi_value tw_tun_open(napi_env env, napi_callback_info info) {
  TW_ARGS(2);
  struct tun_args a;
  const char *call = "";
  if (!tun_parse(env, argv[0], argv[1], &a)) return NULL;
  int r = tun_open_fd(&a, &call);
  return tw_open_result(env, r, call);
}

napi_value tw_tun_set_offload(napi_env env, napi_callback_info info) {
  TW_ARGS(2);
  int32_t fd, flags;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_i32(env, argv[1], "flags", &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(uint32_t)flags) < 0)
    return tw_throw_errno(env, "TUNSETOFFLOAD", errno);
  return tw_undef(env);
}

// tunRead(fd, arena, offs, lens, max, cap)
napi_value tw_tun_read(napi_env env, napi_callback_info info) {
  TW_ARGS(6);
  int32_t fd, max, cap, *offs, *lens;
  uint8_t *arena;
  size_t alen, no, nl;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_u8(env, argv[1], "arena", &arena, &alen) ||
      !tw_i32a(env, argv[2], "offs", &offs, &no) || !tw_i32a(env, argv[3], "lens", &lens, &nl) ||
      !tw_i32(env, argv[4], "max", &max) || !tw_i32(env, argv[5], "cap", &cap))
    return NULL;
  int n = max < 0 ? 0 : (int)tw_min(tw_min((size_t)max, TW_BATCH), tw_min(no, nl));
  if (!tw_check_rx(env, offs, n, cap, alen)) return NULL;
  int got = 0;
  while (got < n) {
    ssize_t r = read(fd, arena + offs[got], (size_t)cap);
    if (r >= 0) { lens[got++] = (int32_t)r; continue; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || got > 0) break; // a later call reports a persistent error
    return tw_throw_errno(env, "read", errno);
  }
  return tw_int(env, got);
}

// tunWrite(fd, arena, offs, lens, idx, count, more?): one writev per packet
// (a chain of entries with `more`). Returns the number of entries written.
napi_value tw_tun_write(napi_env env, napi_callback_info info) {
  TW_ARGS(7);
  int32_t fd;
  struct tw_tx t;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_tx_args(env, argv, argv[6], &t) || !tw_tx_check(env, &t, SIZE_MAX))
    return NULL;
  static __thread struct iovec iov[TW_IOV];
  int32_t sent = 0;
  while (sent < t.count) {
    int n = tw_tx_chain(&t, sent, iov, TW_IOV, NULL);
    if (writev(fd, iov, n) >= 0) { sent += n; continue; }
    if (errno == EINTR) continue;
    if (tw_send_stops(env, sent, "writev")) break;
    return NULL;
  }
  return tw_int(env, sent);
}
