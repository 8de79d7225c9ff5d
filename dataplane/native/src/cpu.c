// Thread placement: which CPUs this process may use, and pinning the calling
// thread to one of them (a worker pinned where its packets arrive is woken
// without a cross-CPU interrupt).
#include "twill.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
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

// schedule(policy, priority, sliceUs): the calling thread's scheduling class.
// policy 0: SCHED_OTHER (priority ignored) with, when sliceUs > 0, a slice of
// its own (sched_attr.sched_runtime, which EEVDF takes since Linux 6.12: a
// shorter slice gets the CPU sooner after a wake-up); 1: SCHED_FIFO at
// `priority` (1..99: it preempts every normal task as soon as it wakes).

napi_value tw_schedule(napi_env env, napi_callback_info info) {
  TW_ARGS(3);
  int32_t policy, prio, slice;
  if (!tw_i32(env, argv[0], "policy", &policy) || !tw_i32(env, argv[1], "priority", &prio) || !tw_i32(env, argv[2], "sliceUs", &slice)) return NULL;
  if (policy == 1) {
    if (prio < 1 || prio > 99) return tw_throw_range(env, "SCHED_FIFO priority must be 1..99");
    struct sched_param p = { .sched_priority = prio };
    if (sched_setscheduler(0, SCHED_FIFO, &p) < 0) return tw_throw_errno(env, "sched_setscheduler(SCHED_FIFO)", errno);
    return tw_undef(env);
  }
  if (policy != 0) return tw_throw_range(env, "policy must be 0 (SCHED_OTHER) or 1 (SCHED_FIFO)");
  if (slice < 0 || slice > 100000) return tw_throw_range(env, "sliceUs must be 0..100000");
  struct tw_sched_attr a = { .size = sizeof a, .sched_policy = SCHED_OTHER, .sched_runtime = (uint64_t)slice * 1000 };
  if (syscall(SYS_sched_setattr, 0, &a, 0) < 0) return tw_throw_errno(env, "sched_setattr", errno);
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
