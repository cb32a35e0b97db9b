/*
 * sluice_net: the few socket calls Node cannot make.
 *
 *   originalDst(fd) -> { address, port, family } | null
 *       getsockopt(SO_ORIGINAL_DST) for IPv4 (also an IPv4-mapped peer on a
 *       dual-stack socket), IP6T_SO_ORIGINAL_DST for IPv6. null when the
 *       connection was not redirected (no conntrack NAT entry).
 *   dup(fd) -> fd       a second descriptor for the same open socket, CLOEXEC
 *   close(fd)           close a descriptor the caller owns
 *   fdLimit(max) -> { soft, hard }
 *       RLIMIT_NOFILE, with the soft limit first raised to min(hard, max)
 *       when it is lower (as Go's runtime does): a proxy needs descriptors
 *       for both sides of every connection
 *
 * Errors are thrown as JS errors with code = errno name, so callers can
 * tell EBADF (bug) from ENOENT (not redirected).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/resource.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 41
#endif

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  const char *code = "EUNKNOWN";
  switch (err) {
    case EBADF: code = "EBADF"; break;
    case ENOENT: code = "ENOENT"; break;
    case ENOTSOCK: code = "ENOTSOCK"; break;
    case ENOPROTOOPT: code = "ENOPROTOOPT"; break;
    case EMFILE: code = "EMFILE"; break;
    case ENFILE: code = "ENFILE"; break;
    case EINVAL: code = "EINVAL"; break;
    default: break;
  }
  napi_throw_error(env, code, msg);
  return NULL;
}

static int fd_arg(napi_env env, napi_callback_info info, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "fd required");
    return -1;
  }
  if (napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "fd must be a non-negative integer");
    return -1;
  }
  return 0;
}

static napi_value make_addr(napi_env env, const char *ip, int port, int family) {
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, ip, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "address", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, obj, "port", v);
  napi_create_int32(env, family, &v);
  napi_set_named_property(env, obj, "family", v);
  return obj;
}

static napi_value original_dst(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;

  struct sockaddr_storage local;
  socklen_t llen = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0)
    return throw_errno(env, "getsockname", errno);

  int v4 = local.ss_family == AF_INET;
  if (local.ss_family == AF_INET6) {
    struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
    v4 = IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr);
  }

  char ip[INET6_ADDRSTRLEN];
  if (v4) {
    struct sockaddr_in dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) {
      if (errno == ENOENT || errno == ENOPROTOOPT) {
        napi_value n; napi_get_null(env, &n); return n;
      }
      return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", errno);
    }
    inet_ntop(AF_INET, &dst.sin_addr, ip, sizeof ip);
    return make_addr(env, ip, ntohs(dst.sin_port), 4);
  }
  struct sockaddr_in6 dst6;
  socklen_t len6 = sizeof dst6;
  memset(&dst6, 0, sizeof dst6);
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst6, &len6) != 0) {
    if (errno == ENOENT || errno == ENOPROTOOPT) {
      napi_value n; napi_get_null(env, &n); return n;
    }
    return throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", errno);
  }
  inet_ntop(AF_INET6, &dst6.sin6_addr, ip, sizeof ip);
  return make_addr(env, ip, ntohs(dst6.sin6_port), 6);
}

static napi_value dup_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) return throw_errno(env, "dup", errno);
  napi_value out;
  napi_create_int32(env, nfd, &out);
  return out;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, "close", errno);
  napi_value u; napi_get_undefined(env, &u);
  return u;
}

static napi_value fd_limit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double max = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &max) != napi_ok || max < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "fdLimit(max): max must be a non-negative number");
    return NULL;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return throw_errno(env, "getrlimit", errno);
  rlim_t want = rl.rlim_max;
  if (want == RLIM_INFINITY || (double)want > max) want = (rlim_t)max;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    struct rlimit raised = { want, rl.rlim_max };
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl.rlim_cur = want;
  }
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_double(env, rl.rlim_cur == RLIM_INFINITY ? max : (double)rl.rlim_cur, &v);
  napi_set_named_property(env, obj, "soft", v);
  napi_create_double(env, rl.rlim_max == RLIM_INFINITY ? max : (double)rl.rlim_max, &v);
  napi_set_named_property(env, obj, "hard", v);
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "originalDst", NULL, original_dst, NULL, NULL, NULL, napi_default, NULL },
    { "dup", NULL, dup_fd, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL },
    { "fdLimit", NULL, fd_limit, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
