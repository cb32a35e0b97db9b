/**
 * The filter contract: what a filter sees of a request's whole life, and what it may do.
 *
 *   request ──▶ onRequest ─▶ (each filter in turn) ─▶ route target ─▶ upstream attempts
 *                 CONTINUE, STOP then resume(), or reply()        │
 *   client ◀── onResponseHead (may replace the answer) ◀──────────┘
 *   end    ──▶ onComplete (outcome class, duration, bytes, endpoint, attempts)
 *
 * A filter never sees a socket and never names a protocol: it sees the request view (where the
 * protocol is `view.protocol`, for logging and matching) and the outcome class. It lives in a
 * folder of its own under src/filters/, with the schema of its config section, the list of its
 * stats, and its tests; it is listed in the config (`filters`) and registered by name.
 *
 * A filter is created once per config and worker. Its part of a route is compiled once
 * (`compileRoute`), and a request only meets the filters its route uses (and the global ones):
 * a filter that a route does not configure costs that route's requests nothing.
 */
import type { SharedMemory } from '../shared/shared-memory';
import type { ClusterRuntime } from '../upstream/cluster';
import type { Stats } from '../stats/stats';
import type { FailureKind, LocalReply, OutcomeClass } from './outcome';
import type { Peer, RequestView } from './request-view';
import type { Direction } from '../config/config';

export type { LocalReason, LocalReply } from './outcome';

export const CONTINUE = 0;
export const STOP = 1;
export type FilterStatus = typeof CONTINUE | typeof STOP;

/** Where a request goes: endpoints of a cluster (a label subset of them), or the connection's passthrough target. */
export interface UpstreamTarget {
  readonly kind: 'cluster' | 'passthrough';
  readonly cluster: ClusterRuntime | null;
  /** The label subset of the cluster ('' = all endpoints). */
  readonly subset: string;
}

/** When another attempt may follow a failed one, and how soon. */
export interface RetryPolicy {
  /** Attempts after the first. */
  readonly retries: number;
  /** An attempt's own time limit (0: only the route's). */
  readonly perTryTimeoutMs: number;
  /** Whether this failure may be tried again (the request could be sent again, as far as this policy knows). */
  retryOn(kind: FailureKind): boolean;
  /** Whether an answer with this status (HTTP, or Dubbo's byte) and gRPC status (-1: none) is tried again. */
  retryOnStatus(status: number, grpcStatus: number): boolean;
  /** Before attempt `n` (2, 3, ...): how long to wait. */
  backoffMs(n: number): number;
  /** Whether one more retry fits the retry budget now (retries are at most a share of requests in flight). */
  admit(cluster: ClusterRuntime | null): boolean;
  /** Only on failures where the request surely never reached the upstream (Dubbo calls that are not idempotent). */
  readonly neverSentOnly: boolean;
}

/** Changes to a request's or a response's headers (HTTP fields, Dubbo attachments), applied as it is forwarded. */
export interface HeaderOps {
  /** name (lower case), value: set, replacing what was there */
  readonly set: ReadonlyArray<readonly [string, string]>;
  /** names (lower case) removed */
  readonly remove: readonly string[];
}

export interface RequestContext {
  readonly view: RequestView;
  /** The route the request matched; null when none did (filters still run: a deny must not depend on a route). */
  readonly routeName: string | null;
  /**
   * When the request began, as this thread's performance.now() (ms): a filter that needs the time
   * of a request reads it here rather than the clock again. Absent where nobody took it (tests).
   */
  readonly startMs?: number;
  /** Stop and answer locally. */
  reply(r: LocalReply): void;
  /** Continue after this filter returned STOP. A second call for the same stop is ignored. */
  resume(): void;
  /** Send the request here rather than to the route's target. */
  setTarget(t: UpstreamTarget): void;
  /** Header (attachment) changes for the request as it goes upstream; later calls add to earlier ones. */
  editRequest(ops: HeaderOps): void;
  /** Header (attachment) changes for the response as it goes to the client. */
  editResponse(ops: HeaderOps): void;
  /**
   * A copy of the request goes to this cluster; its answer is discarded and never delays the
   * request. `dropped` is told when the copy is given up (it fell behind, timed out, or the
   * cluster had no endpoint).
   */
  mirror(cluster: ClusterRuntime, dropped?: () => void): void;
  /** The retry policy for this request (instead of the default: connect failures and refused streams). */
  setRetryPolicy(p: RetryPolicy): void;
  /** `fn` after `ms`, unless the request ends first: a delay holds the request, not the worker. */
  after(ms: number, fn: () => void): void;
  /** A field for the access log line: what the filter did (`fault: abort`). */
  note(key: string, value: string | number): void;
}

export interface ResponseContext {
  readonly view: RequestView;
  readonly routeName: string | null;
  /** The HTTP status, or the Dubbo status byte. */
  readonly status: number;
  /** The gRPC status in the response head (a trailers-only response), else -1. */
  readonly grpcStatus: number;
  readonly outcome: OutcomeClass;
  /** Answer locally instead of passing this response on. */
  reply(r: LocalReply): void;
  editResponse(ops: HeaderOps): void;
  note(key: string, value: string | number): void;
}

export interface Completion {
  readonly view: RequestView;
  readonly routeName: string | null;
  readonly outcome: OutcomeClass;
  /** The status the client got (HTTP, or Dubbo's byte); 0 when it got none. */
  readonly status: number;
  readonly grpcStatus: number;
  readonly durationMs: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** The endpoint of the last attempt (`host:port`), if any. */
  readonly endpoint: string | undefined;
  readonly cluster: ClusterRuntime | null;
  readonly attempts: number;
  /** Why Sluice answered itself, if it did. */
  readonly reason: string | undefined;
}

/**
 * One filter, as a worker runs it. `S` is its compiled part of a route. Only onRequest may stop
 * (and resume later); the response head and completion hooks are synchronous.
 */
export interface Filter<S = unknown> {
  readonly name: string;
  /** Runs on every request, with state null, not only on routes that configure it: its onRequest and onComplete also when no route matched. */
  readonly global?: boolean;
  /** This filter's part of a route (its config section, already validated), or null when the route does not use it. */
  compileRoute?(route: Readonly<Record<string, unknown>>, routeName: string): S | null;
  onRequest?(ctx: RequestContext, state: S): FilterStatus;
  onResponseHead?(ctx: ResponseContext, state: S): FilterStatus;
  onComplete?(c: Completion, state: S): void;
  /**
   * A connection Sluice carries as opaque bytes (TCP it does not speak, TLS it passes through):
   * there is no request in it, only who connected where. false refuses the connection before any
   * byte of it reaches an upstream. Asked of global filters only.
   */
  onConnection?(conn: ConnectionView): boolean;
}

/** What is known of a connection carried as opaque bytes: a request view without the request. */
export interface ConnectionView {
  readonly direction: Direction;
  readonly listener: string;
  readonly source: Peer;
}

/** What a filter is given when it is created (per config, per worker): nothing of sockets or protocols. */
export interface FilterEnv {
  /** The validated config: a filter with a top-level section of its own (`authorization`) reads it here. */
  readonly config: Readonly<Record<string, unknown>>;
  readonly stats: Stats;
  readonly clusters: ReadonlyMap<string, ClusterRuntime>;
  /** Uniform in [0, 1); tests pass their own. */
  readonly random: () => number;
  /** The memory every thread shares (state that must hold for the whole sidecar: rate limit buckets). */
  readonly memory?: SharedMemory;
  /** What each filter's main-thread part published with this config (FilterMain.publish), by filter name. */
  readonly data?: Readonly<Record<string, unknown>>;
}
