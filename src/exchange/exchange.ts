/**
 * One request's life, whatever its protocol.
 *
 *   Downstream (adapter) ──▶ Exchange ──▶ filters.onRequest ─▶ route target ─▶ endpoint
 *        ▲                      │                                               │
 *        │                      ├── Attempt (adapter over a pool) ◀─────────────┘
 *        │                      │     connect, per-try timeout, failure ─▶ retry or reply
 *        └── respond / write ◀──┴── response head ─▶ filters.onResponseHead ─▶ body, trailers
 *                                └─▶ finish: stats, access log, filters.onComplete
 *
 * Each protocol supplies two small adapters: its downstream side (an HTTP/1 request, an HTTP/2
 * stream, a Dubbo call: how it reads the request, writes the response, renders a local reply)
 * and its upstream side (an attempt over its pool: how it sends the request and reports the
 * answer or the failure, in the vocabulary of outcome.ts). Everything else is here, once:
 * filters, routing, the choice of an endpoint, attempts and retries, timeouts, the mapping of a
 * failure to a reply, flow control between the two sides, mirroring, stats and the access log.
 *
 * Flow control is credit: a request chunk the attempt took (write() true) is given back to the
 * client at once (Downstream.consumed, an HTTP/2 WINDOW_UPDATE), one it queued only when the
 * attempt drains (onUpstreamWritable); meanwhile the client is paused (HTTP/1 stops reading).
 * The response goes the same way the other direction. Memory stays bounded by the windows.
 *
 * Retries: the default policy tries again only where the request surely never reached an
 * upstream (no connection, a refused stream, a stale keep-alive connection for a request that
 * can be repeated), on another endpoint when there is one, at most twice more; a route's retry
 * policy (the retry filter) widens that. A request whose body was sent can be sent again only
 * while the body is kept (RETRY_BODY_BYTES), and never once its response began.
 */
import type { SluiceConfig } from '../config/config';
import { LogEvery } from '../log';
import type { AccessLog, AccessRecord } from '../stats/access-log';
import { grpcStatusIn, httpStatusOfGrpc, type ProtocolStats, type Stats } from '../stats/stats';
import type { RpcStatsCollector } from '../stats/rpc-stats';
import type { PeerStatsCollector } from '../stats/peer-stats';
import type { ClusterRuntime, ClusterStats, Endpoint } from '../upstream/cluster';
import type { UpstreamPools } from '../upstream/upstream-pools';
import type { OutboundTls } from '../tls/tls-runtime';
import { XFCC } from '../tls/xfcc';
import {
  CONTINUE, type Completion, type FilterStatus, type HeaderOps, type RequestContext, type ResponseContext, type RetryPolicy,
  type UpstreamTarget,
} from './filter';
import {
  CIRCUIT_OPEN, CLUSTER_OVERFLOW, DEGRADED, NO_HEALTHY_UPSTREAM, NO_ROUTE, classifyGrpcStatus, neverSent, replyForFailure,
  type FailureKind, type LocalReply, type OutcomeClass,
} from './outcome';
import type { RequestView } from './request-view';
import type { Route, RouteFilter, RouteTarget, Router } from './router';
import type { DiscoveryResult } from '../upstream/discovered';
import { addDeadline, clearDeadline, type DeadlineList, type Timed } from './deadlines';
import {
  PENDING, REFUSE, REQUESTS, RETRIES, UNTRACKED, type ClusterBreakers, type ClusterLimits, type Result,
} from '../protection';
import type { CompiledFallback } from '../protection/fallback';
import { copyOf } from '../net/direct-read';
// the global `performance` is a getter on every use (Node 20): 30-40 ns more per read of the clock
import { performance } from 'node:perf_hooks';

/** Request body kept for sending it again on a retry; a longer body cannot be retried once sent. */
export const RETRY_BODY_BYTES = 64 * 1024;
/** Request body held while no upstream connection is ready yet; past it the client is paused. */
const EARLY_BODY_BYTES = 64 * 1024;
/** Attempts by the default policy (the first and two more), as before retry policies existed. */
const DEFAULT_ATTEMPTS = 3;

/** What the exchange needs of the config it started under (a worker's CompiledConfig). */
export interface ExchangeEnv {
  readonly config: SluiceConfig;
  readonly stats: Stats;
  readonly router: Router;
  readonly accessLog: AccessLog;
  readonly pools: UpstreamPools;
  readonly rpcStats: RpcStatsCollector | null;
  /** Inbound requests by the caller's identity, and plaintext callers. */
  readonly peerStats?: PeerStatsCollector | null;
  protocol(p: RequestView['protocol']): ProtocolStats;
  /** Where a request with no cluster goes: the original destination, the local application, or the listener's cluster. */
  /**
   * The providers of a service a registry lists: at once when known, else undefined and `done`
   * once its first list came or the wait for it is over (src/upstream/discovered.ts).
   */
  discover?(view: RequestView, kind: 'dubbo' | 'spring', done: (r: DiscoveryResult) => void): DiscoveryResult | undefined;
  passthrough(view: RequestView): { host: string; port: number; cstats: ClusterStats; tls: OutboundTls | null } | null;
  /** mTLS origination for a cluster's endpoints (null: plaintext). */
  upstreamTls(cluster: ClusterRuntime | null, view: RequestView): OutboundTls | null;
}

/** An upstream to try: an endpoint of a cluster, or a passthrough address. */
export interface UpstreamChoice {
  readonly host: string;
  readonly port: number;
  /** `host:port`, the pool key. */
  readonly key: string;
  readonly cstats: ClusterStats;
  readonly cluster: ClusterRuntime | null;
  /** The cluster endpoint, or null for a passthrough target. */
  readonly endpoint: Endpoint | null;
  /** Leave as mTLS (src/tls/), or null for plaintext. */
  readonly tls: OutboundTls | null;
}

/** A response head as an attempt delivers it: the status, and its protocol form for the downstream side to convert. */
export interface ResponseHead {
  /** HTTP status, or the Dubbo status byte. */
  readonly status: number;
  /** The grpc-status in the head (a trailers-only response), else -1. */
  readonly grpcStatus: number;
  /** The upstream's own form of the head; the downstream side knows the forms of its family. */
  readonly form: unknown;
}

/** The client side of one exchange. */
export interface Downstream {
  readonly view: RequestView;
  /** How this request reaches an upstream (the protocol family's attempts). */
  readonly upstreams: AttemptFactory;
  /** The whole request is in (no body, or its end arrived). */
  readonly requestEnded: boolean;
  /** The request's own form, for attempts and mirrors (an HTTP/1 head, an HTTP/2 stream, a Dubbo frame). */
  readonly request: unknown;
  /** Credit for `n` request bytes an upstream took (HTTP/2: WINDOW_UPDATE). */
  consumed(n: number): void;
  /** Stop reading request body for now (HTTP/1: pause the socket); resumeRequest() undoes it. */
  pauseRequest(): void;
  resumeRequest(): void;
  /** 1xx responses to pass on, where the client's protocol has them. */
  informational?(form: unknown): void;
  respond(head: ResponseHead, end: boolean, edits: HeaderOps[] | null): void;
  /** A body chunk; false when the client is not taking more now (onDownstreamWritable follows). */
  write(chunk: Buffer, end: boolean): boolean;
  /** write() of a chunk valid during this call only (a view of a read buffer): what outlives the call is copied. */
  writeLent?(chunk: Buffer, end: boolean): boolean;
  trailers(fields: string[]): void;
  /** The response is cut off: the client must see it so (a reset stream or connection). */
  abort(): void;
  /** Answer locally, in the protocol's form; returns the status the client got (HTTP, or Dubbo's byte). */
  localReply(r: LocalReply): number;
  /**
   * The route's fallback instead of a refusal, in the protocol's form (HTTP status, headers, body; a
   * gRPC status and message; a Dubbo value returned normally); the status the client got, or
   * undefined when the fallback has nothing for this protocol (the refusal goes out as it is).
   */
  fallback?(f: CompiledFallback, reason: string): number | undefined;
  /** A 2xx direct response where the protocol has its own form for it (a Dubbo value); else undefined and localReply is used. */
  directSuccess?(status: number, body: string): number | undefined;
  /** Around one read from the upstream (start true, then false): HTTP/1 holds what it writes to the client for the turn's end. */
  batch?(start: boolean): void;
  /** An HTTP/1 upgrade the upstream accepted: the connection becomes a tunnel to `socket`. */
  upgrade?(socket: import('node:net').Socket, rest: Buffer): void;
  /** Edits every request of the connection gets (the caller's identity in x-forwarded-client-cert; src/tls/xfcc.ts). */
  readonly identityEdits?: HeaderOps | null;
  /** The connection is an inbound one of a port with mTLS on: its requests are counted by the caller's identity (src/stats/peer-stats.ts). */
  readonly countPeer?: boolean;
  /** The exchange is over (the response complete, or given up): serve the next request, free the stream. */
  done(x: Exchange): void;
  /** The response-class (1-5) and outcome of a status the client got; 0 = none. */
  statusClass(status: number): number;
  classify(status: number): OutcomeClass;
}

/** Makes attempts (and mirror copies) of a request in the protocol family of its downstream side. */
export interface AttemptFactory {
  /** An attempt, not started yet: its events may come during start(), and the sink must know it by then. */
  open(x: Exchange, to: UpstreamChoice, sink: AttemptSink): Attempt;
}

/** One try at an upstream. Events come back to the sink (the exchange, or a mirror). */
export interface Attempt {
  /** Acquire a connection and send the request head (and the end, for a request that is its head alone). */
  start(): void;
  /** A request body chunk; false when queued beyond what the upstream takes now (sink.onUpstreamWritable follows). */
  write(chunk: Buffer, end: boolean): boolean;
  /** write() of a chunk valid during this call only (a view of a read buffer): what outlives the call is copied. */
  writeLent?(chunk: Buffer, end: boolean): boolean;
  trailers(fields: string[]): void;
  /** Credit for `n` response bytes the client took. */
  consumed(n: number): void;
  pauseResponse(): void;
  resumeResponse(): void;
  /** Give up on it (the client left, a retry; `timedOut`: its time ran out): reset the stream, abandon the connection. */
  cancel(timedOut?: boolean): void;
  /** The response is complete and the exchange is done with it (the attempt may free its stream). */
  release(): void;
}

export interface AttemptSink {
  /** The attempt has a connection and sent the request head; body may follow. */
  onAttemptReady(a: Attempt): void;
  onInformational?(a: Attempt, form: unknown): void;
  onResponseHead(a: Attempt, head: ResponseHead, end: boolean): void;
  /** `lent`: the chunk is valid during this call only (a view of a read buffer); whoever keeps it copies it. */
  onResponseBody(a: Attempt, chunk: Buffer, end: boolean, lent?: boolean): void;
  onResponseTrailers(a: Attempt, fields: string[]): void;
  /** The attempt failed before its response was complete; `started`: some of the response was received. */
  onAttemptFailed(a: Attempt, kind: FailureKind, started: boolean): void;
  onUpstreamWritable(a: Attempt): void;
  onUpgrade?(a: Attempt, socket: import('node:net').Socket, rest: Buffer): void;
  /** The request went out and nothing will come back (a one-way Dubbo call). */
  onNoResponse?(a: Attempt): void;
  /** Around one read from the upstream: what it produces can go to the client in one write. */
  onBatch?(a: Attempt, start: boolean): void;
}

/** What the default policy retries: the request never reached an upstream. */
const DEFAULT_RETRY: RetryPolicy = {
  retries: DEFAULT_ATTEMPTS - 1,
  perTryTimeoutMs: 0,
  retryOn: (kind) => kind === 'connect_failed' || kind === 'dns_failed' || kind === 'refused' || kind === 'stale',
  retryOnStatus: () => false,
  backoffMs: () => 0,
  admit: () => true,
  neverSentOnly: true,
};

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

function onTryTimeout(x: Exchange): void { x.onTimeout(true); }

/**
 * A mirror: a copy of the request to another cluster. Its answer is read and dropped, and it never
 * holds the request up: it keeps at most `limit` bytes of the request (waiting for its connection,
 * or queued on a connection that does not drain) and lives at most `timeoutMs`; past either it is
 * given up (`dropped`).
 */
class Mirror implements AttemptSink {
  private attempt: Attempt | null = null;
  private ready = false;
  private held: Array<{ chunk: Buffer; end: boolean }> = [];
  private heldBytes = 0;
  private heldTrailers: string[] | null = null;
  /** Bytes the connection has not taken yet (write() said false since the last drain). */
  private backlog = 0;
  private timer: NodeJS.Timeout | null = null;
  private dead = false;

  constructor(private readonly x: Exchange, private readonly limit: number, private readonly dropped: (() => void) | undefined) {}

  /** Starts the copy with the body received so far (`early`), and the request's end if it came. */
  start(to: UpstreamChoice, early: readonly Buffer[], ended: boolean, trailers: string[] | null, timeoutMs: number): void {
    for (let i = 0; i < early.length; i++) this.hold(early[i], ended && trailers === null && i === early.length - 1);
    if (ended && trailers === null && early.length === 0 && !this.x.headOnly) this.hold(EMPTY_END, true);
    this.heldTrailers = trailers;
    this.timer = setTimeout(() => this.kill(), timeoutMs);
    this.timer.unref();
    const a = this.x.down.upstreams.open(this.x, to, this);
    this.attempt = a;
    a.start();
  }

  private hold(chunk: Buffer, end: boolean): void {
    this.held.push({ chunk, end });
    this.heldBytes += chunk.length;
    if (this.heldBytes > this.limit) this.kill();
  }

  /** A request chunk for the copy. */
  write(chunk: Buffer, end: boolean): void {
    if (this.dead) return;
    if (!this.ready) { this.hold(chunk, end); return; }
    this.push(chunk, end);
  }

  private push(chunk: Buffer, end: boolean): void {
    // a mirror that cannot keep up is given up, never waited for
    if (this.attempt!.write(chunk, end)) return;
    this.backlog += chunk.length;
    if (this.backlog > this.limit) this.kill();
  }

  trailers(fields: string[]): void {
    if (this.dead) return;
    if (!this.ready) { this.heldTrailers = fields; return; }
    this.attempt!.trailers(fields);
  }

  private kill(): void {
    if (this.dead) return;
    this.dead = true;
    this.held = [];
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.attempt?.cancel();
    this.dropped?.();
  }

  private end(): void {
    this.dead = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }

  onAttemptReady(): void {
    if (this.dead) return;
    this.ready = true;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (let i = 0; i < held.length && !this.dead; i++) this.push(held[i].chunk, held[i].end);
    if (this.heldTrailers !== null && !this.dead) this.attempt!.trailers(this.heldTrailers);
  }

  onResponseHead(a: Attempt, _h: ResponseHead, end: boolean): void { if (end) this.finish(a); }
  onResponseBody(a: Attempt, c: Buffer, end: boolean): void { a.consumed(c.length); if (end) this.finish(a); }
  onResponseTrailers(a: Attempt): void { this.finish(a); }
  onAttemptFailed(): void { this.end(); }
  onNoResponse(): void { this.end(); }
  onUpstreamWritable(): void { this.backlog = 0; }
  private finish(a: Attempt): void { this.end(); a.release(); }
}

const EMPTY_END = Buffer.alloc(0);

/** Shared by every exchange that has no request body to hold (frozen: a push would be a bug). */
const NO_BUFFERS: Buffer[] = Object.freeze([]) as unknown as Buffer[];

/**
 * The request context one filter's onRequest is given: a thin view of the exchange, with a
 * resume() bound to this filter's stop. A late second resume() from an earlier filter must not
 * let the request past a later filter that holds it now. Made only for filters that have an
 * onRequest, and nothing else is allocated per request for it.
 */
class FilterRequestContext implements RequestContext {
  private bound: (() => void) | null = null;
  constructor(private readonly x: Exchange, private readonly index: number, private readonly name: string) {}
  /** Bound: a filter may pass it on as a callback (`lookup().then(ctx.resume)`). Made on first use: most filters never stop. */
  get resume(): () => void {
    return (this.bound ??= () => this.x.resumeFilter(this.index));
  }
  get view(): RequestView { return this.x.down.view; }
  get routeName(): string | null { return this.x.route?.name ?? null; }
  get startMs(): number { return this.x.start0; }
  reply(r: LocalReply): void { this.x.filterReply(r); }
  setTarget(t: UpstreamTarget): void { this.x.upstreamTarget = t; }
  editRequest(ops: HeaderOps): void { (this.x.requestEdits ??= []).push(ops); }
  editResponse(ops: HeaderOps): void { this.x.editResponse(ops); }
  mirror(cluster: ClusterRuntime, dropped?: () => void): void { this.x.addMirror(cluster, dropped); }
  setRetryPolicy(p: RetryPolicy): void { this.x.retry = p; }
  /** A callback that throws costs the request, as onRequest throwing does, never the worker (it runs from a timer). */
  after(ms: number, fn: () => void): void {
    this.x.after(ms, () => {
      try { fn(); } catch (err) { this.x.filterFailed(err, this.name, 'after'); }
    });
  }
  note(key: string, value: string | number): void { this.x.note(key, value); }
}

/**
 * What few requests need, made on first use (Exchange.more()): circuit breakers' tickets, retry
 * state and timers, mirrors, filter timers. A request refused or answered at once, or proxied
 * with no breaker, retry or mirror, never allocates it.
 */
class Rare {
  /** The endpoint breaker of the current attempt: its slot, the ticket it gave, when the attempt began. */
  epBreakers: ClusterBreakers | null = null;
  epSlot = -1;
  epTicket = UNTRACKED;
  epStart = 0;
  /** The interface breaker of the request. */
  ifBreakers: ClusterBreakers | null = null;
  ifSlot = -1;
  ifTicket = UNTRACKED;
  /** The cluster limits this exchange holds a retry place of, until it ends. */
  retryLimits: ClusterLimits | null = null;
  /** The cluster whose retry gauge this exchange holds up while it retries. */
  retryingOn: ClusterStats | null = null;
  retriedStale = false;
  tryTimer: NodeJS.Timeout | null = null;
  retryTimer: NodeJS.Timeout | null = null;
  mirrors: Mirror[] | null = null;
  pendingMirrors: Array<{ cluster: ClusterRuntime; dropped?: () => void }> | null = null;
  timers: NodeJS.Timeout[] | null = null;
}

export class Exchange implements AttemptSink, Timed {
  readonly start0 = performance.now();
  route: Route | null = null;
  private filterIndex = 0;
  /** The current filter stopped; its resume() continues the chain. */
  private stoppedAt = -1;
  private inFilter = false;
  private resumedInFilter = false;
  /** @internal set by a filter (FilterRequestContext) */
  upstreamTarget: UpstreamTarget | null = null;
  /** @internal set by a filter (FilterRequestContext) */
  retry: RetryPolicy = DEFAULT_RETRY;
  requestEdits: HeaderOps[] | null = null;
  private responseEdits: HeaderOps[] | null = null;
  private rare: Rare | null = null;
  private notes: Record<string, string | number> | null = null;

  /** The cluster limits this exchange holds a request and a pending place of (released as the attempt ends). */
  private limits: ClusterLimits | null = null;
  private holdsRequest = false;
  private holdsPending = false;

  private attempt: Attempt | null = null;
  /** The attempt has a connection and the request head went out. */
  private attemptReady = false;
  attempts = 0;
  private choice: UpstreamChoice | null = null;
  private upstreamCounted = false;
  /** The route timeout: this exchange in the deadline list of its duration (deadlines.ts), not a Timeout of its own. */
  dlList: DeadlineList | null = null;
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;

  requestEnded: boolean;
  private reqTrailers: string[] | null = null;
  /** Request body not yet written to the current attempt. */
  private early: Buffer[] = NO_BUFFERS;
  private earlyBytes = 0;
  /** Request body written to attempts, kept for a retry while it fits RETRY_BODY_BYTES; null once it did not. */
  private sent: Buffer[] | null = NO_BUFFERS;
  private sentBytes = 0;
  private trailersSent = false;
  private owedDown = 0;
  private owedUp = 0;
  private requestPaused = false;

  responseStarted = false;
  responseEnded = false;
  finished = false;
  status = 0;
  grpcStatus = -1;
  reason: string | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /** Bytes of messages that are not bodies (a Dubbo call and its answer are frames), for stats and the log. */
  private frameIn = 0;
  private frameOut = 0;

  /** A protocol whose messages are whole frames counts them here. */
  countFrames(inBytes: number, outBytes: number): void {
    this.frameIn += inBytes;
    this.frameOut += outBytes;
  }

  constructor(readonly env: ExchangeEnv, readonly down: Downstream) {
    this.requestEnded = down.requestEnded;
  }

  get view(): RequestView { return this.down.view; }

  /** The rarely used state, made now if it was not. */
  private more(): Rare {
    return (this.rare ??= new Rare());
  }
  /** The protocol's counters, looked up once (start and finish both need them). */
  private ps: ProtocolStats | null = null;
  private get pstats(): ProtocolStats { return (this.ps ??= this.env.protocol(this.down.view.protocol)); }

  // ── request filters ────────────────────────────────────────────────────────

  start(): void {
    const { stats } = this.env;
    const ps = this.pstats;
    stats.inc(ps.rqTotal);
    const route = this.env.router.resolve(this.down.view);
    this.route = route;
    this.chained = true;
    // the caller's identity (set), or only the removal of a forged one: a request without the
    // header needs no removal, and no re-encoding for it (a Dubbo frame is rebuilt for an edit)
    const id = this.down.identityEdits;
    if (id && (id.set.length > 0 || this.down.view.header(XFCC) !== undefined)) this.requestEdits = [id];
    this.starting = true;
    try { this.runFilters(); } finally { this.starting = false; }
    // active past its start: a request answered within it (a refusal) never shows in the gauge
    if (!this.finished) { stats.inc(ps.rqActive); this.countedActive = true; }
  }

  /**
   * Inside start() (or refuse()): what runs now runs in the tick the exchange began, so an
   * exchange that finishes now took no time worth a second read of the clock.
   */
  private starting = false;
  /** rqActive counts this exchange (it outlived its start). */
  private countedActive = false;

  /** A request refused before routing and filters (a target that cannot be made canonical, CONNECT): counted, answered. */
  refuse(r: LocalReply): void {
    const { stats } = this.env;
    const ps = this.pstats;
    stats.inc(ps.rqTotal);
    if (r.reason === 'bad_request') stats.inc(ps.protocolError);
    this.starting = true;
    try { this.localReply(r); } finally { this.starting = false; }
  }

  /** The request met the filter chain (start(), not refuse()): its filters hear of its completion. */
  private chained = false;

  private get filters(): readonly RouteFilter[] {
    return this.route ? this.route.filters : this.env.router.globalFilters;
  }

  private runFilters(): void {
    const fs = this.filters;
    while (this.filterIndex < fs.length) {
      if (this.finished) return;
      const f = fs[this.filterIndex];
      if (f.filter.onRequest) {
        this.inFilter = true;
        this.resumedInFilter = false;
        let status: FilterStatus;
        try {
          status = f.filter.onRequest(new FilterRequestContext(this, this.filterIndex, f.filter.name), f.state);
        } catch (err) {
          this.inFilter = false;
          this.filterFailed(err, f.filter.name, 'onRequest');
          return;
        } finally {
          this.inFilter = false;
        }
        if (this.finished) return;
        if (status !== CONTINUE && !this.resumedInFilter) { this.stoppedAt = this.filterIndex; return; }
      }
      this.filterIndex++;
    }
    if (!this.finished) this.forward();
  }

  /** @internal The resume() of filter `index` (FilterRequestContext): it continues that filter's stop and no other. */
  resumeFilter(index: number): void {
    if (this.finished || index !== this.filterIndex) return; // an earlier filter's late resume: the chain moved on
    if (this.inFilter) { this.resumedInFilter = true; return; }
    if (this.stoppedAt !== index) return; // not stopped, or a second resume()
    this.stoppedAt = -1;
    this.filterIndex++;
    this.runFilters();
  }

  // ── what a filter's context does (FilterRequestContext, responseContext) ─────────

  /** @internal */
  filterReply(r: LocalReply): void {
    if (!this.finished && !this.responseStarted) this.localReply(r);
  }

  /** @internal */
  editResponse(ops: HeaderOps): void {
    (this.responseEdits ??= []).push(ops);
  }

  /** @internal `fn` after `ms`, unless the request has finished by then. */
  after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => { if (!this.finished) fn(); }, ms);
    (this.more().timers ??= []).push(timer);
  }

  /** @internal A field for the access log line (nothing to keep when there is no log). */
  note(k: string, v: string | number): void {
    if (this.env.accessLog.enabled) (this.notes ??= {})[k] = v;
  }

  // ── routing and attempts ───────────────────────────────────────────────────

  private forward(): void {
    const route = this.route;
    if (!route) { this.localReply(NO_ROUTE); return; }
    // an alarm's action degraded the route (src/alarms/overrides.ts): one load, only on routes an alarm names
    if (route.degradedAt !== undefined && route.degradedAt >= 0 && Atomics.load(route.overrides!, route.degradedAt) !== 0) { this.localReply(DEGRADED); return; }
    const t = route.target;
    if (t.kind === 'direct') {
      this.reason = 'direct_response';
      if (t.status >= 200 && t.status < 300 && this.down.directSuccess) {
        const s = this.down.directSuccess(t.status, t.body);
        if (s !== undefined) { this.status = s; this.responseStarted = true; this.finish(); return; }
      }
      this.localReply(t.reply);
      return;
    }
    this.forwarded = true;
    // like Envoy's route timeout: from the end of the request, so a slow upload is not an upstream timeout
    if (this.requestEnded) this.armRouteTimer();
    if (!this.upstreamTarget && t.kind === 'discover' && this.env.discover) {
      const found = this.env.discover(this.down.view, t.service, (r) => { if (!this.finished) this.discovered(t, r); });
      // held until the service's first list comes (bounded by registry.firstListTimeoutMs)
      if (found !== undefined) this.discovered(t, found);
      return;
    }
    if (!this.upstreamTarget) this.upstreamTarget = t.target;
    this.startMirrors();
    this.tryUpstream(undefined);
  }

  /** Where a request to a service a registry may list goes: its providers, else the route's fallback. */
  private discovered(t: Extract<RouteTarget, { kind: 'discover' }>, r: DiscoveryResult): void {
    if ('cluster' in r) {
      this.upstreamTarget = { kind: 'cluster', cluster: r.cluster, subset: r.subset };
    } else if (t.fallback === 'passthrough' || r.miss === 'not_a_service') {
      // captured: where the application sent it, as without a registry; an explicit listener: no route
      if (t.fallback !== 'passthrough') { this.localReply(NO_ROUTE); return; }
      (this.notes ??= {}).registry = r.miss;
      this.upstreamTarget = t.target;
    } else {
      (this.notes ??= {}).registry = r.miss;
      this.localReply({ status: 503, reason: r.miss === 'timeout' ? 'registry_timeout' : r.miss === 'full' ? 'registry_full' : 'no_healthy_upstream', body: `${r.detail}\n` });
      return;
    }
    this.startMirrors();
    this.tryUpstream(undefined);
  }

  /** The filters let the request go (forward() ran): the route's timeout may run from the request's end. */
  private forwarded = false;

  private armRouteTimer(): void {
    if (this.dlList !== null || this.finished || !this.route) return;
    // armed within start() (a request without a body that no filter held): its start is now, and the clock need not be read again
    addDeadline(this, this.route.timeoutMs, this.starting ? this.start0 : performance.now());
  }

  /** Where the next attempt goes: an endpoint of the target's cluster (avoiding `avoid` when there is a choice), or passthrough. */
  private choose(avoid: Endpoint | undefined): UpstreamChoice | LocalReply {
    const t = this.upstreamTarget!;
    if (t.kind === 'cluster' && t.cluster) {
      let ep: Endpoint | null | undefined = t.cluster.pick(t.subset, avoid);
      if (!ep) return NO_HEALTHY_UPSTREAM;
      const eb = t.cluster.protection?.endpoint;
      if (eb) {
        ep = this.passBreaker(eb, t.cluster.subsetEndpoints(t.subset), ep);
        if (!ep) return CIRCUIT_OPEN;
      }
      return { host: ep.host, port: ep.port, key: ep.key, cstats: t.cluster.stats, cluster: t.cluster, endpoint: ep, tls: this.env.upstreamTls(t.cluster, this.down.view) };
    }
    const p = this.env.passthrough(this.down.view);
    if (!p) return NO_ROUTE;
    return { host: p.host, port: p.port, key: `${p.host}:${p.port}`, cstats: p.cstats, cluster: null, endpoint: null, tls: p.tls };
  }

  /**
   * The endpoint to use given its breaker: `picked` if its breaker lets the call through, else
   * another of `eps` whose breaker does; null when every one is open. In shadow mode the call goes
   * to `picked` whatever the breakers say, and is counted as refused only where enforcing would
   * have refused it (every endpoint open).
   */
  private passBreaker(eb: ClusterBreakers, eps: readonly Endpoint[], picked: Endpoint): Endpoint | null {
    let s = eb.slotOf(picked.key);
    let ticket = eb.admit(s);
    let ep: Endpoint | null = picked;
    if (ticket === REFUSE) {
      ep = null;
      const n = eps.length;
      const from = n > 1 ? Math.floor(Math.random() * n) : 0;
      for (let i = 0; i < n && ep === null; i++) {
        const e = eps[(from + i) % n];
        if (e === picked) continue;
        const es = eb.slotOf(e.key);
        const et = eb.admit(es);
        if (et !== REFUSE) { ep = e; s = es; ticket = et; }
      }
      if (eb.shadow) {
        // shadow: the call goes where it would have gone without breakers, untracked
        if (ep !== null) eb.record(s, ticket, 'neutral', 0, ep.key);
        else eb.refused(eb.slotOf(picked.key), picked.key);
        ep = picked;
        s = eb.slotOf(picked.key);
        ticket = UNTRACKED;
      } else if (ep === null) {
        eb.refused(eb.slotOf(picked.key), picked.key);
        return null;
      }
    }
    const r = this.more();
    r.epBreakers = eb;
    r.epSlot = s;
    r.epTicket = ticket;
    r.epStart = performance.now();
    return ep;
  }

  /** The current attempt is over (`result` for its endpoint's breaker): what it held of the cluster's limits goes back. */
  private settleAttempt(result: Result): void {
    const lim = this.limits;
    if (lim !== null) {
      if (this.holdsPending) { this.holdsPending = false; lim.release(PENDING); }
      if (this.holdsRequest) { this.holdsRequest = false; lim.release(REQUESTS); }
      this.limits = null;
    }
    const r = this.rare;
    if (r !== null && r.epBreakers !== null) {
      const eb = r.epBreakers;
      r.epBreakers = null;
      eb.record(r.epSlot, r.epTicket, result, performance.now() - r.epStart, this.choice?.key ?? '');
    }
  }

  /** A request to a cluster passes its interface breaker (first attempt only) and takes a place under its limits; false: refused (answered). */
  private admitToCluster(t: UpstreamTarget): boolean {
    const p = t.cluster?.protection;
    if (!p) return true;
    if (p.forcedOpenAt >= 0 && Atomics.load(p.overrides!, p.forcedOpenAt) !== 0) { this.note('breaker', 'forced_open'); this.localReply(CIRCUIT_OPEN); return false; }
    if (p.iface !== null && (this.rare === null || this.rare.ifBreakers === null) && this.attempts === 0) {
      const v = this.down.view;
      const target = v.protocol === 'http1' || v.protocol === 'http2' ? `${v.service} ${v.path}` : `${v.service} ${v.method}`;
      const s = p.iface.slotOf(target);
      let ticket = p.iface.admit(s);
      if (ticket === REFUSE) ticket = p.iface.refused(s, target);
      if (ticket === REFUSE) { this.localReply(CIRCUIT_OPEN); return false; }
      const r = this.more();
      r.ifBreakers = p.iface;
      r.ifSlot = s;
      r.ifTicket = ticket;
    }
    const lim = p.limits;
    if (!lim.acquire(REQUESTS)) { this.localReply(CLUSTER_OVERFLOW); return false; }
    if (!lim.acquire(PENDING)) { lim.release(REQUESTS); this.localReply(CLUSTER_OVERFLOW); return false; }
    this.limits = lim;
    this.holdsRequest = true;
    this.holdsPending = true;
    return true;
  }

  private tryUpstream(avoid: Endpoint | undefined): void {
    if (this.finished) return;
    const t = this.upstreamTarget!;
    if (t.kind === 'cluster' && !this.admitToCluster(t)) return;
    const choice = this.choose(avoid);
    if ((choice as LocalReply).reason !== undefined) { this.localReply(choice as LocalReply); return; }
    const c = choice as UpstreamChoice;
    this.choice = c;
    this.attempts++;
    this.attemptReady = false;
    if (this.retry.perTryTimeoutMs > 0) {
      const r = this.more();
      if (r.tryTimer) clearTimeout(r.tryTimer);
      r.tryTimer = setTimeout(onTryTimeout, this.retry.perTryTimeoutMs, this);
    }
    const a = this.down.upstreams.open(this, c, this);
    this.attempt = a;
    a.start();
  }

  onNoResponse(a: Attempt): void {
    if (a !== this.attempt || this.finished) return;
    this.oneWay = true;
    this.responseStarted = true;
    this.responseDone();
  }

  onBatch(a: Attempt, start: boolean): void {
    // the end of a batch goes through even when the exchange finished inside it: the protocol may hold writes until it
    if (start) {
      if (a !== this.attempt || this.finished || this.batching) return;
      this.batching = true;
      this.down.batch?.(true);
    } else if (this.batching) {
      this.batching = false;
      this.down.batch?.(false);
    }
  }

  private batching = false;

  /** The request head alone is the whole request: an attempt sends it with the end (no body, no trailers). */
  get headOnly(): boolean {
    return this.requestEnded && this.bytesIn === 0 && this.reqTrailers === null;
  }

  onAttemptReady(a: Attempt): void {
    if (a !== this.attempt || this.finished) return;
    this.attemptReady = true;
    if (this.holdsPending) { this.holdsPending = false; this.limits!.release(PENDING); }
    this.countUpstream();
    if (this.headOnly) return;
    // what an earlier attempt was sent goes again first (kept whole, or a retry was not allowed), then what waited
    let ended = false;
    const sent = this.wrote ? this.sent : null;
    const early = this.early;
    this.early = NO_BUFFERS;
    const n = this.earlyBytes;
    this.earlyBytes = 0;
    if (sent) {
      const last = early.length === 0 && this.requestEnded && this.reqTrailers === null;
      for (let i = 0; i < sent.length; i++) a.write(sent[i], last && i === sent.length - 1);
      ended = last && sent.length > 0;
    }
    this.wrote = true;
    const endBody = this.requestEnded && this.reqTrailers === null;
    for (let i = 0; i < early.length; i++) this.writeUp(early[i], endBody && i === early.length - 1);
    if (early.length > 0) ended = endBody;
    if (endBody && !ended) this.writeUp(EMPTY_END, true);
    if (this.reqTrailers !== null) { this.trailersSent = true; a.trailers(this.reqTrailers); }
    if (n > 0 && this.requestPaused && this.owedDown === 0) { this.requestPaused = false; this.down.resumeRequest(); }
  }

  /** Some of the request body (or its trailers) went to an attempt. */
  private wrote = false;

  private countUpstream(): void {
    const c = this.choice!;
    this.upstreamCounted = true;
    const { stats } = this.env;
    stats.inc(c.cstats.rqTotal);
    stats.inc(c.cstats.rqActive);
    if (c.endpoint) c.endpoint.active++;
  }

  private uncountUpstream(): void {
    if (!this.upstreamCounted) return;
    this.upstreamCounted = false;
    const c = this.choice!;
    this.env.stats.dec(c.cstats.rqActive);
    if (c.endpoint) c.endpoint.active--;
  }

  /**
   * One request chunk to the current attempt. It is kept for a retry while the body fits
   * RETRY_BODY_BYTES and the policy may send a request again after it went out.
   */
  private writeUp(chunk: Buffer, end: boolean, lent = false): void {
    const a = this.attempt!;
    this.wrote = true;
    if (this.sent !== null && chunk.length > 0) {
      if (!this.retry.neverSentOnly && this.sentBytes + chunk.length <= RETRY_BODY_BYTES) {
        if (lent) { chunk = copyOf(chunk); lent = false; }
        if (this.sent === NO_BUFFERS) this.sent = [];
        this.sent.push(chunk);
        this.sentBytes += chunk.length;
      } else {
        this.sent = null;
      }
    }
    const ok = !lent ? a.write(chunk, end) : a.writeLent ? a.writeLent(chunk, end) : a.write(copyOf(chunk), end);
    if (ok) { if (chunk.length > 0) this.down.consumed(chunk.length); return; }
    this.owedDown += chunk.length;
    if (!this.requestPaused) { this.requestPaused = true; this.down.pauseRequest(); }
  }

  // ── the request body ───────────────────────────────────────────────────────

  /**
   * `lent`: the chunk is valid during this call only (a view of the worker's read buffer); it is
   * copied where it is kept (a mirror, the body that waits for a connection, a retry's copy) or
   * where the upstream cannot take it at once.
   */
  onRequestBody(chunk: Buffer, end: boolean, lent = false): void {
    this.bytesIn += chunk.length;
    if (end) this.requestEnded = true;
    const mirrors = this.rare?.mirrors;
    if (lent && mirrors) { chunk = copyOf(chunk); lent = false; }
    if (mirrors) for (let i = 0; i < mirrors.length; i++) mirrors[i].write(chunk, end);
    if (this.finished || this.responseEnded) {
      // answered already: nobody takes the rest
      this.down.consumed(chunk.length);
      return;
    }
    if (this.attempt === null || !this.attemptReady) {
      if (chunk.length > 0) {
        if (this.early === NO_BUFFERS) this.early = [];
        this.early.push(lent ? copyOf(chunk) : chunk);
      }
      this.earlyBytes += chunk.length;
      if (this.earlyBytes > EARLY_BODY_BYTES && !this.requestPaused) { this.requestPaused = true; this.down.pauseRequest(); }
      if (end) this.requestEndedNow();
      return;
    }
    this.writeUp(chunk, end, lent);
    if (end) this.requestEndedNow();
  }

  onRequestTrailers(fields: string[]): void {
    this.requestEnded = true;
    this.reqTrailers = fields;
    const mirrors = this.rare?.mirrors;
    if (mirrors) for (let i = 0; i < mirrors.length; i++) mirrors[i].trailers(fields);
    if (this.finished || this.responseEnded) return;
    if (this.attempt !== null && this.attemptReady) {
      this.wrote = true;
      this.trailersSent = true;
      this.attempt.trailers(fields);
    }
    this.requestEndedNow();
  }

  /** The request's end arrived with its head (no body), or now. */
  onRequestEnd(): void {
    if (this.requestEnded) return;
    this.onRequestBody(EMPTY_END, true);
  }

  private requestEndedNow(): void {
    this.requestEnded = true;
    // not while a filter still holds the request: one may have set the target before another stopped it
    if (this.forwarded) this.armRouteTimer();
  }

  onUpstreamWritable(a: Attempt): void {
    if (a !== this.attempt) return;
    const n = this.owedDown;
    this.owedDown = 0;
    if (n > 0 && !this.finished) this.down.consumed(n);
    if (this.requestPaused) { this.requestPaused = false; this.down.resumeRequest(); }
  }

  onDownstreamWritable(): void {
    const a = this.attempt;
    if (a === null) return;
    const n = this.owedUp;
    this.owedUp = 0;
    if (n > 0) a.consumed(n);
    a.resumeResponse();
  }

  /** The client went away (its stream reset, its connection closed). */
  onDownstreamGone(): void {
    if (this.finished) return;
    this.dropAttempt();
    this.reason ??= this.responseStarted ? undefined : 'downstream_gone';
    this.finish();
  }

  // ── the response ───────────────────────────────────────────────────────────

  onInformational(a: Attempt, form: unknown): void {
    if (a === this.attempt && !this.finished) this.down.informational?.(form);
  }

  onResponseHead(a: Attempt, head: ResponseHead, end: boolean): void {
    if (a !== this.attempt || this.finished) return;
    // an answer the retry policy tries again (a 503, a gRPC UNAVAILABLE in a trailers-only response)
    if (this.retry.retryOnStatus(head.status, head.grpcStatus) && this.mayRetry('status', false)) {
      this.attempt = null;
      this.uncountUpstream();
      a.cancel();
      const cls = head.grpcStatus >= 0 ? classifyGrpcStatus(head.grpcStatus) : this.down.classify(head.status);
      this.settleAttempt(cls === 'upstream_error' ? 'failure' : 'success');
      this.scheduleRetry(this.choice?.endpoint ?? undefined);
      return;
    }
    const route = this.route;
    if (route) {
      const fs = route.filters;
      for (let i = 0; i < fs.length; i++) {
        const f = fs[i];
        if (!f.filter.onResponseHead) continue;
        const rc = this.responseContext(head);
        try {
          f.filter.onResponseHead(rc, f.state);
        } catch (err) {
          this.filterFailed(err, f.filter.name, 'onResponseHead');
        }
        if (this.finished || this.responseStarted) { a.cancel(); return; } // replaced by a local reply
      }
    }
    const r = this.rare;
    if (r !== null && r.tryTimer) { clearTimeout(r.tryTimer); r.tryTimer = null; }
    this.status = head.status;
    if (head.grpcStatus >= 0) this.grpcStatus = head.grpcStatus;
    this.responseStarted = true;
    this.upstreamAnswered = true;
    this.down.respond(head, end, this.responseEdits);
    if (end) this.responseDone();
  }

  private responseContext(head: ResponseHead): ResponseContext {
    const x = this;
    return {
      view: this.down.view,
      routeName: this.route?.name ?? null,
      status: head.status,
      grpcStatus: head.grpcStatus,
      outcome: head.grpcStatus >= 0 ? classifyGrpcStatus(head.grpcStatus) : this.down.classify(head.status),
      reply: (r) => { if (!x.finished && !x.responseStarted) { x.dropAttempt(); x.localReply(r); } },
      editResponse: (ops) => x.editResponse(ops),
      note: (k, v) => x.note(k, v),
    };
  }

  onResponseBody(a: Attempt, chunk: Buffer, end: boolean, lent = false): void {
    if (a !== this.attempt || this.finished) return;
    this.bytesOut += chunk.length;
    const down = this.down;
    const ok = !lent ? down.write(chunk, end) : down.writeLent ? down.writeLent(chunk, end) : down.write(copyOf(chunk), end);
    if (ok) a.consumed(chunk.length);
    else { this.owedUp += chunk.length; a.pauseResponse(); }
    if (end) this.responseDone();
  }

  onResponseTrailers(a: Attempt, fields: string[]): void {
    if (a !== this.attempt || this.finished) return;
    const g = grpcStatusIn(fields);
    if (g >= 0) this.grpcStatus = g;
    this.down.trailers(fields);
    this.responseDone();
  }

  onUpgrade(a: Attempt, socket: import('node:net').Socket, rest: Buffer): void {
    if (a !== this.attempt || this.finished) { socket.destroy(); return; }
    this.attempt = null;
    this.responseEnded = true;
    // the connection is the tunnel's before the exchange is counted done (its done() must not serve a next request)
    this.down.upgrade!(socket, rest);
    this.finish();
  }

  private responseDone(): void {
    this.responseEnded = true;
    this.finish();
  }

  // ── failures, retries, timeouts ────────────────────────────────────────────

  onAttemptFailed(a: Attempt, kind: FailureKind, started: boolean): void {
    if (a !== this.attempt || this.finished) return;
    const c = this.choice!;
    this.attempt = null;
    this.uncountUpstream();
    this.settleAttempt(failureResult(kind));
    if (!this.responseStarted) {
      if (this.mayRetry(kind, started)) {
        // a failed connection is tried elsewhere when the cluster has another endpoint; a refused stream may go to the same one
        const avoid = kind === 'connect_failed' || kind === 'dns_failed' ? c.endpoint ?? undefined : kind === 'refused' || kind === 'stale' ? undefined : c.endpoint ?? undefined;
        this.scheduleRetry(avoid);
        return;
      }
      this.countFailure(kind, c);
      this.localReply(replyForFailure(kind));
      return;
    }
    // the response is partly sent: the client must see it cut off, never a clean end
    this.countFailure(kind === 'timeout' ? 'timeout' : 'reset', c);
    this.reason = kind === 'timeout' ? 'upstream_timeout' : 'upstream_reset';
    this.down.abort();
    this.finish();
  }

  private countFailure(kind: FailureKind, c: UpstreamChoice): void {
    const { stats } = this.env;
    if (kind === 'timeout') stats.inc(c.cstats.rqTimeout);
    else if (kind === 'reset' || kind === 'stale' || kind === 'refused' || kind === 'protocol_error') stats.inc(c.cstats.rqReset);
  }

  /**
   * Whether another attempt may follow this failure: never once the response began, within
   * the policy's count, only to a cluster, and only if the request can be sent again whole
   * (nothing of its body went out, or all of it was kept).
   */
  private mayRetry(kind: FailureKind | 'status', started: boolean): boolean {
    const p = this.retry;
    if (started || this.responseStarted || kind === 'overflow') return false;
    const t = this.upstreamTarget;
    if (!t || t.kind !== 'cluster' || !t.cluster) return false;
    if (this.wrote && this.sent === null) return false;
    if (kind === 'stale') {
      // a keep-alive connection the upstream closed as we sent: once, for a request that can be repeated
      if (this.rare?.retriedStale || this.wrote || !IDEMPOTENT.has(this.down.view.method)) return false;
      this.more().retriedStale = true;
      return true;
    }
    if (this.attempts > p.retries) return false;
    // an answer's status was judged by the policy already (retryOnStatus: repeatable requests only)
    if (kind !== 'status') {
      if (!p.retryOn(kind)) return false;
      if (p.neverSentOnly && !neverSent(kind)) return false;
    }
    // the default policy tries a failed connection again only on another endpoint
    if ((kind === 'connect_failed' || kind === 'dns_failed') && p === DEFAULT_RETRY && t.cluster.subsetEndpoints(t.subset).length <= 1) return false;
    if (!p.admit(t.cluster)) return false;
    // the cluster's retries in flight (maxRetries): one place for the rest of this exchange
    const lim = t.cluster.protection?.limits;
    if (!lim || (this.rare !== null && this.rare.retryLimits !== null)) return true;
    if (!lim.acquire(RETRIES)) return false;
    this.more().retryLimits = lim;
    return true;
  }


  private scheduleRetry(avoid: Endpoint | undefined): void {
    const r = this.more();
    if (r.tryTimer) { clearTimeout(r.tryTimer); r.tryTimer = null; }
    // what the failed attempt owed the client is given back: the body it took is kept in `sent`
    if (this.owedDown > 0) { this.down.consumed(this.owedDown); this.owedDown = 0; }
    this.attemptReady = false;
    this.trailersSent = false;
    const delay = this.retry.backoffMs(this.attempts + 1);
    const c = this.choice;
    if (c) {
      this.env.stats.inc(c.cstats.rqRetry);
      if (r.retryingOn === null) { r.retryingOn = c.cstats; this.env.stats.inc(c.cstats.rqRetryActive); }
    }
    if (delay <= 0) { this.tryUpstream(avoid); return; }
    r.retryTimer = setTimeout(() => { r.retryTimer = null; this.tryUpstream(avoid); }, delay);
  }


  /** The route's deadline (deadlines.ts). */
  onDeadline(): void { this.onTimeout(false); }

  /** The route's time ran out (`perTry`: only this attempt's). */
  onTimeout(perTry: boolean): void {
    if (perTry && this.rare !== null) this.rare.tryTimer = null;
    if (this.finished) return;
    const a = this.attempt;
    if (perTry && a !== null && !this.responseStarted) {
      // the attempt is given up; the policy may try another
      this.attempt = null;
      this.uncountUpstream();
      a.cancel(true);
      this.settleAttempt('failure');
      if (this.mayRetry('timeout', false)) { this.scheduleRetry(this.choice?.endpoint ?? undefined); return; }
      if (this.choice) this.env.stats.inc(this.choice.cstats.rqTimeout);
      this.localReply(replyForFailure('timeout'));
      return;
    }
    if (perTry) return; // the response began: the route's own timeout still bounds it
    if (this.choice) this.env.stats.inc(this.choice.cstats.rqTimeout);
    if (this.attempt !== null) this.settleAttempt('failure');
    this.timedOut = true;
    this.dropAttempt(true);
    if (!this.responseStarted) { this.localReply(replyForFailure('timeout')); return; }
    this.reason = 'upstream_timeout';
    this.down.abort();
    this.finish();
  }

  /** The attempt (if any) is given up. */
  private dropAttempt(timedOut = false): void {
    const r = this.rare;
    if (r !== null && r.retryTimer) { clearTimeout(r.retryTimer); r.retryTimer = null; }
    const a = this.attempt;
    this.attempt = null;
    this.uncountUpstream();
    a?.cancel(timedOut);
    this.settleAttempt('neutral');
    this.early = NO_BUFFERS;
    this.earlyBytes = 0;
  }

  /**
   * @internal A filter threw (a bug of ours): logged, and it costs this request alone. Before the
   * response began the client gets a 500 `internal_error` (the attempt, if any, is given up) and the
   * exchange ends as any other: counted, completed, logged. Once the response began it goes on.
   * The adapter that called the exchange, or the timer or callback that resumed the chain, never
   * sees the exception: an HTTP/2 stream reset by its adapter would leave the exchange unfinished,
   * a Dubbo adapter would drop every call of the connection, and a timer would lose the worker.
   */
  filterFailed(err: unknown, filter: string, hook: string): void {
    filterError(err, filter, hook);
    if (!this.finished && !this.responseStarted) this.localReply(FILTER_FAILED);
  }

  /** Answer locally (once), in the downstream's protocol form. */
  localReply(r: LocalReply): void {
    if (this.finished) return;
    this.dropAttempt();
    if (r.reason === 'no_route') this.env.stats.inc(this.pstats.noRoute);
    this.reason = r.reason;
    this.responseStarted = true;
    const fb = this.route?.fallback;
    if (fb && fb.on.has(r.reason) && this.down.fallback) {
      const s = this.down.fallback(fb, r.reason);
      if (s !== undefined) {
        this.status = s;
        if (this.down.view.protocol === 'grpc' && fb.grpc) this.grpcStatus = fb.grpc.status;
        this.env.stats.inc(fb.slot(this.env.stats, this.route!.name, r.reason));
        this.note('fallback', r.reason);
        this.responseEnded = true;
        this.finish();
        return;
      }
    }
    if (r.grpcStatus !== undefined) this.grpcStatus = r.grpcStatus;
    this.status = this.down.localReply(r);
    this.responseEnded = true;
    this.finish();
  }

  // ── the end ────────────────────────────────────────────────────────────────

  private timedOut = false;
  /** The response came from an upstream (not Sluice's own). */
  private upstreamAnswered = false;

  /** The exchange is over: everything is counted once, here. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.dlList !== null) clearDeadline(this);
    const rare = this.rare;
    if (rare !== null) {
      if (rare.tryTimer) { clearTimeout(rare.tryTimer); rare.tryTimer = null; }
      if (rare.retryTimer) { clearTimeout(rare.retryTimer); rare.retryTimer = null; }
      if (rare.timers) { for (const t of rare.timers) clearTimeout(t); rare.timers = null; }
    }
    const a = this.attempt;
    if (a !== null) {
      this.attempt = null;
      if (this.responseEnded) a.release(); else a.cancel();
    }
    this.early = NO_BUFFERS;
    const n = this.earlyBytes + this.owedDown;
    this.earlyBytes = 0;
    this.owedDown = 0;
    if (n > 0) this.down.consumed(n);
    const { stats } = this.env;
    const view = this.down.view;
    const ps = this.pstats;
    if (this.countedActive) { this.countedActive = false; stats.dec(ps.rqActive); }
    if (rare !== null && rare.retryingOn !== null) { stats.dec(rare.retryingOn.rqRetryActive); rare.retryingOn = null; }
    // a response the upstream (or its timeout) cut off is a reset or a timeout, not also a 2xx
    const cut = this.responseStarted && !this.responseEnded && (this.reason === 'upstream_reset' || this.reason === 'upstream_timeout');
    let status = this.status;
    let outcome: OutcomeClass;
    if (view.protocol === 'grpc' && !cut) {
      // by the grpc-status the client got: the upstream's, ours for a local reply or an answer
      // without one (gRPC's HTTP mapping), CANCELLED when the client left before the end
      const code = this.grpcStatus >= 0 ? this.grpcStatus : this.responseEnded ? grpcOfHttp(status) : 1;
      stats.grpcStatus(code);
      status = httpStatusOfGrpc(code);
      outcome = classifyGrpcStatus(code);
    } else {
      outcome = this.outcome(cut);
    }
    // Sluice answered itself, cut the answer off, or the client left first: the reason says which class
    if (this.reason !== undefined) {
      outcome = isLocalOrigin(this.reason) ? 'local_origin_error' : this.reason === 'downstream_gone' ? 'cancelled' : 'local';
    }
    const cls = cut ? 0 : this.down.statusClass(status);
    if (cls) {
      stats.inc(ps.rqClass[cls]);
      // the upstream's answer, by the same class the client's counts it in
      if (this.upstreamAnswered && this.choice) stats.inc(this.choice.cstats.rqClass[cls]);
    }
    // finished in the call that began it (a local reply): its time is that of a few calls, under any bucket
    const seconds = this.starting ? 0 : (performance.now() - this.start0) / 1000;
    stats.requestDone(view.protocol, seconds, this.bytesIn + this.frameIn, this.bytesOut + this.frameOut);
    this.uncountUpstream();
    // what the breakers learn: the last attempt's answer for its endpoint, the request's for its interface
    const judged = breakerResult(outcome, this.reason, this.upstreamAnswered);
    this.settleAttempt(rare !== null && rare.epBreakers !== null && this.upstreamAnswered ? judged : 'neutral');
    if (rare !== null) {
      if (rare.retryLimits !== null) { rare.retryLimits.release(RETRIES); rare.retryLimits = null; }
      if (rare.ifBreakers !== null) {
        const ib = rare.ifBreakers;
        rare.ifBreakers = null;
        ib.record(rare.ifSlot, rare.ifTicket, judged, seconds * 1000, '');
      }
    }
    if (this.down.countPeer) this.env.peerStats?.request(view.listener, view.source.principal, view.source.address);
    if (view.protocol === 'dubbo') this.env.rpcStats?.record(view.service, view.method, this.oneWay ? 'oneway' : this.status, seconds);
    // the chain the request met: its route's, or the global filters when no route matched
    if (this.chained) {
      const fs = this.filters;
      let completion: Completion | null = null;
      for (let i = 0; i < fs.length; i++) {
        const f = fs[i];
        if (!f.filter.onComplete) continue;
        completion ??= this.completion(outcome, seconds);
        try {
          f.filter.onComplete(completion, f.state);
        } catch (err) {
          // the request is answered and counted: only the rest of the end (log, done) must still happen
          filterError(err, f.filter.name, 'onComplete');
        }
      }
    }
    if (this.env.accessLog.enabled) this.log(seconds);
    this.down.done(this);
  }

  /** Dubbo one-way calls get no answer: their stats say so. */
  oneWay = false;

  private outcome(cut: boolean): OutcomeClass {
    if (cut) return 'local_origin_error';
    if (!this.responseStarted) return 'cancelled';
    return this.down.classify(this.status);
  }

  private completion(outcome: OutcomeClass, seconds: number): Completion {
    const c = this.choice;
    return {
      view: this.down.view,
      routeName: this.route?.name ?? null,
      outcome,
      status: this.status,
      grpcStatus: this.grpcStatus,
      durationMs: seconds * 1000,
      bytesIn: this.bytesIn + this.frameIn,
      bytesOut: this.bytesOut + this.frameOut,
      endpoint: c?.key,
      cluster: c?.cluster ?? null,
      attempts: this.attempts,
      reason: this.reason,
    };
  }

  private log(seconds: number): void {
    const v = this.down.view;
    const rec: AccessRecord = {
      protocol: v.protocol, direction: v.direction, listener: v.listener, method: v.method, path: v.path, service: v.service,
      status: this.status, reason: this.reason === 'downstream_gone' ? undefined : this.reason, route: this.route?.name,
      upstream: this.choice?.key, bytesIn: this.bytesIn + this.frameIn, bytesOut: this.bytesOut + this.frameOut,
      durationMs: Math.round(seconds * 1e6) / 1000, source: v.source.address,
    };
    if (v.source.principal !== undefined) rec.principal = v.source.principal;
    if (this.attempts > 1) rec.attempts = this.attempts;
    if (this.notes) Object.assign(rec, this.notes);
    this.env.accessLog.write(rec);
  }

  // ── mirrors ────────────────────────────────────────────────────────────────


  /** @internal */
  addMirror(cluster: ClusterRuntime, dropped?: () => void): void {
    (this.more().pendingMirrors ??= []).push({ cluster, dropped });
  }

  /** The copies the filters asked for start with the request itself, with the body received so far. */
  private startMirrors(): void {
    const r = this.rare;
    const list = r?.pendingMirrors;
    if (!r || !list) return;
    r.pendingMirrors = null;
    const timeoutMs = this.route?.timeoutMs ?? this.env.config.http.requestTimeoutMs;
    for (const { cluster, dropped } of list) {
      const ep = cluster.pick('');
      if (!ep) { dropped?.(); continue; }
      const m = new Mirror(this, MIRROR_BUFFER_BYTES, dropped);
      (r.mirrors ??= []).push(m);
      m.start({ host: ep.host, port: ep.port, key: ep.key, cstats: cluster.stats, cluster, endpoint: null, tls: this.env.upstreamTls(cluster, this.down.view) }, this.early, this.requestEnded, this.reqTrailers, timeoutMs);
    }
  }
}

const FILTER_FAILED: LocalReply = Object.freeze({ status: 500, reason: 'internal_error', body: 'filter failed\n' });

/** One log line per filter and hook at most every 10 s, with the count: a filter that throws on every request must not flood the log. */
const filterErrorLogs = new Map<string, LogEvery>();

function filterError(err: unknown, filter: string, hook: string): void {
  const key = `${filter} ${hook}`;
  let l = filterErrorLogs.get(key);
  if (!l) { l = new LogEvery('a filter threw (a bug): its request, if not answered yet, got a 500 internal_error'); filterErrorLogs.set(key, l); }
  l.note({ err, filter, hook });
}

/** Request body a mirror may hold before its connection is ready; past it the copy is dropped. */
export const MIRROR_BUFFER_BYTES = 256 * 1024;

/** gRPC's own mapping of an HTTP status, for an answer that carried no grpc-status. */
function grpcOfHttp(status: number): number {
  switch (status) {
    case 200: return 2; // a 200 without grpc-status: UNKNOWN
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}

/** How an attempt that failed counts for its endpoint's breaker: failures of the upstream, not of ours or of the client's. */
function failureResult(kind: FailureKind): Result {
  return kind === 'overflow' || kind === 'refused' || kind === 'stale' ? 'neutral' : 'failure';
}

/**
 * How an exchange counts for a breaker: the upstream failed (an error answer, no answer, a reset,
 * a timeout), or it did not (an answer, even one saying the caller was wrong or that it is loaded);
 * Sluice's own refusals and a client that left are not judged.
 */
function breakerResult(outcome: OutcomeClass, reason: string | undefined, answered: boolean): Result {
  if (reason !== undefined) {
    return reason === 'upstream_connect_failed' || reason === 'upstream_dns_failed' || reason === 'upstream_timeout' || reason === 'upstream_reset'
      ? 'failure' : 'neutral';
  }
  if (!answered) return 'neutral';
  if (outcome === 'upstream_error' || outcome === 'local_origin_error') return 'failure';
  return outcome === 'cancelled' || outcome === 'local' ? 'neutral' : 'success';
}

function isLocalOrigin(reason: string): boolean {
  return reason === 'upstream_connect_failed' || reason === 'upstream_dns_failed' || reason === 'upstream_timeout'
    || reason === 'upstream_reset' || reason === 'overflow' || reason === 'no_healthy_upstream' || reason === 'registry_timeout' || reason === 'registry_full';
}
