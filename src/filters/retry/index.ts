/**
 * Retry policy per route:
 *
 *   retry: { on: [connect-failure, reset, "503"], attempts: 2, perTryTimeoutMs: 500,
 *            backoff: { baseMs: 25, maxMs: 250 }, budget: { percent: 20, minConcurrency: 3 },
 *            idempotent: false }
 *
 * `on` names what is tried again: connect-failure (no connection, a name that did not
 * resolve), refused-stream (HTTP/2 REFUSED_STREAM, a GOAWAY that did not cover the request),
 * reset (the connection or stream ended before any answer), timeout (the per-try timeout),
 * an HTTP status ("503"), 5xx, gateway-error (502, 503, 504), retriable-4xx (409), and gRPC
 * statuses of a trailers-only answer (cancelled, deadline-exceeded, internal,
 * resource-exhausted, unavailable). `attempts` counts the retries after the first try.
 *
 * Only where safe: what happened after the request was sent (reset, timeout, an answer's status)
 * is retried only for a request that can be repeated: an idempotent HTTP method, or a route that
 * says `idempotent: true` (needed for POST, gRPC and Dubbo calls). A request whose body was sent
 * is sent again only while the exchange kept all of it. Another endpoint is used when there is one.
 *
 * The budget (Envoy's retry_budget): retries in flight stay under `percent` of the cluster's
 * requests in flight (at least `minConcurrency`), counted across every worker in shared memory,
 * so retries never multiply an overload. Backoff: full jitter, `baseMs * 2^(n-1)` capped at `maxMs`.
 */
import { CONTINUE, type Filter, type FilterEnv, type RequestContext, type RetryPolicy } from '../../exchange/filter';
import type { FailureKind } from '../../exchange/outcome';
import type { Stats } from '../../stats/stats';
import type { ClusterRuntime } from '../../upstream/cluster';
import type { FilterModule } from '../module';

export interface RetryConfig {
  on: string[];
  attempts: number;
  perTryTimeoutMs?: number;
  backoff?: { baseMs: number; maxMs: number };
  budget?: { percent: number; minConcurrency: number };
  idempotent?: boolean;
}

const GRPC_CODES: Record<string, number> = {
  cancelled: 1, 'deadline-exceeded': 4, internal: 13, 'resource-exhausted': 8, unavailable: 14,
};
const CONDITIONS = ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx', 'gateway-error', 'retriable-4xx', ...Object.keys(GRPC_CODES)];

export const routeSchema = {
  retry: {
    type: 'object',
    additionalProperties: false,
    required: ['on'],
    properties: {
      on: {
        type: 'array', minItems: 1, uniqueItems: true,
        items: { anyOf: [{ enum: CONDITIONS }, { type: 'string', pattern: '^[1-5][0-9][0-9]$' }, { type: 'integer', minimum: 100, maximum: 599 }] },
      },
      attempts: { type: 'integer', minimum: 1, maximum: 10, default: 1 },
      perTryTimeoutMs: { type: 'integer', minimum: 1, maximum: 86_400_000 },
      backoff: {
        type: 'object', additionalProperties: false, default: {},
        properties: { baseMs: { type: 'integer', minimum: 0, maximum: 60_000, default: 25 }, maxMs: { type: 'integer', minimum: 0, maximum: 600_000, default: 250 } },
      },
      budget: {
        type: 'object', additionalProperties: false, default: {},
        properties: { percent: { type: 'number', minimum: 0, maximum: 100, default: 20 }, minConcurrency: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 3 } },
      },
      idempotent: { type: 'boolean', default: false },
    },
  },
};

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** A route's retry policy, compiled once: one object for requests that can be repeated, one for those that cannot. */
interface Compiled {
  repeatable: RetryPolicy;
  neverSent: RetryPolicy;
  idempotent: boolean;
}

function compile(c: RetryConfig, stats: Stats, random: () => number): Compiled {
  const kinds = new Set<FailureKind>();
  const statuses = new Set<number>();
  let any5xx = false;
  const grpc = new Set<number>();
  for (const raw of c.on) {
    const o = String(raw);
    if (o === 'connect-failure') { kinds.add('connect_failed'); kinds.add('dns_failed'); }
    else if (o === 'refused-stream') kinds.add('refused');
    else if (o === 'reset') { kinds.add('reset'); kinds.add('stale'); kinds.add('protocol_error'); }
    else if (o === 'timeout') kinds.add('timeout');
    else if (o === '5xx') any5xx = true;
    else if (o === 'gateway-error') { statuses.add(502); statuses.add(503); statuses.add(504); }
    else if (o === 'retriable-4xx') statuses.add(409);
    else if (o in GRPC_CODES) grpc.add(GRPC_CODES[o]);
    else statuses.add(Number(o));
  }
  const base = c.backoff?.baseMs ?? 25;
  const max = c.backoff?.maxMs ?? 250;
  const percent = c.budget?.percent ?? 20;
  const minConcurrency = c.budget?.minConcurrency ?? 3;
  const make = (neverSentOnly: boolean): RetryPolicy => ({
    retries: c.attempts,
    perTryTimeoutMs: c.perTryTimeoutMs ?? 0,
    neverSentOnly,
    retryOn: (kind) => kinds.has(kind),
    retryOnStatus: (status, grpcStatus) => !neverSentOnly
      && (grpcStatus >= 0 ? grpc.has(grpcStatus) : statuses.has(status) || (any5xx && status >= 500 && status < 600)),
    backoffMs: (n) => {
      if (base <= 0) return 0;
      const cap = Math.min(max, base * 2 ** Math.max(0, n - 2));
      return Math.floor(random() * cap);
    },
    admit: (cluster: ClusterRuntime | null) => {
      if (!cluster) return false;
      const s = cluster.stats;
      const active = stats.get(s.rqActive);
      const retrying = stats.get(s.rqRetryActive);
      const allowed = Math.max(minConcurrency, (percent / 100) * active);
      if (retrying < allowed) return true;
      stats.inc(stats.slot('sluice_retry_budget_exhausted_total', { cluster: cluster.name }));
      return false;
    },
  });
  return { repeatable: make(false), neverSent: make(true), idempotent: c.idempotent === true };
}

export function createRetry(env: FilterEnv): Filter<Compiled> {
  return {
    name: 'retry',
    compileRoute(route) {
      const c = route.retry as RetryConfig | undefined;
      return c ? compile(c, env.stats, env.random) : null;
    },
    onRequest(ctx: RequestContext, p: Compiled) {
      const repeatable = p.idempotent || (ctx.view.protocol !== 'dubbo' && ctx.view.protocol !== 'grpc' && SAFE_METHODS.has(ctx.view.method));
      ctx.setRetryPolicy(repeatable ? p.repeatable : p.neverSent);
      return CONTINUE;
    },
  };
}

export const retryModule: FilterModule = {
  name: 'retry',
  routeSchema,
  stats: [
    { name: 'sluice_retry_budget_exhausted_total', kind: 'counter', by: 'cluster', help: 'Retries not made because the cluster\'s retry budget (a share of its requests in flight) was used up' },
  ],
  create: createRetry,
};
