// Waiting and small fd utilities: poll, eventfd doorbells, close, ifIndex.
#include "twill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>

#define POLL_MAX 1024
static __thread struct pollfd P[POLL_MAX];

// How the calling thread waits (waitPolicy), kept per thread: a worker sets
// it once. It spins as a normal (SCHED_OTHER) thread, yielding between
// polls, so the pods' processes still get the CPU at once. With
// blockPriority > 0 it is SCHED_FIFO while it sleeps in poll() and while it
// handles what woke it: a packet's wake-up then preempts whatever normal task
// holds the CPU, at once, instead of waiting for the end of that task's slice
// (a 4 ms tick here). It never spins as SCHED_FIFO: the pods would starve.
static __thread struct {
  int64_t gap_ns;     // a spin ends once the thread finds it was off the CPU this long; 0: never
  int32_t block_prio; // SCHED_FIFO priority while blocked; 0: always SCHED_OTHER
  uint64_t slice_ns;  // SCHED_OTHER's slice (sched_runtime, EEVDF); 0: the kernel's default
  bool fifo;          // the class the thread is in now
  int64_t ret_ns, ret_cpu_ns; // the clock and the thread's CPU time when poll() last returned
} W;
enum { TW_SPIN_NONE, TW_SPIN_CAUGHT, TW_SPIN_EXPIRED, TW_SPIN_CUT };

static int64_t clock_ns(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int set_class(bool fifo) {
  struct tw_sched_attr a = { .size = sizeof a };
  if (fifo) { a.sched_policy = SCHED_FIFO; a.sched_priority = (uint32_t)W.block_prio; }
  else { a.sched_policy = SCHED_OTHER; a.sched_runtime = W.slice_ns; }
  if (syscall(SYS_sched_setattr, 0, &a, 0) < 0) return -errno;
  W.fifo = fifo;
  return 0;
}

// waitPolicy(gapUs, blockPriority, sliceUs): see W above. Puts the thread in
// the class it waits in (SCHED_FIFO when blockPriority > 0); throws, leaving
// it a normal thread, when the kernel refuses (no CAP_SYS_NICE).
napi_value tw_wait_policy(napi_env env, napi_callback_info info) {
  TW_ARGS(3);
  int32_t gap, prio, slice;
  if (!tw_i32(env, argv[0], "gapUs", &gap) || !tw_i32(env, argv[1], "blockPriority", &prio) || !tw_i32(env, argv[2], "sliceUs", &slice)) return NULL;
  if (gap < 0 || prio < 0 || prio > 99 || slice < 0 || slice > 100000) return tw_throw_range(env, "gapUs >= 0, blockPriority 0..99, sliceUs 0..100000");
  W.gap_ns = (int64_t)gap * 1000;
  W.block_prio = prio;
  W.slice_ns = (uint64_t)slice * 1000;
  int r = set_class(prio > 0);
  if (r < 0) {
    W.block_prio = 0;
    set_class(false); // at least the slice, if that is refused too it stays as it was
    return tw_throw_errno(env, "sched_setattr", -r);
  }
  return tw_undef(env);
}

// runnable(): how many tasks the whole machine has running or waiting for a
// CPU right now, the caller included (the fourth field of /proc/loadavg,
// nr_running()); -1 when it cannot be read. About 0.4 µs here. More than the
// CPUs means some task is waiting for one.
static __thread int loadavg_fd = -1;
napi_value tw_runnable(napi_env env, napi_callback_info info) {
  char buf[128];
  if (loadavg_fd < 0) loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  ssize_t k = loadavg_fd < 0 ? -1 : pread(loadavg_fd, buf, sizeof buf - 1, 0);
  if (k <= 0) return tw_int(env, -1);
  buf[k] = 0;
  char *p = buf; // "0.52 0.58 0.59 3/321 12345": the field after the third space
  for (int sp = 0; sp < 3 && p; sp++) if ((p = strchr(p, ' '))) p++;
  return tw_int(env, p ? strtol(p, NULL, 10) : -1);
}

// poll(fds, n, ready, timeoutMs, spinUs, wait?)
// With spinUs > 0 it first polls without blocking for up to spinUs, and only
// then sleeps: on a VM whose idle vCPU halts, a sleep and its wake-up cost
// tens of microseconds per packet. A spinning thread that has been
// descheduled is in the worst place: runnable, it gets no wake-up when its
// packet comes, and waits until the scheduler hands the CPU back (a tick, 4 ms
// here). So the spin ends as soon as the thread finds it was away longer than
// gapUs, and it sleeps instead, to be woken by the next packet; so does a
// thread that was descheduled that long while it handled the last batch.
// wait (a Float64Array of 4, optional) gets how it went, so the caller needs no
// clock of its own (performance.now() allocates): [0] the spin's outcome
// (TW_SPIN_*: none, caught something, ran out, cut short), [1] the monotonic
// clock in ms when poll was entered, [2] when it returned, [3] the CPU time the
// spin used, in µs.
napi_value tw_poll(napi_env env, napi_callback_info info) {
  TW_ARGS(6);
  int32_t n, timeout, spin = 0, *fds, *ready;
  size_t nf, nr, nw = 0;
  double *w = NULL;
  if (!tw_i32a(env, argv[0], "fds", &fds, &nf) || !tw_i32(env, argv[1], "n", &n) ||
      !tw_i32a(env, argv[2], "ready", &ready, &nr) || !tw_i32(env, argv[3], "timeoutMs", &timeout))
    return NULL;
  if (argc > 4 && !tw_i32(env, argv[4], "spinUs", &spin)) return NULL;
  if (argc > 5) {
    napi_valuetype t;
    if (napi_typeof(env, argv[5], &t) != napi_ok) return NULL;
    if (t != napi_undefined) {
      napi_typedarray_type tt;
      void *data;
      bool is;
      if (napi_is_typedarray(env, argv[5], &is) != napi_ok || !is ||
          napi_get_typedarray_info(env, argv[5], &tt, &nw, &data, NULL, NULL) != napi_ok || tt != napi_float64_array || nw < 4)
        return tw_throw_type(env, "wait must be a Float64Array of at least 4");
      w = data;
    }
  }
  if (n < 0 || (size_t)n > tw_min(nf, nr) || n > POLL_MAX) return tw_throw_range(env, "n must fit fds, ready and 1024");
  for (int i = 0; i < n; i++) P[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  int r = 0, outcome = TW_SPIN_NONE;
  int64_t entered = clock_ns(CLOCK_MONOTONIC), cpu0 = spin > 0 ? clock_ns(CLOCK_THREAD_CPUTIME_ID) : 0, spun = 0;
  if (spin > 0 && W.gap_ns > 0 && W.ret_ns > 0 && (entered - W.ret_ns) - (cpu0 - W.ret_cpu_ns) > W.gap_ns) {
    // Descheduled while it handled the last batch: as good as a spin cut short.
    outcome = TW_SPIN_CUT;
    spin = 0;
  }
  if (spin > 0) {
    int64_t last = entered, end = entered + (int64_t)spin * 1000, t;
    if (W.fifo) set_class(false); // never spin as a real-time thread: the pods would starve
    for (;;) {
      if ((r = poll(P, (nfds_t)n, 0)) != 0) { outcome = TW_SPIN_CAUGHT; break; }
      t = clock_ns(CLOCK_MONOTONIC);
      if (W.gap_ns > 0 && t - last > W.gap_ns) { outcome = TW_SPIN_CUT; break; }
      if (t >= end) { outcome = TW_SPIN_EXPIRED; break; }
      sched_yield();
      last = t;
    }
    spun = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    if (r < 0 && errno != EINTR) return tw_throw_errno(env, "poll", errno);
    if (r < 0) r = 0;
  }
  if (r == 0) {
    if (W.block_prio > 0 && !W.fifo) set_class(true);
    do r = poll(P, (nfds_t)n, timeout < 0 ? -1 : timeout);
    while (r < 0 && errno == EINTR);
  }
  if (r < 0) return tw_throw_errno(env, "poll", errno);
  W.ret_ns = clock_ns(CLOCK_MONOTONIC);
  W.ret_cpu_ns = W.gap_ns > 0 ? clock_ns(CLOCK_THREAD_CPUTIME_ID) : 0;
  if (w) {
    w[0] = outcome;
    w[1] = entered / 1e6;
    w[2] = W.ret_ns / 1e6;
    w[3] = spun / 1e3;
  }
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
  tw_udp_forget(fd); // before close(): the number is not reused until then
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
