// N-API registration plus the argument and error helpers every module shares.
#include "twill.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

const char *tw_errname(int e, char buf[16]) {
#define E(x) case x: return #x;
  switch (e) {
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF) E(EAGAIN)
    E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV) E(EINVAL) E(ENFILE)
    E(EMFILE) E(ENOTTY) E(ENOSPC) E(EROFS) E(EPIPE) E(ENAMETOOLONG) E(ENOSYS)
    E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE) E(EPROTOTYPE) E(ENOPROTOOPT)
    E(EPROTONOSUPPORT) E(EOPNOTSUPP) E(EPFNOSUPPORT) E(EAFNOSUPPORT) E(EADDRINUSE)
    E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ENETRESET) E(ECONNRESET) E(ENOBUFS)
    E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY)
    E(EINPROGRESS) E(EPROTO)
  }
#undef E
  snprintf(buf, 16, "E%d", e);
  return buf;
}

napi_value tw_throw_errno(napi_env env, const char *call, int err) {
  char nb[16], msg[160];
  const char *name = tw_errname(err, nb);
  snprintf(msg, sizeof msg, "%s: %s", call, name);
  napi_value m, c, e;
  // napi_create_error sets .code from its second argument.
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) == napi_ok &&
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &c) == napi_ok &&
      napi_create_error(env, c, m, &e) == napi_ok)
    napi_throw(env, e);
  return NULL;
}

napi_value tw_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

napi_value tw_throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static bool type_err(napi_env env, const char *what, const char *must) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s must be %s", what, must);
  tw_throw_type(env, msg);
  return false;
}

static bool is_type(napi_env env, napi_value v, napi_valuetype want) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == want;
}

bool tw_i32(napi_env env, napi_value v, const char *what, int32_t *out) {
  if (!is_type(env, v, napi_number) || napi_get_value_int32(env, v, out) != napi_ok)
    return type_err(env, what, "a number");
  return true;
}

bool tw_str(napi_env env, napi_value v, const char *what, char *buf, size_t cap, size_t *len) {
  size_t full, copied;
  if (!is_type(env, v, napi_string) || napi_get_value_string_utf8(env, v, NULL, 0, &full) != napi_ok ||
      napi_get_value_string_utf8(env, v, buf, cap, &copied) != napi_ok)
    return type_err(env, what, "a string");
  *len = full;
  return true;
}

// napi_get_typedarray_info's data pointer already includes byte_offset.
static bool typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  bool is;
  napi_typedarray_type t;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  if (napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) != napi_ok) return false;
  return t == want;
}

bool tw_u8(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  if (!typed(env, v, napi_uint8_array, (void **)data, len)) return type_err(env, what, "a Uint8Array");
  return true;
}

bool tw_i32a(napi_env env, napi_value v, const char *what, int32_t **data, size_t *len) {
  if (!typed(env, v, napi_int32_array, (void **)data, len)) return type_err(env, what, "an Int32Array");
  return true;
}

static bool absent(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_undefined || t == napi_null);
}

bool tw_opts(napi_env env, napi_value v) {
  if (absent(env, v) || is_type(env, v, napi_object)) return true;
  return type_err(env, "opts", "an object");
}

// Missing opts or a missing/undefined key means the default (false / 0).
static bool opt_get(napi_env env, napi_value opts, const char *key, napi_value *out) {
  if (absent(env, opts)) return false;
  if (napi_get_named_property(env, opts, key, out) != napi_ok) return false;
  return !absent(env, *out);
}

bool tw_opt_bool(napi_env env, napi_value opts, const char *key, bool *out) {
  napi_value v;
  *out = false;
  if (!opt_get(env, opts, key, &v)) return true;
  if (!is_type(env, v, napi_boolean) || napi_get_value_bool(env, v, out) != napi_ok)
    return type_err(env, key, "a boolean");
  return true;
}

// An absent key leaves *out as the caller's default.
bool tw_opt_i32(napi_env env, napi_value opts, const char *key, int32_t *out) {
  napi_value v;
  if (!opt_get(env, opts, key, &v)) return true;
  return tw_i32(env, v, key, out);
}

bool tw_cbpf(napi_env env, napi_value v, struct sock_filter *insns, struct sock_fprog *prog) {
  int32_t *w;
  size_t n;
  if (!tw_i32a(env, v, "prog", &w, &n)) return false;
  if (n == 0 || n % 2 || n / 2 > TW_CBPF_MAX) return tw_throw_range(env, "prog must hold 1..256 instructions"), false;
  for (size_t i = 0; i < n / 2; i++)
    insns[i] = (struct sock_filter){.code = (uint16_t)w[2 * i], .jt = (uint8_t)(w[2 * i] >> 16),
                                    .jf = (uint8_t)((uint32_t)w[2 * i] >> 24), .k = (uint32_t)w[2 * i + 1]};
  *prog = (struct sock_fprog){.len = (unsigned short)(n / 2), .filter = insns};
  return true;
}

napi_value tw_attach_cbpf(napi_env env, napi_callback_info info, int level, int name, const char *what) {
  TW_ARGS(2);
  int32_t fd;
  struct sock_filter insns[TW_CBPF_MAX];
  struct sock_fprog prog;
  if (!tw_i32(env, argv[0], "fd", &fd) || !tw_cbpf(env, argv[1], insns, &prog)) return NULL;
  if (setsockopt(fd, level, name, &prog, sizeof prog) < 0) return tw_throw_errno(env, what, errno);
  return tw_undef(env);
}

bool tw_check_rx(napi_env env, const int32_t *offs, int n, int32_t cap, size_t alen) {
  if (cap <= 0) return tw_throw_range(env, "cap must be > 0"), false;
  for (int i = 0; i < n; i++)
    if (offs[i] < 0 || (size_t)offs[i] + (size_t)cap > alen)
      return tw_throw_range(env, "offs[i] + cap lies outside the arena"), false;
  return true;
}

bool tw_tx_args(napi_env env, const napi_value *argv, napi_value more, struct tw_tx *t) {
  size_t no, nl;
  t->more = NULL;
  t->nent = SIZE_MAX;
  if (!tw_u8(env, argv[1], "arena", &t->arena, &t->alen) || !tw_i32a(env, argv[2], "offs", &t->offs, &no) ||
      !tw_i32a(env, argv[3], "lens", &t->lens, &nl) || !tw_i32a(env, argv[4], "idx", &t->idx, &t->nidx) ||
      !tw_i32(env, argv[5], "count", &t->count))
    return false;
  if (!absent(env, more) && !tw_u8(env, more, "more", &t->more, &t->nent)) return false;
  t->nent = tw_min(t->nent, tw_min(no, nl));
  return true;
}

bool tw_tx_check(napi_env env, const struct tw_tx *t, size_t nent) {
  nent = tw_min(nent, t->nent);
  if (t->count < 0 || (size_t)t->count > t->nidx) return tw_throw_range(env, "count outside idx"), false;
  int32_t run = 0; // entries so far in the chain at hand
  for (int32_t k = 0; k < t->count; k++) {
    int32_t j = t->idx[k];
    if (j < 0 || (size_t)j >= nent) return tw_throw_range(env, "idx[k] outside the batch arrays"), false;
    if (t->offs[j] < 0 || t->lens[j] < 0 || (size_t)t->offs[j] + (size_t)t->lens[j] > t->alen)
      return tw_throw_range(env, "offs[j] + lens[j] lies outside the arena"), false;
    run = t->more && t->more[j] ? run + 1 : 0;
    if (run >= TW_IOV) return tw_throw_range(env, "a chain must have at most 1024 entries"), false;
  }
  if (run > 0) return tw_throw_range(env, "the last chain must end within count"), false;
  return true;
}

int tw_tx_chain(const struct tw_tx *t, int32_t k, struct iovec *iov, int room, size_t *bytes) {
  int n = 1;
  if (t->more)
    while (t->more[t->idx[k + n - 1]]) n++; // tw_tx_check: every chain ends within count
  if (n > room) return 0;
  size_t sum = 0;
  for (int q = 0; q < n; q++) {
    int32_t j = t->idx[k + q];
    iov[q] = (struct iovec){t->arena + t->offs[j], (size_t)t->lens[j]};
    sum += (size_t)t->lens[j];
  }
  if (bytes) *bytes = sum;
  return n;
}

bool tw_send_stops(napi_env env, int32_t sent, const char *call) {
  if (errno == EAGAIN || errno == ENOBUFS || sent > 0) return true;
  tw_throw_errno(env, call, errno);
  return false;
}

napi_value tw_int(napi_env env, int64_t v) {
  napi_value r;
  return napi_create_int64(env, v, &r) == napi_ok ? r : NULL;
}

napi_value tw_undef(napi_env env) {
  napi_value r;
  return napi_get_undefined(env, &r) == napi_ok ? r : NULL;
}

void tw_set_bufs(int fd) {
  int sz = 4 << 20;
  // The FORCE variants ignore net.core.{r,w}mem_max but need CAP_NET_ADMIN.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

napi_value tw_open_result(napi_env env, int r, const char *call) {
  return r < 0 ? tw_throw_errno(env, call, -r) : tw_int(env, r);
}

// Context-aware so every worker_thread can load its own instance; there is no
// per-instance state, all scratch is __thread.
NAPI_MODULE_INIT() {
#define TW_PROP(js, c) {#js, NULL, c, NULL, NULL, NULL, napi_enumerable, NULL},
  static const napi_property_descriptor props[] = {TW_FUNCS(TW_PROP)};
#undef TW_PROP
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
