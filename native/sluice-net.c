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
 *   listen(ip, port, backlog) -> fd
 *       a listening TCP socket (non-blocking, CLOEXEC, SO_REUSEADDR,
 *       TCP_NODELAY, which accepted sockets inherit; "::" is dual-stack), for
 *       the acceptor below
 *   localAddress(fd) -> { address, port, family }
 *   acceptStart(fd, batch: Int32Array, capture, onBatch) -> handle
 *       accept on the main thread without a Node socket: a libuv poll on the
 *       listening fd; when it is readable, accept4() until EAGAIN or the batch
 *       is full, reading each connection's original destination when
 *       `capture`, then ONE call onBatch(n, refused, status) for the batch.
 *       Entry i is batch[i*14 .. i*14+13]:
 *
 *         0 fd   1 flags   2 dst port   3..6 dst address (4 or 16 bytes, as in
 *         the sockaddr)   7 errno of a failed original-destination read
 *         8 peer family (4, 6; 0 unknown)   9 peer port   10..13 peer address
 *         flags: 0xff dst family (0 none, 4, 6) | 0x100 check whether dst is a
 *         local address (dst port is ours, the listener is bound to a
 *         wildcard) | 0x200 the original destination could not be read
 *
 *       A connection that reports the listener's own address (not
 *       redirected) gets family 0: it has no original destination.
 *       At the descriptor limit (EMFILE, ENFILE) a pending connection is
 *       accepted on a spare descriptor kept for that and closed at once,
 *       counted in `refused`; when even that fails, polling stops and status
 *       is -EMFILE: call acceptResume(handle) later. status -errno also
 *       reports another accept error; 0 otherwise.
 *   acceptResume(handle), acceptStop(handle)   stop also closes the fd
 *   closeMany(fds: Int32Array, n)   close n descriptors (refusals)
 *   writeSome(fd, bytes: Uint8Array, n) -> count
 *       one write(2) of bytes[0, n) on a non-blocking socket of the calling
 *       thread (retried on EINTR): the count the kernel took, 0 when it took
 *       nothing (EAGAIN, or an error: whoever writes the rest through Node
 *       meets the same error and reports it). What fs.writeSync does for the
 *       same call costs about three times as much (a request object, trace
 *       checks, argument validation in JS).
 *
 *   connInit(buffer: Uint8Array, onEvent)   once per thread
 *   connOpen(fd, owner) -> handle, connEvents(handle, READ 1 | WRITE 2 | 0) -> 0 | -errno,
 *   connClose(handle, closeFd)
 *       a downstream connection without a Node socket (src/net/native-socket.ts), in the
 *       calling thread's epoll set (one per thread, in its loop); when readable, one read(2) into `buffer` and
 *       onEvent.call(owner, n) (n > 0 bytes, 0 the end, -errno an error); when writable and
 *       asked for, onEvent.call(owner, -65536). connClose(handle, 0) leaves the descriptor open
 *       for a Node socket to take over. A thread's connections are closed with its environment.
 *   connWrite(fd, bytes, n) -> count | 0 (EAGAIN) | -errno     one send(2), MSG_NOSIGNAL
 *   shutdownWrite(fd) -> 0 | -errno,  peerAddress(fd) -> { address, port, family } | null
 *
 *   tlsSetNumTickets(ctx: string, n) -> boolean
 *       SSL_CTX_set_num_tickets on the SSL_CTX a Node SecureContext holds:
 *       the TLS 1.3 session tickets a server sends after each handshake
 *       (OpenSSL's default is 2). `ctx` is the SSL_CTX's address in hex, as
 *       Node shows `secureContext.context._external` (an External that
 *       Node-API cannot read: napi_get_value_external expects one of its own).
 *       The functions are looked up in the running process (Node exports
 *       OpenSSL's symbols), so no OpenSSL headers are needed to build this;
 *       false when this Node has no such symbol, when the context does not
 *       hold OpenSSL's default (2) or n already (then the address is not
 *       what it should be, and nothing is written), or OpenSSL refuses.
 *
 *   tlsServerSessions(ctx: string, sidCtx: Uint8Array, slots) -> boolean
 *       Server sessions kept in this process instead of in the tickets: the
 *       SSL_CTX (address as for tlsSetNumTickets) sends stateful tickets
 *       (SSL_OP_NO_TICKET: a TLS 1.3 ticket, or a TLS 1.2 session ID, is
 *       the session's ID) and its sessions go to one store shared by every
 *       thread's contexts (`slots` entries, fixed by the first call, each
 *       holding one SSL_SESSION; an entry taken by another ID drops the one
 *       it held). A stateless ticket costs OpenSSL 3.0 an encoding of the
 *       session, a decoding of it again (the peer's certificate and its
 *       public key included: OSSL_DECODER's set-up, about 100 us) and an
 *       encryption per ticket sent, and a decryption and that decoding per
 *       resumption; a stateful one costs an ID and a lookup.
 *       The context's session ID context is set to `sidCtx` (its identity;
 *       OpenSSL keeps no session of a context without one that verifies its
 *       peers), and a session is given back only to a context registered
 *       with the same `sidCtx`, while it is within its lifetime, resumable,
 *       and of the handshake digest of the cipher the connection chose;
 *       then no new ticket is sent on that connection (SSL_set_num_tickets
 *       0): the client keeps the one it has, as with Node's stateless
 *       tickets, which OpenSSL does not renew either. false when this Node
 *       lacks a function, or `ctx` does not look like an SSL_CTX (its
 *       ticket count is neither OpenSSL's default nor 1).
 *   tlsServerSessionsRearm(ctx: string) -> boolean
 *       Node sets its own session callbacks on a context each time it makes
 *       a TLS socket of it: call this after each new TLSSocket of a context
 *       tlsServerSessions took (false for any other), before the socket
 *       reads (Node reads what is buffered on the next tick).
 *
 *   schedBatch(on) -> 1 | 0 | -errno
 *       the calling thread between SCHED_OTHER and SCHED_BATCH (see below)
 *   threadName(name)   the calling thread's name (at most 15 bytes are kept)
 *
 * Errors are thrown as JS errors with code = errno name, so callers can
 * tell EBADF (bug) from ENOENT (not redirected).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>
#include <sched.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 41
#endif

static const char *errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case ENOENT: return "ENOENT";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EINVAL: return "EINVAL";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, errno_name(err), msg);
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

/* { address, port, family } of an AF_INET or AF_INET6 address (inet_ntop's text, as Node shows it); null for another family */
static napi_value sockaddr_value(napi_env env, const struct sockaddr_storage *ss) {
  char ip[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    return make_addr(env, ip, ntohs(s4->sin_port), 4);
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    return make_addr(env, ip, ntohs(s6->sin6_port), 6);
  }
  napi_value nul;
  napi_get_null(env, &nul);
  return nul;
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


/* ── listening and accepting without a Node socket ─────────────────────────── */

static int addr_from(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return 0;
  }
  if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    *len = sizeof *s6;
    return 0;
  }
  return -1;
}

static napi_value listen_fd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char ip[INET6_ADDRSTRLEN + 1];
  size_t iplen = 0;
  int32_t port = -1, backlog = 511;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_string_utf8(env, argv[0], ip, sizeof ip, &iplen) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 0 || port > 65535 ||
      napi_get_value_int32(env, argv[2], &backlog) != napi_ok || backlog < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "listen(ip, port, backlog)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t len;
  if (addr_from(ip, port, &ss, &len) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "listen: ip must be a numeric IPv4 or IPv6 address");
    return NULL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  /* accepted sockets inherit it, so no worker has to set it on each connection */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "listen", err);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static napi_value local_address(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return throw_errno(env, "getsockname", errno);
  return sockaddr_value(env, &ss);
}

#define ENTRY_WORDS 14
#define E_PEER 8   /* 8 peer family (4, 6), 9 peer port, 10..13 peer address */
#define F_OWN_CHECK 0x100
#define F_DST_ERROR 0x200
/* batches handled per readable event before the loop gets a turn for other work */
#define MAX_ROUNDS 4

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb_ref;
  napi_ref batch_ref;
  napi_async_context actx;
  int32_t *batch;
  size_t cap;
  int fd;
  int capture;
  int port;      /* the listener's own port */
  int wildcard;  /* bound to 0.0.0.0 or :: */
  int polling;
  int stopped;
} acceptor_t;

/* One descriptor held back for the moment the process is out of them (as libuv does). */
static int spare_fd = -1;

static void reserve_spare(void) {
  if (spare_fd < 0) spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* 1: a pending connection was accepted on the spare and closed; 0: none pending; -1: no spare. */
static int refuse_one(int lfd) {
  if (spare_fd < 0) return -1;
  close(spare_fd);
  spare_fd = -1;
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  int pending = fd >= 0;
  if (fd >= 0) close(fd);
  reserve_spare();
  return pending ? 1 : 0;
}

static int same_ip(const struct sockaddr_storage *a, const void *ip, int family) {
  if (family == 4) {
    if (a->ss_family == AF_INET) return memcmp(&((const struct sockaddr_in *)a)->sin_addr, ip, 4) == 0;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
    return a->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) && memcmp(&a6->sin6_addr.s6_addr[12], ip, 4) == 0;
  }
  return a->ss_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, ip, 16) == 0;
}

static void fill_entry(acceptor_t *a, int fd, const struct sockaddr_storage *peer, int32_t *e) {
  memset(e, 0, ENTRY_WORDS * sizeof *e);
  e[0] = fd;
  /* the peer as accept4 saw it: known even when the client has reset the connection since,
     when getpeername would fail (and a rule on source addresses would have nothing to match) */
  if (peer->ss_family == AF_INET) {
    const struct sockaddr_in *p4 = (const struct sockaddr_in *)peer;
    e[E_PEER] = 4;
    e[E_PEER + 1] = ntohs(p4->sin_port);
    memcpy(&e[E_PEER + 2], &p4->sin_addr, 4);
  } else if (peer->ss_family == AF_INET6) {
    const struct sockaddr_in6 *p6 = (const struct sockaddr_in6 *)peer;
    e[E_PEER] = 6;
    e[E_PEER + 1] = ntohs(p6->sin6_port);
    memcpy(&e[E_PEER + 2], &p6->sin6_addr, 16);
  }
  if (!a->capture) return;
  int v4 = peer->ss_family == AF_INET ||
           (peer->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)peer)->sin6_addr));
  int family, port;
  unsigned char ip[16];
  if (v4) {
    struct sockaddr_in dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) {
      if (errno != ENOENT && errno != ENOPROTOOPT) { e[1] = F_DST_ERROR; e[7] = errno; }
      return;
    }
    family = 4;
    port = ntohs(dst.sin_port);
    memcpy(ip, &dst.sin_addr, 4);
  } else {
    struct sockaddr_in6 dst6;
    socklen_t len = sizeof dst6;
    memset(&dst6, 0, sizeof dst6);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst6, &len) != 0) {
      if (errno != ENOENT && errno != ENOPROTOOPT) { e[1] = F_DST_ERROR; e[7] = errno; }
      return;
    }
    family = 6;
    port = ntohs(dst6.sin6_port);
    memcpy(ip, &dst6.sin6_addr, 16);
  }
  int flags = family;
  if (port == a->port) {
    /* our own port: the listener itself (not redirected), or, on a wildcard
       listener, maybe another local address of ours; either way not a target */
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0 && same_ip(&local, ip, family)) return;
    if (a->wildcard) flags |= F_OWN_CHECK;
  }
  e[1] = flags;
  e[2] = port;
  memcpy(&e[3], ip, family == 4 ? 4 : 16);
}

static void call_batch(acceptor_t *a, int n, int refused, int status) {
  napi_env env = a->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[3];
  napi_get_reference_value(env, a->cb_ref, &cb);
  napi_get_global(env, &recv); /* napi_make_callback wants an object */
  napi_create_int32(env, n, &argv[0]);
  napi_create_int32(env, refused, &argv[1]);
  napi_create_int32(env, status, &argv[2]);
  napi_make_callback(env, a->actx, recv, cb, 3, argv, NULL);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    /* a bug of ours in the batch handler: the process's uncaught-exception path, as for any callback */
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/*
 * Connections waiting in a listener's accept queue, as the kernel counts them (TCP_INFO on a
 * listening socket gives the queue's length as tcpi_unacked); -1 when it cannot say. Taking
 * that many, and no more, spares the accept4 that finds the queue empty: the kernel makes the
 * new socket's inode and file before it looks at the queue and frees them after, so that call
 * costs about what a successful one does (about 3 us against 1.5 for this getsockopt, here),
 * and at one connection per wake-up it was one accept4 in two. What arrives meanwhile keeps
 * the socket readable, and the loop (level-triggered) comes back for it.
 */
static int queued(int lfd) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      len < offsetof(struct tcp_info, tcpi_unacked) + sizeof ti.tcpi_unacked || ti.tcpi_state != TCP_LISTEN) return -1;
  return (int)ti.tcpi_unacked;
}

/*
 * The main thread's policy while it accepts (schedBatch(true) below chose SCHED_BATCH for it).
 * A batch thread that is behind stays behind while the machine is busy: a backlog in the accept
 * queue then reaches the workers in bursts, each one's requests opening upstream connections at
 * once. So a backlog of a batch or more at a wake-up puts the main thread back into SCHED_OTHER,
 * where it wakes as soon as a connection is ready; after a second with no such backlog it is a
 * batch thread again. Only the thread schedBatch(true) changed, and only between those two.
 */
#define BACKLOG_HIGH 64
#define CALM_MS 1000
static int batch_wanted = 0;
static int batch_now = 0;
static pthread_t batch_thread;
static uint64_t backlog_seen = 0;

static int set_policy(int policy) {
  struct sched_param sp;
  memset(&sp, 0, sizeof sp);
  return sched_setscheduler(0, policy, &sp);
}

static void pace(uv_loop_t *loop, int q) {
  if (!batch_wanted || !pthread_equal(pthread_self(), batch_thread)) return;
  uint64_t now = uv_now(loop);
  if (q >= BACKLOG_HIGH) {
    backlog_seen = now;
    if (batch_now && set_policy(SCHED_OTHER) == 0) batch_now = 0;
  } else if (!batch_now && now - backlog_seen >= CALM_MS) {
    if (set_policy(SCHED_BATCH) == 0) batch_now = 1;
  }
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  acceptor_t *a = (acceptor_t *)h->data;
  if (status < 0) {
    call_batch(a, 0, 0, status);
    return;
  }
  for (int round = 0; round < MAX_ROUNDS && !a->stopped; round++) {
    int n = 0, refused = 0, st = 0;
    /* queue entries this round takes; unknown or none counted (a race): until accept4 says EAGAIN */
    int q = queued(a->fd);
    if (round == 0) pace(a->poll.loop, q);
    size_t limit = q > 0 && (size_t)q < a->cap ? (size_t)q : a->cap;
    size_t taken = 0;
    while ((size_t)n < a->cap && taken < limit) {
      struct sockaddr_storage peer;
      socklen_t plen = sizeof peer;
      int fd = accept4(a->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        fill_entry(a, fd, &peer, &a->batch[n * ENTRY_WORDS]);
        n++;
        if (q > 0) taken++;
        continue;
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == ECONNABORTED) { if (q > 0) taken++; continue; }
      if (err == EMFILE || err == ENFILE) {
        int r = refuse_one(a->fd);
        if (r == 1) { refused++; if (q > 0) taken++; continue; }
        if (r == 0) break;
        /* no spare either: stop until JS resumes us */
        uv_poll_stop(&a->poll);
        a->polling = 0;
        st = -err;
        break;
      }
      if (err != EAGAIN && err != EWOULDBLOCK) st = -err;
      break;
    }
    if (n > 0 || refused > 0 || st != 0) call_batch(a, n, refused, st);
    if ((size_t)n < a->cap || !a->polling) break;
  }
}

static void on_closed(uv_handle_t *h) {
  acceptor_t *a = (acceptor_t *)h->data;
  napi_delete_reference(a->env, a->cb_ref);
  napi_delete_reference(a->env, a->batch_ref);
  napi_async_destroy(a->env, a->actx);
  free(a);
}

static napi_value accept_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  bool capture = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_valuetype cbtype;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array ||
      length < ENTRY_WORDS || napi_get_value_bool(env, argv[2], &capture) != napi_ok ||
      napi_typeof(env, argv[3], &cbtype) != napi_ok || cbtype != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "acceptStart(fd, batch: Int32Array, capture: boolean, onBatch: function)");
    return NULL;
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) return throw_errno(env, "getsockname", errno);
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, "ERR_NO_LOOP", "no event loop");
    return NULL;
  }
  acceptor_t *a = calloc(1, sizeof *a);
  if (!a) return throw_errno(env, "acceptStart", ENOMEM);
  a->env = env;
  a->fd = fd;
  a->batch = (int32_t *)data;
  a->cap = length / ENTRY_WORDS;
  a->capture = capture;
  if (bound.ss_family == AF_INET) {
    struct sockaddr_in *b4 = (struct sockaddr_in *)&bound;
    a->port = ntohs(b4->sin_port);
    a->wildcard = b4->sin_addr.s_addr == htonl(INADDR_ANY);
  } else {
    struct sockaddr_in6 *b6 = (struct sockaddr_in6 *)&bound;
    a->port = ntohs(b6->sin6_port);
    a->wildcard = IN6_IS_ADDR_UNSPECIFIED(&b6->sin6_addr);
  }
  napi_value name;
  napi_create_string_utf8(env, "sluice:accept", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[3], 1, &a->cb_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &a->batch_ref) != napi_ok ||
      napi_async_init(env, NULL, name, &a->actx) != napi_ok) {
    free(a);
    napi_throw_error(env, "ERR_NAPI", "acceptStart: cannot keep references");
    return NULL;
  }
  reserve_spare();
  int r = uv_poll_init(loop, &a->poll, fd);
  if (r == 0) {
    a->poll.data = a;
    r = uv_poll_start(&a->poll, UV_READABLE, on_readable);
    if (r != 0) {
      uv_close((uv_handle_t *)&a->poll, NULL);
    }
  }
  if (r != 0) {
    napi_delete_reference(env, a->cb_ref);
    napi_delete_reference(env, a->batch_ref);
    napi_async_destroy(env, a->actx);
    free(a);
    return throw_errno(env, "uv_poll_start", -r);
  }
  a->polling = 1;
  napi_value ext;
  napi_create_external(env, a, NULL, NULL, &ext);
  return ext;
}

static acceptor_t *acceptor_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "an acceptor handle is required");
    return NULL;
  }
  return (acceptor_t *)p;
}

static napi_value accept_resume(napi_env env, napi_callback_info info) {
  acceptor_t *a = acceptor_arg(env, info);
  if (!a) return NULL;
  if (!a->stopped && !a->polling) {
    reserve_spare();
    if (uv_poll_start(&a->poll, UV_READABLE, on_readable) == 0) a->polling = 1;
  }
  napi_value v;
  napi_get_boolean(env, a->polling != 0, &v);
  return v;
}

/*
 * Stops accepting and closes the listening socket now (so its address can be bound again at
 * once, as after server.close()); the handle is dead afterwards.
 */
static napi_value accept_stop(napi_env env, napi_callback_info info) {
  acceptor_t *a = acceptor_arg(env, info);
  if (!a) return NULL;
  if (!a->stopped) {
    a->stopped = 1;
    a->polling = 0;
    uv_poll_stop(&a->poll); /* no longer in epoll: the fd may be closed */
    close(a->fd);
    a->fd = -1;
    uv_close((uv_handle_t *)&a->poll, on_closed);
  }
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value close_many(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  int32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array ||
      napi_get_value_int32(env, argv[1], &n) != napi_ok || n < 0 || (size_t)n > length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "closeMany(fds: Int32Array, n)");
    return NULL;
  }
  int32_t *fds = (int32_t *)data;
  for (int32_t i = 0; i < n; i++) if (fds[i] >= 0) close(fds[i]);
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* The (fd, bytes: Uint8Array, n <= bytes.length) of a write; -1 (thrown, naming `usage`) when they are not that. */
static int write_args(napi_env env, napi_callback_info info, const char *usage, int32_t *fd, void **data, uint32_t *n) {
  size_t argc = 3;
  napi_value argv[3];
  napi_typedarray_type type;
  size_t length = 0;
  *fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0 ||
      napi_get_typedarray_info(env, argv[1], &type, &length, data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_uint32(env, argv[2], n) != napi_ok || *n > length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", usage);
    return -1;
  }
  return 0;
}

static napi_value write_some(napi_env env, napi_callback_info info) {
  int32_t fd;
  void *data = NULL;
  uint32_t n = 0;
  if (write_args(env, info, "writeSome(fd, bytes: Uint8Array, n <= bytes.length)", &fd, &data, &n)) return NULL;
  ssize_t w;
  do w = write(fd, data, n); while (w < 0 && errno == EINTR);
  napi_value r;
  napi_create_uint32(env, w > 0 ? (uint32_t)w : 0, &r);
  return r;
}

/* An SSL_CTX's address, given as hex (Node shows a SecureContext's `context._external` so); NULL when `v` is not one */
static void *ctx_address(napi_env env, napi_value v) {
  char hex[24];
  size_t len = 0;
  char *end = NULL;
  if (napi_get_value_string_utf8(env, v, hex, sizeof hex, &len) != napi_ok || len == 0 || len >= sizeof hex - 1) return NULL;
  errno = 0;
  unsigned long long addr = strtoull(hex, &end, 16);
  return addr == 0 || end == NULL || *end != '\0' || errno != 0 ? NULL : (void *)(uintptr_t)addr;
}

/* OpenSSL's, from the running node binary: int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t num_tickets) */
typedef int (*set_num_tickets_fn)(void *ctx, size_t num_tickets);
/* size_t SSL_CTX_get_num_tickets(const SSL_CTX *ctx) */
typedef size_t (*get_num_tickets_fn)(const void *ctx);

static napi_value tls_set_num_tickets(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t n = 0;
  void *ctx = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 2 &&
      napi_get_value_uint32(env, argv[1], &n) == napi_ok) ctx = ctx_address(env, argv[0]);
  if (ctx == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "tlsSetNumTickets(ctx: hex address, n)");
    return NULL;
  }
  set_num_tickets_fn set = (set_num_tickets_fn)dlsym(RTLD_DEFAULT, "SSL_CTX_set_num_tickets");
  get_num_tickets_fn get = (get_num_tickets_fn)dlsym(RTLD_DEFAULT, "SSL_CTX_get_num_tickets");
  /* a context as Node makes it has OpenSSL's default (2), or what an earlier call set: anything
     else means the address is not an SSL_CTX, and nothing is written */
  size_t was = set != NULL && get != NULL ? get(ctx) : 0;
  napi_value r;
  napi_get_boolean(env, (was == 2 || was == n) && set(ctx, n) == 1, &r);
  return r;
}

/* ── server sessions shared by every thread's contexts (tlsServerSessions) ───────────────────── */
/* OpenSSL's, from the running node binary; opaque pointers, no headers needed */
typedef const unsigned char *(*sess_get_id_fn)(const void *sess, unsigned int *len);
typedef const unsigned char *(*sess_get_sid_ctx_fn)(const void *sess, unsigned int *len);
typedef int (*sess_up_ref_fn)(void *sess);
typedef void (*sess_free_fn)(void *sess);
typedef long (*sess_time_fn)(const void *sess);
typedef int (*sess_is_resumable_fn)(const void *sess);
typedef const void *(*sess_cipher_fn)(const void *sess);
typedef const void *(*ssl_pending_cipher_fn)(const void *ssl);
typedef const void *(*cipher_digest_fn)(const void *cipher);
typedef int (*md_type_fn)(const void *md);
typedef void *(*ssl_get_ctx_fn)(const void *ssl);
typedef int (*ssl_set_num_tickets_fn)(void *ssl, size_t n);
typedef uint64_t (*ctx_set_options_fn)(void *ctx, uint64_t op);
typedef long (*ctx_ctrl_fn)(void *ctx, int cmd, long larg, void *parg);
typedef void (*ctx_set_new_cb_fn)(void *ctx, int (*cb)(void *ssl, void *sess));
typedef int (*ctx_set_sid_ctx_fn)(void *ctx, const unsigned char *sid, unsigned int len);
typedef void (*ctx_set_get_cb_fn)(void *ctx, void *(*cb)(void *ssl, const unsigned char *id, int len, int *copy));

#define OSSL_SSL_OP_NO_TICKET ((uint64_t)1 << 14)
#define OSSL_CTRL_SET_SESS_CACHE_MODE 44
#define OSSL_CTRL_GET_SESS_CACHE_MODE 45
#define OSSL_SESS_CACHE_SERVER 0x0002
#define OSSL_SESS_CACHE_NO_INTERNAL 0x0300 /* no internal lookup, no internal store */
#define SID_MAX 32

static struct {
  sess_get_id_fn get_id; sess_get_sid_ctx_fn get_sid_ctx; sess_up_ref_fn up_ref; sess_free_fn free;
  sess_time_fn get_time, get_timeout; sess_is_resumable_fn is_resumable; sess_cipher_fn sess_cipher;
  ssl_pending_cipher_fn pending_cipher; cipher_digest_fn cipher_digest; md_type_fn md_type; ssl_get_ctx_fn get_ctx;
  ssl_set_num_tickets_fn ssl_set_num_tickets; ctx_set_options_fn set_options; ctx_ctrl_fn ctrl;
  ctx_set_new_cb_fn set_new_cb; ctx_set_get_cb_fn set_get_cb; ctx_set_sid_ctx_fn set_sid_ctx; get_num_tickets_fn ctx_get_num_tickets;
} ossl;
static int ossl_state; /* 0 not looked up, 1 found, -1 missing; under sessions_mu */

typedef struct { unsigned char id[SID_MAX]; unsigned int len; void *sess; } session_slot;
/* the contexts registered, with their session ID context (an identity): a session goes back only to its own */
typedef struct { void *ctx; unsigned char sid[SID_MAX]; unsigned int len; } session_ctx;
#define MAX_CTXS 256
static pthread_mutex_t sessions_mu = PTHREAD_MUTEX_INITIALIZER;
static session_slot *session_slots;
static size_t session_nslots;
static session_ctx session_ctxs[MAX_CTXS];
static size_t session_ctx_next;

static int ossl_lookup(void) {
  if (ossl_state != 0) return ossl_state > 0;
#define SYM(field, name) if ((*(void **)&ossl.field = dlsym(RTLD_DEFAULT, name)) == NULL) { ossl_state = -1; return 0; }
  SYM(get_id, "SSL_SESSION_get_id") SYM(get_sid_ctx, "SSL_SESSION_get0_id_context") SYM(up_ref, "SSL_SESSION_up_ref")
  SYM(free, "SSL_SESSION_free") SYM(get_time, "SSL_SESSION_get_time") SYM(get_timeout, "SSL_SESSION_get_timeout")
  SYM(is_resumable, "SSL_SESSION_is_resumable") SYM(sess_cipher, "SSL_SESSION_get0_cipher")
  SYM(pending_cipher, "SSL_get_pending_cipher") SYM(cipher_digest, "SSL_CIPHER_get_handshake_digest")
  SYM(md_type, "EVP_MD_get_type") SYM(get_ctx, "SSL_get_SSL_CTX") SYM(ssl_set_num_tickets, "SSL_set_num_tickets")
  SYM(set_options, "SSL_CTX_set_options") SYM(ctrl, "SSL_CTX_ctrl") SYM(set_new_cb, "SSL_CTX_sess_set_new_cb")
  SYM(set_get_cb, "SSL_CTX_sess_set_get_cb") SYM(set_sid_ctx, "SSL_CTX_set_session_id_context") SYM(ctx_get_num_tickets, "SSL_CTX_get_num_tickets")
#undef SYM
  ossl_state = 1;
  return 1;
}

static size_t session_slot_of(const unsigned char *id, unsigned int len) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a: the IDs are random already */
  for (unsigned int i = 0; i < len; i++) h = (h ^ id[i]) * 1099511628211ULL;
  return (size_t)(h % session_nslots);
}

/* OpenSSL took a reference for this call: returning 1 keeps it in the store */
static int on_new_session(void *ssl, void *sess) {
  (void)ssl;
  unsigned int len = 0;
  const unsigned char *id = ossl.get_id(sess, &len);
  if (len == 0 || len > SID_MAX) return 0;
  pthread_mutex_lock(&sessions_mu);
  session_slot *slot = &session_slots[session_slot_of(id, len)];
  void *old = slot->sess;
  memcpy(slot->id, id, len);
  slot->len = len;
  slot->sess = sess;
  pthread_mutex_unlock(&sessions_mu);
  if (old != NULL) ossl.free(old);
  return 1;
}

static int same_digest(const void *a, const void *b) {
  const void *ma = a ? ossl.cipher_digest(a) : NULL, *mb = b ? ossl.cipher_digest(b) : NULL;
  return ma != NULL && mb != NULL && ossl.md_type(ma) == ossl.md_type(mb);
}

/* a reference of our own is taken under the lock (*copy = 0), so another thread's eviction cannot free it first */
static void *on_get_session(void *ssl, const unsigned char *id, int len, int *copy) {
  *copy = 0;
  if (len <= 0 || len > SID_MAX) return NULL;
  void *ctx = ossl.get_ctx(ssl);
  void *found = NULL;
  pthread_mutex_lock(&sessions_mu);
  session_ctx *c = NULL;
  for (size_t i = 0; i < MAX_CTXS; i++) if (session_ctxs[i].ctx == ctx) { c = &session_ctxs[i]; break; }
  session_slot *slot = &session_slots[session_slot_of(id, (unsigned int)len)];
  if (c != NULL && slot->sess != NULL && slot->len == (unsigned int)len && memcmp(slot->id, id, (size_t)len) == 0) {
    unsigned int sl = 0;
    const unsigned char *sid = ossl.get_sid_ctx(slot->sess, &sl);
    if (sl == c->len && memcmp(sid, c->sid, sl) == 0) { found = slot->sess; ossl.up_ref(found); }
  }
  pthread_mutex_unlock(&sessions_mu);
  if (found == NULL) return NULL;
  /* what OpenSSL checks next, checked first: only a session it will resume stops the new ticket */
  long now = (long)time(NULL);
  if (ossl.is_resumable(found) && now >= ossl.get_time(found) && now < ossl.get_time(found) + ossl.get_timeout(found)) {
    const void *pending = ossl.pending_cipher(ssl);
    /* TLS 1.2 resumes the session's own cipher (no pending one yet); TLS 1.3 needs the same digest */
    if (pending == NULL || same_digest(ossl.sess_cipher(found), pending)) ossl.ssl_set_num_tickets(ssl, 0);
  }
  return found;
}

static napi_value tls_server_sessions(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint32_t slots = 0;
  napi_typedarray_type type;
  size_t sid_len = 0;
  void *sid = NULL;
  void *ctx = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 3 &&
      napi_get_typedarray_info(env, argv[1], &type, &sid_len, &sid, NULL, NULL) == napi_ok && type == napi_uint8_array &&
      sid_len > 0 && sid_len <= SID_MAX &&
      napi_get_value_uint32(env, argv[2], &slots) == napi_ok && slots > 0 && slots <= (1u << 24)) ctx = ctx_address(env, argv[0]);
  if (ctx == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "tlsServerSessions(ctx: hex address, sidCtx: Uint8Array of 1..32 bytes, slots: 1..2^24)");
    return NULL;
  }
  int ok = 0;
  pthread_mutex_lock(&sessions_mu);
  if (ossl_lookup()) {
    size_t tickets = ossl.ctx_get_num_tickets(ctx);
    if (session_slots == NULL) {
      session_slots = calloc(slots, sizeof *session_slots);
      session_nslots = session_slots != NULL ? slots : 0;
    }
    if (session_slots != NULL && (tickets == 1 || tickets == 2)) {
      size_t i = 0;
      while (i < MAX_CTXS && session_ctxs[i].ctx != ctx) i++;
      if (i == MAX_CTXS) { i = session_ctx_next; session_ctx_next = (session_ctx_next + 1) % MAX_CTXS; }
      session_ctxs[i].ctx = ctx;
      memcpy(session_ctxs[i].sid, sid, sid_len);
      session_ctxs[i].len = (unsigned int)sid_len;
      ok = 1;
    }
  }
  pthread_mutex_unlock(&sessions_mu);
  /* the sessions it makes carry it (OpenSSL stores no session of a context without one that verifies its peers) */
  if (ok) ok = ossl.set_sid_ctx(ctx, sid, (unsigned int)sid_len) == 1;
  if (ok) {
    ossl.set_options(ctx, OSSL_SSL_OP_NO_TICKET);
    long mode = ossl.ctrl(ctx, OSSL_CTRL_GET_SESS_CACHE_MODE, 0, NULL);
    ossl.ctrl(ctx, OSSL_CTRL_SET_SESS_CACHE_MODE, mode | OSSL_SESS_CACHE_SERVER | OSSL_SESS_CACHE_NO_INTERNAL, NULL);
    ossl.set_new_cb(ctx, on_new_session);
    ossl.set_get_cb(ctx, on_get_session);
  }
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

/* Node installs its own session callbacks on the context each time it makes a TLS socket of it (TLSWrap's
   ConfigureSecureContext): ours go back after each, before the socket reads (Node reads on the next tick) */
static napi_value tls_server_sessions_rearm(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *ctx = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1) ctx = ctx_address(env, argv[0]);
  if (ctx == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "tlsServerSessionsRearm(ctx: hex address)");
    return NULL;
  }
  int ok = 0;
  /* only a context tlsServerSessions took */
  pthread_mutex_lock(&sessions_mu);
  if (ossl_state > 0) for (size_t i = 0; i < MAX_CTXS; i++) if (session_ctxs[i].ctx == ctx) { ok = 1; break; }
  pthread_mutex_unlock(&sessions_mu);
  if (ok) {
    ossl.set_new_cb(ctx, on_new_session);
    ossl.set_get_cb(ctx, on_get_session);
  }
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

/*
 * Downstream connections served without a Node socket (src/net/native-socket.ts). Each thread
 * that serves them has one epoll set of its own, polled by one uv_poll_t in the thread's loop:
 * a connection costs one epoll_ctl to add and none to remove (its close(2) takes it out), where
 * a uv_poll_t of its own costs five (libuv checks the descriptor with an add and a remove, and
 * removes it again on start and on close) and an ioctl (accepted descriptors are non-blocking
 * already). An event names its connection by a slot and that slot's generation, not by a
 * pointer: a copy of a closed descriptor elsewhere (a child between fork and exec) keeps the
 * set reporting it until that copy closes, and such an event finds its slot reused or empty and
 * is ignored, never freed memory. When the set is
 * readable, its ready connections are taken (epoll_wait, no wait) and each gets one read(2)
 * into the thread's buffer and one call into JS. A thread that goes away closes what it still
 * has (an environment cleanup hook), as Node does with its own sockets: no descriptor outlives
 * it, and its loop closes with no handle of ours left in it.
 */
#include <sys/epoll.h>

#define CONN_READ 1
#define CONN_WRITE 2
/* the code an event call carries for "writable" (reads carry n >= 0, errors -errno) */
#define CONN_WRITABLE (-65536)
/* ready connections taken per epoll_wait, and rounds per wake-up before the loop gets a turn */
#define CONN_BATCH 64
#define CONN_ROUNDS 4

typedef struct conn_s conn_t;

/* A connection's place in its thread's table; the generation changes each time the slot is let go. */
typedef struct {
  conn_t *c;
  uint32_t gen;
  uint32_t next_free;
} conn_slot_t;

#define SLOT_NONE UINT32_MAX

typedef struct {
  napi_env env;
  napi_ref cb_ref;
  napi_ref buf_ref;
  napi_async_context actx;
  char *buf;
  size_t cap;
  int epfd;
  uv_poll_t poll;      /* the epoll set, in the thread's loop */
  conn_t *head;        /* open connections, for the cleanup hook */
  conn_t *dead;        /* closed while a batch of events was being dispatched: freed after it */
  conn_slot_t *slots;  /* the connections by the slot their events name */
  uint32_t nslots;
  uint32_t free_slot;  /* the first free slot, SLOT_NONE when the table is full */
  int dispatching;
  int torn_down;       /* the cleanup hook ran: no N-API call any more */
  int finalized;       /* the environment let go of this */
  int poll_closed;     /* the uv_poll_t's close callback ran */
} conn_env_t;

struct conn_s {
  conn_env_t *ce;
  napi_ref owner;
  conn_t *prev, *next;
  int fd;
  uint32_t slot;
  int events;          /* CONN_READ | CONN_WRITE in the epoll set; 0: not in it */
  int closing;
};

static void conn_call(conn_t *c, int code) {
  conn_env_t *ce = c->ce;
  napi_env env = ce->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg;
  napi_get_reference_value(env, ce->cb_ref, &cb);
  napi_get_reference_value(env, c->owner, &recv);
  napi_create_int32(env, code, &arg);
  napi_make_callback(env, ce->actx, recv, cb, 1, &arg, NULL);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* Polls `c` for `events` (0: takes it out of the set); 0 or -errno. */
static int conn_set(conn_t *c, int events) {
  if (events == c->events) return 0;
  if (events == 0) {
    if (epoll_ctl(c->ce->epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0 && errno != ENOENT) return -errno;
    c->events = 0;
    return 0;
  }
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = (events & CONN_READ ? EPOLLIN | EPOLLRDHUP : 0) | (events & CONN_WRITE ? EPOLLOUT : 0);
  ev.data.u64 = ((uint64_t)c->ce->slots[c->slot].gen << 32) | c->slot;
  if (epoll_ctl(c->ce->epfd, c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) != 0) return -errno;
  c->events = events;
  return 0;
}

/* One read(2) into the thread's buffer: the count, 0 at the end, or -errno (-EAGAIN: nothing there). */
static ssize_t conn_read_buf(conn_t *c) {
  ssize_t n;
  do n = read(c->fd, c->ce->buf, c->ce->cap); while (n < 0 && errno == EINTR);
  if (n >= 0) return n;
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* One read, given to JS: bytes, 0 at the end, -errno; nothing on EAGAIN. */
static void conn_read(conn_t *c) {
  ssize_t n = conn_read_buf(c);
  if (n != -EAGAIN) conn_call(c, (int)n);
}

static void conn_dispatch(conn_t *c, uint32_t e) {
  if (e & EPOLLERR) {
    /* an error on the socket (a reset). What the client sent before it is read first, as a
       Node socket reads it: a whole request followed by a reset is served as one, not lost.
       Then the error, from the socket itself. */
    if (c->events & CONN_READ) {
      ssize_t n = conn_read_buf(c);
      if (n > 0) {
        conn_call(c, (int)n);
        if (c->closing) return;
      }
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = ECONNRESET;
    conn_call(c, -err);
    return;
  }
  int handled = 0;
  if ((e & EPOLLOUT) && (c->events & CONN_WRITE)) {
    handled = 1;
    conn_call(c, CONN_WRITABLE);
    if (c->closing) return;
  }
  if ((e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) && (c->events & CONN_READ)) {
    conn_read(c);
    return;
  }
  /* hung up while only waiting to write, and not writable: the bytes can never go (epoll
     reports a hang-up whatever was asked for, so it would come back at every turn) */
  if ((e & EPOLLHUP) && !handled) conn_call(c, -EPIPE);
}

static void conn_free(conn_t *c) {
  conn_env_t *ce = c->ce;
  if (ce->dispatching > 0) {
    c->next = ce->dead;
    ce->dead = c;
  } else {
    free(c);
  }
}

static void on_conns(uv_poll_t *h, int status, int events) {
  (void)status; (void)events;
  conn_env_t *ce = (conn_env_t *)h->data;
  struct epoll_event evs[CONN_BATCH];
  for (int round = 0; round < CONN_ROUNDS && !ce->torn_down; round++) {
    int n;
    do n = epoll_wait(ce->epfd, evs, CONN_BATCH, 0); while (n < 0 && errno == EINTR);
    if (n <= 0) break;
    ce->dispatching++;
    for (int i = 0; i < n; i++) {
      uint32_t slot = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
      /* closed since (by an earlier event of this batch, or before, its descriptor still open
         elsewhere): the slot is empty or has another generation */
      if (slot >= ce->nslots || ce->slots[slot].gen != gen) continue;
      conn_t *c = ce->slots[slot].c;
      if (c != NULL && !c->closing) conn_dispatch(c, evs[i].events);
    }
    if (--ce->dispatching == 0) {
      while (ce->dead) {
        conn_t *d = ce->dead;
        ce->dead = d->next;
        free(d);
      }
    }
    if (n < CONN_BATCH) break;
  }
}

/* A free slot for `c` (the table doubles when full); 0 or -ENOMEM. */
static int conn_slot_take(conn_t *c) {
  conn_env_t *ce = c->ce;
  if (ce->free_slot == SLOT_NONE) {
    uint32_t n = ce->nslots ? ce->nslots * 2 : 64;
    if (n <= ce->nslots) return -ENOMEM;
    conn_slot_t *grown = realloc(ce->slots, (size_t)n * sizeof *grown);
    if (!grown) return -ENOMEM;
    /* new slots go on the free list lowest first */
    for (uint32_t i = n; i-- > ce->nslots;) {
      grown[i].c = NULL;
      grown[i].gen = 0;
      grown[i].next_free = ce->free_slot;
      ce->free_slot = i;
    }
    ce->slots = grown;
    ce->nslots = n;
  }
  uint32_t s = ce->free_slot;
  ce->free_slot = ce->slots[s].next_free;
  ce->slots[s].c = c;
  c->slot = s;
  return 0;
}

/* The slot is let go: an event still naming it (this batch's, or a copy's) is ignored from now on. */
static void conn_slot_release(conn_t *c) {
  conn_env_t *ce = c->ce;
  conn_slot_t *s = &ce->slots[c->slot];
  s->c = NULL;
  s->gen++;
  s->next_free = ce->free_slot;
  ce->free_slot = c->slot;
}

/* The set keeps the thread's loop alive while it holds a connection, as an open Node socket does. */
static void conn_link(conn_t *c) {
  conn_env_t *ce = c->ce;
  if (ce->head == NULL) uv_ref((uv_handle_t *)&ce->poll);
  c->next = ce->head;
  if (ce->head) ce->head->prev = c;
  ce->head = c;
}

static void conn_unlink(conn_t *c) {
  conn_env_t *ce = c->ce;
  if (c->prev) c->prev->next = c->next; else ce->head = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (ce->head == NULL && !ce->torn_down) uv_unref((uv_handle_t *)&ce->poll);
}

static void conn_close(conn_t *c, int close_fd) {
  if (c->closing) return;
  conn_env_t *ce = c->ce;
  c->closing = 1;
  conn_unlink(c);
  conn_slot_release(c);
  if (close_fd) {
    /* close(2) takes it out of the set: no epoll_ctl. Where a copy of the descriptor keeps it
       there, its events name a slot that is no longer its own (conn_slot_release). */
    close(c->fd);
    c->events = 0;
  } else {
    conn_set(c, 0); /* a Node socket takes the descriptor over: out of this set */
  }
  c->fd = -1;
  if (!ce->torn_down) napi_delete_reference(ce->env, c->owner);
  conn_free(c);
}

static void conn_env_free(conn_env_t *ce) {
  free(ce->slots);
  free(ce);
}

static void on_conns_closed(uv_handle_t *h) {
  conn_env_t *ce = (conn_env_t *)h->data;
  ce->poll_closed = 1;
  if (ce->finalized) conn_env_free(ce);
}

/* The thread's environment is going: its connections are closed with it, then the set. */
static void conn_env_cleanup(void *arg) {
  conn_env_t *ce = (conn_env_t *)arg;
  ce->torn_down = 1;
  while (ce->head) conn_close(ce->head, 1);
  uv_poll_stop(&ce->poll);
  close(ce->epfd);
  ce->epfd = -1;
  uv_close((uv_handle_t *)&ce->poll, on_conns_closed);
}

static void conn_env_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  conn_env_t *ce = (conn_env_t *)data;
  ce->torn_down = 1;
  ce->finalized = 1;
  if (ce->poll_closed) conn_env_free(ce);
}

static napi_value conn_init(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      length == 0 || napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "connInit(buffer: Uint8Array, onEvent: function)");
    return NULL;
  }
  void *old = NULL;
  if (napi_get_instance_data(env, &old) == napi_ok && old != NULL) {
    napi_throw_error(env, "ERR_CONN_INIT", "connInit: already called on this thread");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, "ERR_NO_LOOP", "no event loop");
    return NULL;
  }
  conn_env_t *ce = calloc(1, sizeof *ce);
  if (!ce) return throw_errno(env, "connInit", ENOMEM);
  ce->env = env;
  ce->free_slot = SLOT_NONE;
  ce->buf = (char *)data;
  ce->cap = length;
  ce->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ce->epfd < 0) {
    int err = errno;
    free(ce);
    return throw_errno(env, "epoll_create1", err);
  }
  int r = uv_poll_init(loop, &ce->poll, ce->epfd);
  if (r == 0) {
    ce->poll.data = ce;
    r = uv_poll_start(&ce->poll, UV_READABLE, on_conns);
    if (r == 0) uv_unref((uv_handle_t *)&ce->poll); /* no connection yet */
    if (r != 0) {
      /* the handle is in the loop: it is freed by its close callback */
      ce->finalized = 1;
      uv_close((uv_handle_t *)&ce->poll, on_conns_closed);
      close(ce->epfd);
      return throw_errno(env, "uv_poll_start", -r);
    }
  }
  if (r != 0) {
    close(ce->epfd);
    free(ce);
    return throw_errno(env, "uv_poll_init", -r);
  }
  napi_value name;
  napi_create_string_utf8(env, "sluice:conn", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[1], 1, &ce->cb_ref) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &ce->buf_ref) != napi_ok ||
      napi_async_init(env, NULL, name, &ce->actx) != napi_ok ||
      napi_add_env_cleanup_hook(env, conn_env_cleanup, ce) != napi_ok ||
      napi_set_instance_data(env, ce, conn_env_finalize, NULL) != napi_ok) {
    napi_throw_error(env, "ERR_NAPI", "connInit: cannot keep references");
    return NULL;
  }
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value conn_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1;
  napi_valuetype t;
  conn_env_t *ce = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_typeof(env, argv[1], &t) != napi_ok || t != napi_object) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "connOpen(fd, owner: object)");
    return NULL;
  }
  if (napi_get_instance_data(env, (void **)&ce) != napi_ok || ce == NULL || ce->torn_down) {
    napi_throw_error(env, "ERR_CONN_INIT", "connOpen: connInit was not called on this thread");
    return NULL;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return throw_errno(env, "connOpen", ENOMEM);
  c->ce = ce;
  c->fd = fd;
  if (napi_create_reference(env, argv[1], 1, &c->owner) != napi_ok) {
    free(c);
    napi_throw_error(env, "ERR_NAPI", "connOpen: cannot keep a reference");
    return NULL;
  }
  int r = conn_slot_take(c);
  if (r != 0) {
    napi_delete_reference(env, c->owner);
    free(c);
    return throw_errno(env, "connOpen", -r);
  }
  r = conn_set(c, CONN_READ);
  if (r != 0) {
    conn_slot_release(c);
    napi_delete_reference(env, c->owner);
    free(c);
    return throw_errno(env, "epoll_ctl", -r);
  }
  conn_link(c);
  napi_value ext;
  napi_create_external(env, c, NULL, NULL, &ext);
  return ext;
}

/* The handle argument and an int32 after it; NULL (thrown) when it is not a live connection. */
static conn_t *conn_arg(napi_env env, napi_callback_info info, int32_t *extra) {
  size_t argc = 2;
  napi_value argv[2];
  void *p = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || !p ||
      napi_get_value_int32(env, argv[1], extra) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "a connection handle and an integer are required");
    return NULL;
  }
  return (conn_t *)p;
}

/* connEvents(handle, events): poll for CONN_READ | CONN_WRITE (0: nothing); 0 or -errno */
static napi_value conn_events(napi_env env, napi_callback_info info) {
  int32_t events = 0;
  conn_t *c = conn_arg(env, info, &events);
  if (!c) return NULL;
  int r = c->closing ? 0 : conn_set(c, events & (CONN_READ | CONN_WRITE));
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

/*
 * connRead(handle, 0): one read(2) into the thread's buffer now, without waiting for the set
 * to say the socket is readable: what the event call would carry (bytes, 0 at the end,
 * -errno), or -EAGAIN when nothing is there yet (the set reports it when it comes). A new
 * connection's first bytes have usually arrived by the time a worker takes it, and reading
 * them at once spares a round through the set (its epoll_wait, and often a turn of the loop).
 */
static napi_value conn_read_js(napi_env env, napi_callback_info info) {
  int32_t unused = 0;
  conn_t *c = conn_arg(env, info, &unused);
  if (!c) return NULL;
  int32_t r = c->closing ? -EBADF : (int32_t)conn_read_buf(c);
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

/* connClose(handle, closeFd): no more events; the descriptor closed, or left open for a Node socket (closeFd 0) */
static napi_value conn_close_js(napi_env env, napi_callback_info info) {
  int32_t close_fd = 1;
  conn_t *c = conn_arg(env, info, &close_fd);
  if (!c) return NULL;
  conn_close(c, close_fd != 0);
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* connWrite(fd, bytes, n): one write(2) of bytes[0, n): the count taken, 0 on EAGAIN, -errno on an error */
static napi_value conn_write(napi_env env, napi_callback_info info) {
  int32_t fd;
  void *data = NULL;
  uint32_t n = 0;
  if (write_args(env, info, "connWrite(fd, bytes: Uint8Array, n <= bytes.length)", &fd, &data, &n)) return NULL;
  ssize_t w;
  do w = send(fd, data, n, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
  int32_t r = w >= 0 ? (int32_t)w : (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

/* shutdownWrite(fd): shutdown(SHUT_WR); 0 or -errno */
static napi_value shutdown_write(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;
  int r = shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

static napi_value peer_address(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, &fd)) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
    napi_value nul;
    napi_get_null(env, &nul);
    return nul;
  }
  return sockaddr_value(env, &ss);
}

/*
 * Node configures every event loop, the main thread's and each worker's, to measure its idle
 * time (UV_METRICS_IDLE_TIME, for performance.eventLoopUtilization). With that on, each time a
 * loop would wait, libuv first polls with no timeout and only then waits: one epoll_pwait more
 * per wake-up, and each of Sluice's threads wakes about once per new connection. Nothing in
 * Sluice reads the metric, and libuv has no option that turns it off, so loopIdleTimeOff()
 * clears the flag where libuv keeps it: the first word of the loop's internal fields (value 1,
 * from libuv 1.39 on, read here for the versions Node 20 and 22 bundle), and only when that word
 * holds nothing but flags libuv defines. True when it was on and now is off.
 */
#define UV_FLAG_IDLE_TIME 1u
#define UV_FLAGS_KNOWN 7u

static napi_value loop_idle_time_off(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t *loop = NULL;
  bool done = false;
  unsigned int v = uv_version();
  unsigned int minor = (v >> 8) & 0xff;
  if ((v >> 16) == 1 && minor >= 45 && minor <= 51 &&
      napi_get_uv_event_loop(env, &loop) == napi_ok && loop != NULL && loop->internal_fields != NULL) {
    unsigned int *flags = (unsigned int *)loop->internal_fields;
    if ((*flags & UV_FLAG_IDLE_TIME) && (*flags & ~UV_FLAGS_KNOWN) == 0) {
      *flags &= ~UV_FLAG_IDLE_TIME;
      done = true;
    }
  }
  napi_value r;
  napi_get_boolean(env, done, &r);
  return r;
}

/*
 * The calling thread's scheduling policy, between SCHED_OTHER and SCHED_BATCH only.
 * schedBatch(true): SCHED_OTHER -> SCHED_BATCH; schedBatch(false): SCHED_BATCH -> SCHED_OTHER.
 * Any other policy (real-time, SCHED_IDLE, one set by whoever started the process) is left as
 * it is. Returns 1 when it changed the policy (or, for true, had already made this thread batch
 * and paces it), 0 when it left it, -errno when the kernel refused.
 *
 * Why the main thread wants SCHED_BATCH: a batch thread that wakes does not preempt the thread
 * running on its CPU (Linux's fair scheduler skips the wake-up preemption for it); it runs when a
 * CPU is free, or at the running thread's next turn. The main thread wakes for each readable
 * listening socket; under load, waking it at once for every new connection is a context switch
 * per connection or so, while letting it wait for a free CPU finds several connections queued.
 * A CPU that is free runs it at once as before, so a lone connection waits no longer. While
 * the accept queue holds a backlog, the acceptors put it back into SCHED_OTHER (pace() above).
 */
static napi_value sched_batch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "schedBatch(on: boolean)");
    return NULL;
  }
  int result;
  if (on && batch_wanted && pthread_equal(pthread_self(), batch_thread)) {
    result = 1; /* already ours (another Sluice in this process): batch, or paced back for a backlog */
  } else {
    int now = sched_getscheduler(0); /* pid 0: this thread */
    if (now < 0) {
      result = -errno;
    } else if (now != (on ? SCHED_OTHER : SCHED_BATCH)) {
      result = 0;
    } else if (set_policy(on ? SCHED_BATCH : SCHED_OTHER) != 0) {
      result = -errno;
    } else {
      result = 1;
      if (on) {
        /* this thread's acceptors pace it from now on (pace() above) */
        batch_thread = pthread_self();
        batch_now = 1;
        batch_wanted = 1;
      } else if (batch_wanted && pthread_equal(pthread_self(), batch_thread)) {
        batch_wanted = 0; /* put back by whoever made it batch: no more pacing */
      }
    }
  }
  napi_value r;
  napi_create_int32(env, result, &r);
  return r;
}

/* threadName(name): the calling thread's name (15 bytes at most), as top -H and /proc show it. */
static napi_value thread_name(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char name[16];
  size_t len = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "threadName(name: string)");
    return NULL;
  }
  int err = pthread_setname_np(pthread_self(), name);
  if (err != 0) return throw_errno(env, "pthread_setname_np", err);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "originalDst", NULL, original_dst, NULL, NULL, NULL, napi_default, NULL },
    { "dup", NULL, dup_fd, NULL, NULL, NULL, napi_default, NULL },
    { "close", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL },
    { "fdLimit", NULL, fd_limit, NULL, NULL, NULL, napi_default, NULL },
    { "listen", NULL, listen_fd, NULL, NULL, NULL, napi_default, NULL },
    { "localAddress", NULL, local_address, NULL, NULL, NULL, napi_default, NULL },
    { "acceptStart", NULL, accept_start, NULL, NULL, NULL, napi_default, NULL },
    { "acceptResume", NULL, accept_resume, NULL, NULL, NULL, napi_default, NULL },
    { "acceptStop", NULL, accept_stop, NULL, NULL, NULL, napi_default, NULL },
    { "closeMany", NULL, close_many, NULL, NULL, NULL, napi_default, NULL },
    { "tlsSetNumTickets", NULL, tls_set_num_tickets, NULL, NULL, NULL, napi_default, NULL },
    { "tlsServerSessions", NULL, tls_server_sessions, NULL, NULL, NULL, napi_default, NULL },
    { "tlsServerSessionsRearm", NULL, tls_server_sessions_rearm, NULL, NULL, NULL, napi_default, NULL },
    { "writeSome", NULL, write_some, NULL, NULL, NULL, napi_default, NULL },
    { "connInit", NULL, conn_init, NULL, NULL, NULL, napi_default, NULL },
    { "connOpen", NULL, conn_open, NULL, NULL, NULL, napi_default, NULL },
    { "connEvents", NULL, conn_events, NULL, NULL, NULL, napi_default, NULL },
    { "connClose", NULL, conn_close_js, NULL, NULL, NULL, napi_default, NULL },
    { "connRead", NULL, conn_read_js, NULL, NULL, NULL, napi_default, NULL },
    { "connWrite", NULL, conn_write, NULL, NULL, NULL, napi_default, NULL },
    { "shutdownWrite", NULL, shutdown_write, NULL, NULL, NULL, napi_default, NULL },
    { "peerAddress", NULL, peer_address, NULL, NULL, NULL, napi_default, NULL },
    { "loopIdleTimeOff", NULL, loop_idle_time_off, NULL, NULL, NULL, napi_default, NULL },
    { "schedBatch", NULL, sched_batch, NULL, NULL, NULL, napi_default, NULL },
    { "threadName", NULL, thread_name, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
