/**
 * One vocabulary for how a request can go wrong, whatever its protocol, and the one place where
 * a failure becomes the reply the client sees. Each protocol renders the reply in its own form
 * (an HTTP status with `x-sluice-reason`, a gRPC status, a Dubbo response status).
 */

/** Why Sluice answered instead of an upstream; sent as the `x-sluice-reason` header. */
export type LocalReason =
  | 'bad_request'
  | 'no_route'
  | 'upstream_connect_failed'
  | 'upstream_dns_failed'
  | 'upstream_timeout'
  | 'upstream_reset'
  | 'overflow'
  | 'direct_response'
  | 'no_healthy_upstream'
  /** A request held for its service's first list from a registry, and none came in time (explicit listeners). */
  | 'registry_timeout'
  /** A new service past registry.maxServices: not subscribed (explicit listeners; captured calls go where they were sent). */
  | 'registry_full'
  | 'denied'
  | 'rate_limited'
  /** Adaptive limiting refused the call: the protected application is at its capacity. */
  | 'overloaded'
  /** Refused by an open circuit breaker (src/protection/breaker.ts). */
  | 'circuit_open'
  /** The route is degraded by an alarm's action (src/alarms): its fallback answers, else 503. */
  | 'degraded'
  | 'fault_abort'
  | 'internal_error';

export interface LocalReply {
  status: number;
  reason: LocalReason;
  body?: string;
  /** gRPC: the status to send, when the HTTP status does not say it (a fault injected as a gRPC code). */
  grpcStatus?: number;
  /** Dubbo: the status byte to send, when the HTTP status does not say it. */
  dubboStatus?: number;
  /** Seconds until the request may succeed: HTTP `retry-after` (also on gRPC's trailers-only answer), Dubbo's message. */
  retryAfter?: number;
}

/**
 * How one attempt at an upstream failed before its response was complete.
 *
 *   connect_failed   no connection (refused, unreachable, connect timeout): the request never left
 *   dns_failed       the endpoint's name did not resolve: never left
 *   overflow         too many requests waiting for a connection to the endpoint: never left
 *   refused          the upstream refused the request unprocessed (HTTP/2 REFUSED_STREAM, a GOAWAY
 *                    that did not cover it): safe to send again
 *   stale            a keep-alive connection the upstream closed just as the request went out,
 *                    nothing came back: safe to send again when the request can be repeated
 *   reset            the connection or stream ended before the response was complete
 *   timeout          the attempt's time ran out (per try, or the route's)
 *   protocol_error   the upstream's answer broke its protocol
 */
export type FailureKind = 'connect_failed' | 'dns_failed' | 'overflow' | 'refused' | 'stale' | 'reset' | 'timeout' | 'protocol_error';

/** Failures after which the request surely never reached the upstream's application. */
export function neverSent(kind: FailureKind): boolean {
  return kind === 'connect_failed' || kind === 'dns_failed' || kind === 'overflow' || kind === 'refused' || kind === 'stale';
}

/**
 * The reply for a failure that left no response to pass on. The replies here are frozen: a
 * protocol may then encode each one once (HTTP/1: cachedLocalReply) instead of per request.
 */
export function replyForFailure(kind: FailureKind): LocalReply {
  switch (kind) {
    case 'connect_failed': return CONNECT_FAILED;
    case 'dns_failed': return DNS_FAILED;
    case 'overflow': return OVERFLOW;
    case 'timeout': return TIMEOUT;
    case 'protocol_error': return INVALID_RESPONSE;
    default: return RESET;
  }
}

const CONNECT_FAILED: LocalReply = Object.freeze({ status: 503, reason: 'upstream_connect_failed', body: 'upstream connect failed\n' });
const DNS_FAILED: LocalReply = Object.freeze({ status: 503, reason: 'upstream_dns_failed', body: 'upstream name lookup failed\n' });
const OVERFLOW: LocalReply = Object.freeze({ status: 503, reason: 'overflow', body: 'upstream overflow\n' });
const TIMEOUT: LocalReply = Object.freeze({ status: 504, reason: 'upstream_timeout', body: 'upstream request timeout\n' });
const INVALID_RESPONSE: LocalReply = Object.freeze({ status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' });
const RESET: LocalReply = Object.freeze({ status: 503, reason: 'upstream_reset', body: 'upstream connection reset before response\n' });
/**
 * An authorization rule refused the request (src/filters/authz): HTTP 403, gRPC PERMISSION_DENIED,
 * Dubbo SERVICE_ERROR (see dubbo-session.ts for why). The body names no rule: the caller learns
 * that it was refused, the operator learns why from the stats and the access log.
 */
export const DENIED: LocalReply = Object.freeze({ status: 403, reason: 'denied', body: 'access denied\n', grpcStatus: 7 });
/**
 * Adaptive limiting refused the call (src/filters/adaptive): HTTP 503, gRPC RESOURCE_EXHAUSTED,
 * Dubbo SERVER_THREADPOOL_EXHAUSTED_ERROR (100), what Dubbo itself answers when a provider is full.
 */
export const OVERLOADED: LocalReply = Object.freeze({ status: 503, reason: 'overloaded', body: 'overloaded\n', grpcStatus: 8, dubboStatus: 100 });
export const NO_ROUTE: LocalReply = Object.freeze({ status: 404, reason: 'no_route', body: 'no route\n' });
/** Over a cluster limit of clusters[].circuitBreaker (requests or pending requests in flight across every worker). */
export const CLUSTER_OVERFLOW: LocalReply = Object.freeze({ status: 503, reason: 'overflow', body: 'cluster limit reached\n' });
/** An open breaker: the interface's, or every endpoint's of the cluster. */
export const CIRCUIT_OPEN: LocalReply = Object.freeze({ status: 503, reason: 'circuit_open', body: 'circuit breaker open\n' });
/** A route an alarm's action degraded (src/alarms), when the route has no fallback for it. */
export const DEGRADED: LocalReply = Object.freeze({ status: 503, reason: 'degraded', body: 'route degraded\n', grpcStatus: 14 });
export const NO_HEALTHY_UPSTREAM: LocalReply = Object.freeze({ status: 503, reason: 'no_healthy_upstream', body: 'no healthy upstream\n' });

/**
 * How an exchange ended, as health checking and limiters need to know it:
 *
 *   success             the upstream answered, and not with an error (1xx-3xx, gRPC OK, Dubbo OK)
 *   caller_error        the upstream answered that the request was wrong (4xx but 429; gRPC
 *                       INVALID_ARGUMENT, NOT_FOUND, ...; Dubbo BAD_REQUEST, SERVICE_NOT_FOUND)
 *   overloaded          the upstream said it is overloaded (429, RESOURCE_EXHAUSTED, Dubbo 100):
 *                       load, not a failure of the host
 *   upstream_error      the upstream answered with a failure (5xx; UNAVAILABLE, INTERNAL, ...; Dubbo
 *                       SERVER_ERROR, SERVICE_ERROR, SERVER_TIMEOUT, BAD_RESPONSE)
 *   local_origin_error  no usable answer: connect failure, reset, timeout, an invalid response
 *   local               Sluice answered without asking an upstream (no route, denied, a fault)
 *   cancelled           the client went away first
 */
export type OutcomeClass = 'success' | 'caller_error' | 'overloaded' | 'upstream_error' | 'local_origin_error' | 'local' | 'cancelled';

export function classifyHttpStatus(status: number): OutcomeClass {
  if (status < 400) return 'success';
  if (status === 429) return 'overloaded';
  if (status < 500) return 'caller_error';
  return 'upstream_error';
}

/** gRPC status codes 0-16 → class (gRPC's own statuses: who is at fault). */
const GRPC_CLASS: readonly OutcomeClass[] = [
  'success', // 0 OK
  'cancelled', // 1 CANCELLED
  'upstream_error', // 2 UNKNOWN
  'caller_error', // 3 INVALID_ARGUMENT
  'upstream_error', // 4 DEADLINE_EXCEEDED
  'caller_error', // 5 NOT_FOUND
  'caller_error', // 6 ALREADY_EXISTS
  'caller_error', // 7 PERMISSION_DENIED
  'overloaded', // 8 RESOURCE_EXHAUSTED
  'caller_error', // 9 FAILED_PRECONDITION
  'caller_error', // 10 ABORTED
  'caller_error', // 11 OUT_OF_RANGE
  'upstream_error', // 12 UNIMPLEMENTED
  'upstream_error', // 13 INTERNAL
  'upstream_error', // 14 UNAVAILABLE
  'upstream_error', // 15 DATA_LOSS
  'caller_error', // 16 UNAUTHENTICATED
];

export function classifyGrpcStatus(code: number): OutcomeClass {
  return GRPC_CLASS[code] ?? 'upstream_error';
}
