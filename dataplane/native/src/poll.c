// Waiting and small fd utilities: poll, eventfd doorbells, close, ifIndex.
#include "twill.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/eventfd.h>

#define POLL_MAX 1024
static __thread struct pollfd P[POLL_MAX];

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// poll(fds, n, ready, timeoutMs, spinUs)
// With spinUs > 0 it first polls without blocking for up to spinUs, yielding
// the CPU between tries, and only then sleeps: on a VM whose idle vCPU halts,
// a sleep and its wake-up cost tens of microseconds per packet.
napi_value tw_poll(napi_env env, napi_callback_info info) {
  TW_ARGS(5);
  int32_t n, timeout, spin = 0, *fds, *ready;
  size_t nf, nr;
  if (!tw_i32a(env, argv[0], "fds", &fds, &nf) || !tw_i32(env, argv[1], "n", &n) ||
      !tw_i32a(env, argv[2], "ready", &ready, &nr) || !tw_i32(env, argv[3], "timeoutMs", &timeout))
    return NULL;
  if (argc > 4 && !tw_i32(env, argv[4], "spinUs", &spin)) return NULL;
  if (n < 0 || (size_t)n > tw_min(nf, nr) || n > POLL_MAX) return tw_throw_range(env, "n must fit fds, ready and 1024");
  for (int i = 0; i < n; i++) P[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  int r = 0;
  if (spin > 0) {
    int64_t end = now_ns() + (int64_t)spin * 1000;
    while ((r = poll(P, (nfds_t)n, 0)) == 0 && now_ns() < end) sched_yield();
  }
  if (r == 0)
    do r = poll(P, (nfds_t)n, timeout < 0 ? -1 : timeout);
    while (r < 0 && errno == EINTR);
  if (r < 0) return tw_throw_errno(env, "poll", errno);
  // Any revents counts: on POLLERR/POLLHUP/POLLNVAL the next read reports the
  // problem, whereas ignoring them would make a poll loop spin.
  int count = 0;
  for (int i = 0; i < n; i++) count += ready[i] = P[i].revents != 0;
  return tw_int(env, count);
}

napi_value tw_eventfd(napi_env env, napi_callback_info info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? tw_throw_errno(env, "eventfd", errno) : tw_int(env, fd);
}

napi_value tw_eventfd_signal(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  int32_t fd;
  if (!tw_i32(env, argv[0], "fd", &fd)) return NULL;
  uint64_t one = 1;
  ssize_t r;
  do r = write(fd, &one, sizeof one);
  while (r < 0 && errno == EINTR);
  // EAGAIN means the counter is saturated: the doorbell is already ringing.
  if (r < 0 && errno != EAGAIN) return tw_throw_errno(env, "write", errno);
  return tw_undef(env);
}

napi_value tw_eventfd_drain(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  int32_t fd;
  if (!tw_i32(env, argv[0], "fd", &fd)) return NULL;
  uint64_t v;
  for (;;) {
    if (read(fd, &v, sizeof v) >= 0 || errno == EINTR) continue;
    if (errno == EAGAIN) break;
    return tw_throw_errno(env, "read", errno);
  }
  return tw_undef(env);
}

napi_value tw_close(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  int32_t fd;
  if (!tw_i32(env, argv[0], "fd", &fd)) return NULL;
  // No retry on EINTR: Linux has released the fd by then.
  if (close(fd) < 0 && errno != EINTR) return tw_throw_errno(env, "close", errno);
  return tw_undef(env);
}

napi_value tw_if_index(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  char name[IFNAMSIZ];
  size_t len;
  if (!tw_str(env, argv[0], "name", name, sizeof name, &len)) return NULL;
  unsigned idx = len < IFNAMSIZ ? if_nametoindex(name) : 0;
  if (!idx) return tw_throw_errno(env, "if_nametoindex", len < IFNAMSIZ ? errno : ENODEV);
  return tw_int(env, idx);
}
