// Thread placement: which CPUs this process may use, pinning the calling
// thread to one of them (a worker pinned where its packets arrive is woken
// without a cross-CPU interrupt), and naming it. How a thread waits, and its
// scheduling class while it does, is poll.c's waitPolicy.
#include "twill.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <unistd.h>

// cpus(): the CPUs this thread may run on, ascending.
napi_value tw_cpus(napi_env env, napi_callback_info info) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) < 0) return tw_throw_errno(env, "sched_getaffinity", errno);
  napi_value arr;
  if (napi_create_array(env, &arr) != napi_ok) return NULL;
  uint32_t k = 0;
  for (int c = 0; c < CPU_SETSIZE; c++) {
    if (!CPU_ISSET(c, &set)) continue;
    napi_value v = tw_int(env, c);
    if (!v || napi_set_element(env, arr, k++, v) != napi_ok) return NULL;
  }
  return arr;
}

// pinThread(cpu): run the calling thread on that CPU only; -1: on any CPU
// again (the kernel keeps it within the process's cpuset).
napi_value tw_pin_thread(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  int32_t cpu;
  if (!tw_i32(env, argv[0], "cpu", &cpu)) return NULL;
  if (cpu < -1 || cpu >= CPU_SETSIZE) return tw_throw_range(env, "cpu out of range");
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0) CPU_SET(cpu, &set);
  else for (int c = 0; c < CPU_SETSIZE; c++) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof set, &set) < 0) return tw_throw_errno(env, "sched_setaffinity", errno);
  return tw_undef(env);
}

// threadName(name): the calling thread's name (at most 15 bytes), as ps -L,
// top -H, perf and ftrace show it: a worker is told apart from Node's own threads.
napi_value tw_thread_name(napi_env env, napi_callback_info info) {
  TW_ARGS(1);
  char name[16];
  size_t len;
  if (!tw_str(env, argv[0], "name", name, sizeof name, &len)) return NULL;
  if (prctl(PR_SET_NAME, name, 0, 0, 0) < 0) return tw_throw_errno(env, "prctl(PR_SET_NAME)", errno);
  return tw_undef(env);
}
