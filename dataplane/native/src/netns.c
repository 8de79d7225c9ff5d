// *OpenIn: run one open call inside another network namespace. setns() on a
// short-lived thread of our own, so the calling (JS) thread's netns never
// changes; the fd keeps the namespace it was created in.
#include "twill.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

struct ns_job {
  const char *path;
  tw_open_fn fn;
  const void *args;
  int r;
  const char *call;
};

static void *ns_thread(void *p) {
  struct ns_job *j = p;
  int nsfd = open(j->path, O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) { j->r = -errno; j->call = "open"; return NULL; }
  if (setns(nsfd, CLONE_NEWNET) < 0) { j->r = -errno; j->call = "setns"; }
  else j->r = j->fn(j->args, &j->call);
  close(nsfd);
  return NULL;
}

int tw_run_in_ns(const char *ns_path, tw_open_fn fn, const void *args, const char **call) {
  struct ns_job j = {ns_path, fn, args, -EINVAL, ""};
  sigset_t all, old;
  pthread_t t;
  // Keep process signals (libuv's SIGCHLD etc.) on the threads that expect them.
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&t, NULL, ns_thread, &j);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e) return *call = "pthread_create", -e;
  pthread_join(t, NULL);
  *call = j.call;
  return j.r;
}

static bool ns_path(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t len;
  if (!tw_str(env, v, "nsPath", buf, cap, &len)) return false;
  if (len >= cap) return tw_throw_errno(env, "open", ENAMETOOLONG), false;
  return true;
}

napi_value tw_tun_open_in(napi_env env, napi_callback_info info) {
  TW_ARGS(3);
  char path[PATH_MAX];
  struct tun_args a;
  const char *call = "";
  if (!ns_path(env, argv[0], path, sizeof path) || !tun_parse(env, argv[1], argv[2], &a)) return NULL;
  int r = tw_run_in_ns(path, tun_open_fd, &a, &call);
  return tw_open_result(env, r, call);
}

napi_value tw_packet_open_in(napi_env env, napi_callback_info info) {
  TW_ARGS(3);
  char path[PATH_MAX];
  struct pkt_args a;
  const char *call = "";
  if (!ns_path(env, argv[0], path, sizeof path) || !pkt_parse(env, argv[1], argv[2], &a)) return NULL;
  int r = tw_run_in_ns(path, pkt_open_fd, &a, &call);
  return tw_open_result(env, r, call);
}

napi_value tw_udp_open_in(napi_env env, napi_callback_info info) {
  TW_ARGS(4);
  char path[PATH_MAX];
  struct udp_args a;
  const char *call = "";
  if (!ns_path(env, argv[0], path, sizeof path) || !udp_parse(env, argv[1], argv[2], argv[3], &a)) return NULL;
  int r = tw_run_in_ns(path, udp_open_fd, &a, &call);
  return tw_open_result(env, r, call);
}
