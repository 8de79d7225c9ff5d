// hops: twill's latency path, in C, to tell what the platform allows from
// what twill's own code adds. A ping crosses twill's workers four times: node
// 1's worker (pod to overlay), node 2's (overlay to pod; the pod's kernel
// answers within that send, so the same wake-up carries the reply back to the
// overlay), and node 1's again (overlay to pod). Here two forwarder threads,
// A and B, relay a 64-byte UDP datagram the same way, client → A → B → A →
// client, every 2 ms (ping -i 0.002), over loopback in a network namespace of
// the program's own (nothing leaves it). Each forwarder waits as twill's
// workers can:
//   block         poll() until a datagram is there (normal priority)
//   fifo          the same at SCHED_FIFO 50
//   spin          poll(0) and sched_yield() for up to 3 ms after each datagram, then block (twill's old default)
//   adaptive      twill's default (engine/worker.ts, native/src/poll.c): spin as a normal thread, yielding,
//                 for up to 3 ms; SCHED_FIFO 50 while blocked and while handling what woke it; a spin in which
//                 (or before which, handling) the thread was off the CPU for over 200 µs ends at once, and no
//                 spin is tried for 25 ms, 4× that with each further cut up to 1 s (back to 25 ms after 5 s
//                 without one), nor, when that calm ends, while more tasks are runnable than there are CPUs
// The RTT is taken as ping takes it: from just before the send to the
// kernel's receive timestamp (SO_TIMESTAMPNS), so the client's own wake-up
// is not in it. --hogs N runs N CPU-bound processes at normal priority
// meanwhile (the busy node), each in a session of its own.
//
//   cc -O2 -o hops bench/c/hops.c && sudo ./hops --mode adaptive --count 2000 [--hogs 2]
//
// Prints one line of JSON: the RTT percentiles in µs and the forwarders' CPU.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { BLOCK, FIFO, SPIN, ADAPTIVE };
static int mode = ADAPTIVE, ncpu = 1;
static volatile int stop;
static const int SPIN_US = 3000, GAP_US = 200, PRIO = 50;

static int64_t now_ns(clockid_t c) { struct timespec t; clock_gettime(c, &t); return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int udp(int port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("udp"); exit(1); }
  return fd;
}
static void send_to(int fd, int port, const void *p, size_t n) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  sendto(fd, p, n, 0, (struct sockaddr *)&a, sizeof a);
}

static void set_fifo(int on) {
  struct sched_param p = { .sched_priority = on ? PRIO : 0 };
  if (sched_setscheduler(0, on ? SCHED_FIFO : SCHED_OTHER, &p) < 0) { perror("sched_setscheduler"); exit(1); }
}

static int runnable(void) {
  static __thread int fd = -1;
  char b[128];
  if (fd < 0) fd = open("/proc/loadavg", O_RDONLY);
  ssize_t k = pread(fd, b, sizeof b - 1, 0);
  if (k <= 0) return -1;
  b[k] = 0;
  char *p = b;
  for (int i = 0; i < 3 && p; i++) if ((p = strchr(p, ' '))) p++;
  return p ? atoi(p) : -1;
}

// A forwarder: reads fds[0] and fds[1], relays each datagram per route().
struct fwd { int fds[2]; int to[2]; int out; int64_t cpu_ns, spin_ns; };

static void *forward(void *arg) {
  struct fwd *f = arg;
  struct pollfd p[2] = { { .fd = f->fds[0], .events = POLLIN }, { .fd = f->fds[1], .events = POLLIN } };
  char buf[2048];
  int spin = 0, fifo = 0;
  int64_t calm = 0, calm_until = 0, last_cut = 0, ret = 0, ret_cpu = 0;
  if (mode == FIFO || mode == ADAPTIVE) { set_fifo(1); fifo = 1; }
  while (!stop) {
    int r = 0;
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    int try_spin = spin && (mode == SPIN || mode == ADAPTIVE);
    if (try_spin && mode == ADAPTIVE && calm) {
      if (t0 < calm_until) try_spin = 0;
      else if (runnable() > ncpu) { calm_until = t0 + calm; try_spin = 0; }
    }
    if (try_spin) {
      int64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID), last = t0, end = t0 + SPIN_US * 1000LL, t;
      if (fifo) { set_fifo(0); fifo = 0; }
      // Descheduled while it handled the last datagram: as good as a spin cut short.
      int cut = mode == ADAPTIVE && ret && (t0 - ret) - (c0 - ret_cpu) > GAP_US * 1000LL;
      while (!cut) {
        if ((r = poll(p, 2, 0)) != 0) break;
        t = now_ns(CLOCK_MONOTONIC);
        if (mode == ADAPTIVE && t - last > GAP_US * 1000LL) { cut = 1; break; }
        if (t >= end) break;
        sched_yield();
        last = t;
      }
      f->spin_ns += now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
      if (cut) {
        calm = calm ? (calm * 4 > 1000000000 ? 1000000000 : calm * 4) : 25000000;
        calm_until = now_ns(CLOCK_MONOTONIC) + calm;
        last_cut = calm_until - calm;
      } else if (calm && now_ns(CLOCK_MONOTONIC) - last_cut > 5000000000LL) calm = 0;
    }
    if (r == 0) {
      if (mode == ADAPTIVE && !fifo) { set_fifo(1); fifo = 1; }
      r = poll(p, 2, 100);
    }
    int64_t t1 = now_ns(CLOCK_MONOTONIC);
    spin = r > 0 && t1 - t0 <= SPIN_US * 1000LL;
    if (r <= 0) { ret = 0; continue; }
    for (int i = 0; i < 2; i++) {
      if (!p[i].revents) continue;
      ssize_t n;
      while ((n = recv(f->fds[i], buf, sizeof buf, 0)) > 0) send_to(f->out, f->to[i], buf, (size_t)n);
    }
    ret = now_ns(CLOCK_MONOTONIC);
    ret_cpu = now_ns(CLOCK_THREAD_CPUTIME_ID);
  }
  f->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID);
  return NULL;
}

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
  int count = 1000, hogs = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
      const char *m = argv[++i];
      mode = !strcmp(m, "block") ? BLOCK : !strcmp(m, "fifo") ? FIFO : !strcmp(m, "spin") ? SPIN : !strcmp(m, "adaptive") ? ADAPTIVE : -1;
      if (mode < 0) { fprintf(stderr, "mode: block, fifo, spin or adaptive\n"); return 2; }
    } else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hogs") && i + 1 < argc) hogs = atoi(argv[++i]);
    else { fprintf(stderr, "usage: hops [--mode block|fifo|spin|adaptive] [--count N] [--hogs N]\n"); return 2; }
  }
  cpu_set_t cs;
  sched_getaffinity(0, sizeof cs, &cs);
  ncpu = CPU_COUNT(&cs);
  // A network namespace of our own, with only lo up: nothing can leave it.
  if (unshare(CLONE_NEWNET) < 0) { perror("unshare(CLONE_NEWNET) (run as root)"); return 1; }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq ifr = { 0 };
  strcpy(ifr.ifr_name, "lo");
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) { perror("lo up"); return 1; }
  close(s);

  pid_t hog[64], me = getpid();
  hogs = hogs > 64 ? 64 : hogs;
  for (int i = 0; i < hogs; i++) { // each ends by itself if this program is gone
    if ((hog[i] = fork()) == 0) { setsid(); for (;;) if (getppid() != me) _exit(0); }
  }
  // Ports: client 7000; A reads 7001 (from the client) and 7002 (from B); B reads 7003 (from A).
  int client = udp(7000), a_in = udp(7001), a_back = udp(7002), b_in = udp(7003), b_dummy = udp(7004);
  int on = 1;
  setsockopt(client, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
  struct fwd A = { .fds = { a_in, a_back }, .to = { 7003, 7000 }, .out = a_in };
  struct fwd B = { .fds = { b_in, b_dummy }, .to = { 7002, 7002 }, .out = b_in };
  pthread_t ta, tb;
  pthread_create(&ta, NULL, forward, &A);
  pthread_create(&tb, NULL, forward, &B);
  usleep(100000);

  double *rtt = calloc((size_t)count, sizeof *rtt);
  int got = 0;
  char msg[64] = "twill-hops", buf[256], ctl[256];
  int64_t next = now_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < count; i++) {
    next += 2000000;
    struct timespec ts = { next / 1000000000, next % 1000000000 };
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    struct timespec tx;
    clock_gettime(CLOCK_REALTIME, &tx);
    send_to(client, 7001, msg, sizeof msg);
    struct pollfd p = { .fd = client, .events = POLLIN };
    if (poll(&p, 1, 1000) <= 0) continue; // lost (never, on loopback)
    struct iovec iov = { buf, sizeof buf };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
    if (recvmsg(client, &mh, 0) < 0) continue;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec rx;
        memcpy(&rx, CMSG_DATA(c), sizeof rx);
        rtt[got++] = ((rx.tv_sec - tx.tv_sec) * 1e9 + (rx.tv_nsec - tx.tv_nsec)) / 1e3;
      }
    }
  }
  stop = 1;
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  for (int i = 0; i < hogs; i++) { kill(hog[i], SIGKILL); waitpid(hog[i], NULL, 0); }
  qsort(rtt, (size_t)got, sizeof *rtt, cmp);
  const char *names[] = { "block", "fifo", "spin", "adaptive" };
  double secs = count * 0.002;
  #define P(q) (got ? rtt[(int)((q) / 100.0 * (got - 1))] : 0)
  printf("{\"mode\":\"%s\",\"hogs\":%d,\"count\":%d,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
         "\"forwarders_cpu_cores\":%.3f,\"spin_cpu_cores\":%.3f}\n",
         names[mode], hogs, got, P(50), P(90), P(99), got ? rtt[got - 1] : 0,
         (A.cpu_ns + B.cpu_ns) / 1e9 / secs, (A.spin_ns + B.spin_ns) / 1e9 / secs);
  return 0;
}
