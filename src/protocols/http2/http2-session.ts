/**
 * Downstream HTTP/2 (h2c prior knowledge, gRPC included) on Sluice's own
 * HTTP/2 codec. Each stream runs through the filter chain and goes to an
 * upstream HTTP/2 connection (the default: captured HTTP/2 stays HTTP/2) or,
 * for clusters that say `protocol: http1`, to an HTTP/1.1 connection.
 *
 *   stream ─▶ filter chain ─▶ Http2Pool connection.request() ─▶ upstream (h2)
 *                        └──▶ Http1Pool connection ────────────▶ upstream (h1)
 *
 * Header lists pass through as the flat arrays the HPACK decoder made, with
 * `via` added. Bodies are passed on chunk by chunk; a chunk's flow-control
 * window is given back to the sender only once the other side has taken it,
 * so a slow reader slows the writer down instead of filling memory.
 * Trailers (gRPC status) are carried end to end; resets are passed on as
 * resets in both directions, so a cut-off response or upload is never
 * mistaken for a complete one. Requests that surely never reached an upstream
 * (it could not be connected, or it refused the stream) are tried again, up to
 * MAX_ATTEMPTS.
 */
import type net from 'node:net';
import type { Http1Head } from '../http1/http1-decoder';
import { chunkParts, isHopByHop, lastChunk, type Framing } from '../http1/http1-encoder';
import { H2Error } from './frames';
import { CONNECTION_WINDOW, Http2Connection, writeAll, type Http2ConnectionHost, type Http2Options, type Http2Stream, type Http2StreamHandler } from './http2-connection';
import type { LocalReply } from '../../exchange/filter';
import { type Peer, type RequestView, type RequestProtocol } from '../../exchange/request-view';
import { normalizeTarget, parseAuthority, type Authority, type PathPolicy, type Target } from '../http/http-target';
import type { RouteTarget } from '../../exchange/router';
import { grpcStatusIn, httpStatusOfGrpc } from '../../stats/stats';
import type { ClusterStats, Endpoint } from '../../upstream/cluster';
import { poolLimits, type AcquireError, type Http1Connection, type Http1ResponseSink } from '../http1/http1-pool';
import type { UpstreamSession } from './http2-pool';
import { chooseUpstream, isLocalReply, type ConnectionInfo } from '../../worker/connection';
import type { CompiledConfig, DrainableConnection, WorkerRuntime } from '../../worker/runtime';

/**
 * Between the two GOAWAYs of a drain: long enough for every request a client sent before it saw
 * the first to arrive (Envoy's drain_timeout plays this part, 5 s by default).
 */
const DRAIN_GOAWAY_DELAY_MS = 1000;
/** Tries per request when an upstream cannot be reached or refuses the stream before it was processed. */
const MAX_ATTEMPTS = 3;
/** Streams a client may have open on one connection. */
const MAX_CONCURRENT_STREAMS = 1000;

/** HTTP status → gRPC status, as gRPC's own HTTP mapping has it. */
function grpcStatusFor(status: number): number {
  switch (status) {
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}

function isGrpc(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.startsWith('application/grpc');
}

/** Adds our `via` to a flat field list in place (after any `via` already there). */
function addVia(f: string[], via: string): void {
  for (let i = 0; i < f.length; i += 2) {
    if (f[i] === 'via') { f[i + 1] = `${f[i + 1]}, ${via}`; return; }
  }
  f.push('via', via);
}

class Http2View implements RequestView {
  readonly service: string;
  readonly method: string;
  constructor(readonly protocol: RequestProtocol, private readonly info: ConnectionInfo, private readonly peer: Peer,
    private readonly s: Http2Stream, host: string, readonly path: string) {
    if (protocol === 'grpc') {
      // /package.Service/Method
      const slash = path.indexOf('/', 1);
      this.service = slash > 0 ? path.slice(1, slash) : path.slice(1);
      this.method = slash > 0 ? path.slice(slash + 1) : '';
    } else {
      this.service = host;
      this.method = s.method;
    }
  }
  get direction() { return this.info.listener.config.direction; }
  get listener() { return this.info.listener.config.name; }
  get destination() { return this.info.dst; }
  get source(): Peer { return this.peer; }
  header(name: string): string | undefined { return this.s.header(name); }
}

interface Http2Target {
  authority: Authority;
  target: Target;
}

/**
 * The authority and path a stream is routed on and forwarded with. `:authority` (or `host`
 * without it) must be a valid authority, and a `host` beside `:authority` must name the same
 * one (RFC 9113 §8.3.1): an upstream reading the other would be reached past the routes.
 */
function resolveTarget(s: Http2Stream, policy: PathPolicy): Http2Target | string {
  const a = parseAuthority(s.authority);
  if (!a) return 'an invalid :authority';
  const host = s.header('host');
  if (host !== undefined && host !== s.authority) {
    const h = parseAuthority(host);
    if (!h || h.canonical !== a.canonical) return 'host and :authority differ';
  }
  const t = normalizeTarget(s.path, policy);
  if (typeof t === 'string') return t;
  return { authority: a, target: t };
}

/** Puts the routed :path and authority into a field list, in place. */
function rewriteTarget(f: string[], r: Http2Target): void {
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name === ':path') f[i + 1] = r.target.forward;
    else if (name === ':authority' || name === 'host') f[i + 1] = r.authority.canonical;
  }
}

/** h2 request fields → the flat HTTP/1 list, pseudo-headers and connection-specific fields left out, cookies joined. */
function toFlat(f: readonly string[]): string[] {
  const out: string[] = [];
  let cookie: string | undefined;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name.charCodeAt(0) === 58 /* : */ || isHopByHop(name)) continue;
    if (name === 'cookie') { cookie = cookie === undefined ? f[i + 1] : `${cookie}; ${f[i + 1]}`; continue; }
    out.push(name, f[i + 1]);
  }
  if (cookie !== undefined) out.push('cookie', cookie);
  return out;
}

/** HTTP/1 response fields → HTTP/2: names lower-cased, connection-specific fields dropped, `via` added. */
function fromFlat(status: number, flat: readonly string[], tokens: readonly string[], via: string): string[] {
  const out: string[] = [':status', String(status)];
  let viaSeen = false;
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase();
    if (isHopByHop(name) && name !== 'content-length') continue;
    if (tokens.includes(name)) continue;
    let value = flat[i + 1];
    if (name === 'via' && via && !viaSeen) { viaSeen = true; value = `${value}, ${via}`; }
    out.push(name, value);
  }
  if (via && !viaSeen) out.push('via', via);
  return out;
}

// ── downstream connections ───────────────────────────────────────────────────

const SERVER_OPTIONS = (cfg: CompiledConfig): Http2Options => ({
  maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
  initialWindow: 1 << 20,
  connectionWindow: CONNECTION_WINDOW,
  maxHeaderListSize: cfg.config.http.maxHeaderBytes,
  maxHeaderCount: cfg.config.http.maxHeaders,
});

/** A downstream connection: its socket, its codec, where it came from. */
class Http2Downstream implements Http2ConnectionHost {
  readonly conn: Http2Connection;
  readonly peer: Peer;
  private readonly drainer: DrainableConnection = { drain: () => this.drain(), closeIdle: () => this.conn.shutdown() };
  private drainTimer: NodeJS.Timeout | null = null;

  constructor(readonly rt: WorkerRuntime, readonly socket: net.Socket, readonly info: ConnectionInfo) {
    // the access log may ask after the socket closed
    this.peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    this.conn = new Http2Connection(true, this, SERVER_OPTIONS(rt.current()));
  }

  start(): void {
    const { socket, rt } = this;
    socket.allowHalfOpen = false;
    socket.on('data', (d: Buffer) => this.conn.receive(d));
    socket.on('drain', () => this.conn.onDrain());
    socket.once('close', () => {
      live(this.rt).delete(this);
      rt.connections.delete(this.drainer);
      if (this.drainTimer) clearTimeout(this.drainTimer);
      this.conn.destroy();
    });
    live(rt).add(this);
    rt.connections.add(this.drainer);
    // a connection opened during the drain period is told after its first stream (onStream):
    // a GOAWAY before any request would send a client round in circles
    if (rt.closingIdle) this.conn.shutdown();
  }

  /** The two-step GOAWAY (Http2Connection.drainGracefully); the final one DRAIN_GOAWAY_DELAY_MS later. */
  private drain(): void {
    if (this.conn.drainNotified || this.conn.goingAway) return;
    this.conn.drainGracefully();
    this.drainTimer = setTimeout(() => { this.drainTimer = null; this.conn.shutdown(); }, DRAIN_GOAWAY_DELAY_MS);
    this.drainTimer.unref();
  }

  write(data: Buffer): boolean { return this.socket.write(data); }
  writeMany(data: Buffer[]): boolean { return writeAll(this.socket, data); }

  onStream(s: Http2Stream): void {
    const rt = this.rt;
    try {
      if (rt.draining) this.drain();
      new Http2Exchange(rt, rt.current(), this, s).start();
    } catch (err) {
      rt.logError(err as Error, 'http2 stream');
      this.conn.reset(s, H2Error.INTERNAL_ERROR);
    }
  }

  onEnd(): void {
    this.socket.end();
    // a client that does not close its side is not waited for
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  onGoaway(): void {}
  onIdle(): void {}

  onProtocolError(): void {
    this.rt.current().stats.inc(this.rt.current().protocol('http2').protocolError);
  }
}

/** Open downstream connections per runtime, swept for idle ones (no stream for http.idleTimeoutMs, Envoy's meaning). */
const lives = new WeakMap<WorkerRuntime, Set<Http2Downstream>>();

function live(rt: WorkerRuntime): Set<Http2Downstream> {
  let set = lives.get(rt);
  if (set) return set;
  const s = new Set<Http2Downstream>();
  set = s;
  lives.set(rt, s);
  const { idleTimeoutMs, headerTimeoutMs } = rt.current().config.http;
  const sweep = setInterval(() => {
    const cfg = rt.current();
    const { idleTimeoutMs: idle, headerTimeoutMs: header } = cfg.config.http;
    const now = performance.now();
    for (const d of s) {
      const c = d.conn;
      // a client that started a header block (or the connection) and does not finish it: slowloris
      if (c.headersPendingSince > 0 && now - c.headersPendingSince >= header) {
        cfg.stats.inc(cfg.protocol('http2').timeout);
        c.fail(H2Error.NO_ERROR, 'header timeout');
      } else if (c.active === 0 && now - c.idleSince >= idle) c.shutdown();
    }
  }, Math.max(50, Math.min(1000, idleTimeoutMs / 4, headerTimeoutMs / 4)));
  sweep.unref();
  return s;
}

export function serveHttp2(rt: WorkerRuntime, socket: net.Socket, info: ConnectionInfo): void {
  new Http2Downstream(rt, socket, info).start();
}

// ── stream handlers ──────────────────────────────────────────────────────────
// Shared by every exchange: the exchange is the stream's ctx.

const DOWN: Http2StreamHandler = {
  onResponse() {},
  onData(s, d, end) { (s.ctx as Http2Exchange).onRequestData(d, end); },
  onTrailers(s, f) { (s.ctx as Http2Exchange).onRequestTrailers(f); },
  onReset(s) { (s.ctx as Http2Exchange).onDownstreamReset(); },
  onWritable(s) { (s.ctx as Http2Exchange).onDownstreamWritable(); },
  onClose(s) { (s.ctx as Http2Exchange).onDownstreamClose(); },
};

const UP: Http2StreamHandler = {
  onResponse(s, f, status, end) { (s.ctx as Http2Exchange).onUpResponse(s, f, status, end); },
  onData(s, d, end) { (s.ctx as Http2Exchange).onUpData(s, d, end); },
  onTrailers(s, f) { (s.ctx as Http2Exchange).onUpTrailers(s, f); },
  onReset(s, code, remote) { (s.ctx as Http2Exchange).onUpReset(s, code, remote); },
  onWritable(s) { (s.ctx as Http2Exchange).onUpWritable(s); },
  onClose(s) { (s.ctx as Http2Exchange).onUpClose(s); },
};

class Http2Exchange implements Http1ResponseSink {
  private readonly view: Http2View;
  private readonly resolved: Http2Target | string;
  private readonly protocol: RequestProtocol;
  private readonly start0: number;
  private readonly via: string;
  private readonly conn: Http2Connection;
  private target: RouteTarget | null = null;
  private cstats: ClusterStats | null = null;
  private endpoint: Endpoint | null = null;
  private upstreamKey = '';
  private timer: NodeJS.Timeout | null = null;
  private upstreamActive = false;
  private responded = false;
  /** The response's end (END_STREAM or trailers) went to the client. */
  private responseEnded = false;
  private finished = false;
  private status = 0;
  /** The grpc-status the upstream sent (trailers, or a trailers-only response), -1 while none. */
  private grpcStatus = -1;
  private reason: string | undefined = undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private attempts = 0;
  /** The request had no body, or its body has fully arrived. */
  private requestEnded: boolean;
  /** Request body and trailers that came before an upstream was ready for them. */
  private early: Buffer[] | null = null;
  private earlyTrailers: string[] | null = null;
  private earlyBytes = 0;
  /** Request trailers went to an upstream: the request cannot be sent again. */
  private trailersSent = false;
  /** Request bytes passed upstream but not yet taken there: the client's window for them is owed. */
  private owedDown = 0;
  /** Response bytes passed to the client but not yet taken: the upstream's window for them is owed. */
  private owedUp = 0;
  // h2 upstream
  private up: Http2Stream | null = null;
  private us: UpstreamSession | null = null;
  // h1 upstream
  private h1: Http1Connection | null = null;
  private reqFraming: Framing = { kind: 'none' };
  private h1Paused = false;

  constructor(
    private readonly rt: WorkerRuntime,
    private readonly cfg: CompiledConfig,
    private readonly down: Http2Downstream,
    private readonly stream: Http2Stream,
  ) {
    this.conn = down.conn;
    this.protocol = isGrpc(stream.contentType || undefined) ? 'grpc' : 'http2';
    const r = resolveTarget(stream, cfg.config.http);
    this.resolved = r;
    this.view = typeof r === 'string'
      ? new Http2View(this.protocol, down.info, down.peer, stream, '', '')
      : new Http2View(this.protocol, down.info, down.peer, stream, r.authority.host, r.target.path);
    this.start0 = performance.now();
    this.via = cfg.config.http.via;
    this.requestEnded = stream.remoteEnded;
  }

  private get pstats() { return this.cfg.protocol(this.protocol); }

  start(): void {
    const { stats } = this.cfg;
    stats.inc(this.pstats.rqTotal);
    stats.inc(this.pstats.rqActive);
    const s = this.stream;
    s.ctx = this;
    s.handler = DOWN;
    if (typeof this.resolved === 'string') {
      this.cfg.stats.inc(this.pstats.protocolError);
      this.localReply({ status: 400, reason: 'bad_request', body: `${this.resolved}\n` });
      return;
    }
    this.cfg.chain.run(this.view, (reply, target) => (reply ? this.localReply(reply) : this.route(target!)));
  }

  private route(target: RouteTarget): void {
    if (this.finished) return;
    this.target = target;
    if (target.kind === 'direct') { this.localReply({ status: target.status, reason: 'direct_response', body: target.body }); return; }
    this.timer = setTimeout(() => this.onTimeout(), target.timeoutMs);
    this.connect();
  }

  private connect(avoid?: Endpoint): void {
    const target = this.target!;
    if (target.kind === 'direct') return;
    const choice = chooseUpstream(this.cfg, this.down.info, target, avoid);
    if (isLocalReply(choice)) { this.localReply(choice); return; }
    this.endpoint = choice.endpoint;
    this.cstats = choice.cstats;
    this.upstreamKey = choice.key;
    const { host, port } = choice;
    const upstreamProtocol = target.kind === 'cluster' && target.cluster.config.protocol === 'http1' ? 'http1' : 'http2';
    this.attempts++;
    if (upstreamProtocol === 'http2') this.forwardH2(host, port);
    else this.forwardH1(host, port);
  }

  private countUpstream(): void {
    this.upstreamActive = true;
    if (this.endpoint) this.endpoint.active++;
    this.cfg.stats.inc(this.cstats!.rqTotal);
    this.cfg.stats.inc(this.cstats!.rqActive);
  }

  private upstreamDone(): void {
    if (!this.upstreamActive) return;
    this.upstreamActive = false;
    this.cfg.stats.dec(this.cstats!.rqActive);
    if (this.endpoint) this.endpoint.active--;
  }

  /** Another attempt is allowed after a connect failure (another endpoint) or a refused stream (not processed). */
  private mayRetry(refused: boolean): boolean {
    const t = this.target;
    return t !== null && t.kind === 'cluster' && this.attempts < MAX_ATTEMPTS && this.bytesIn === 0 && !this.trailersSent
      && (refused || t.cluster.endpoints.length > 1);
  }

  // ── HTTP/2 upstream ──────────────────────────────────────────────────────

  private forwardH2(host: string, port: number): void {
    const t = this.target;
    const connectTimeoutMs = t?.kind === 'cluster' ? t.cluster.config.connectTimeoutMs : this.cfg.config.tcp.connectTimeoutMs;
    const us = this.rt.pools.http2(host, port, this.upstreamKey).acquire(this.cstats!, connectTimeoutMs, this.cfg.config.http.upstreamIdleTimeoutMs);
    const fields = this.stream.fields;
    if (this.attempts === 1) {
      rewriteTarget(fields, this.resolved as Http2Target);
      if (this.via) addVia(fields, this.via);
    }
    const endNow = this.requestEnded && this.early === null && this.earlyTrailers === null;
    const up = us.conn.request(fields, endNow, UP, this);
    if (up === null) {
      us.release();
      this.failBeforeResponse('upstream_connect_failed');
      return;
    }
    // a response to HEAD has no body, whatever its content-length says (RFC 9110 9.3.2)
    if (this.stream.method === 'HEAD') up.noBody = true;
    this.up = up;
    this.us = us;
    this.countUpstream();
    if (!endNow) this.flushEarly();
  }

  /** Body that arrived before the upstream stream was open. */
  private flushEarly(): void {
    const early = this.early;
    this.early = null;
    this.earlyBytes = 0;
    if (early !== null) {
      for (let i = 0; i < early.length; i++) this.forwardBody(early[i], this.requestEnded && this.earlyTrailers === null && i === early.length - 1);
    } else if (this.requestEnded && this.earlyTrailers === null) {
      this.forwardBody(Buffer.alloc(0), true);
    }
    if (this.earlyTrailers !== null) {
      const t = this.earlyTrailers;
      this.earlyTrailers = null;
      this.forwardTrailers(t);
    }
  }

  onUpResponse(up: Http2Stream, f: string[], status: number, end: boolean): void {
    if (this.finished || this.up !== up) return;
    this.status = status;
    this.responded = true;
    if (end && this.protocol === 'grpc') this.grpcStatus = grpcStatusIn(f);
    if (this.via) addVia(f, this.via);
    this.conn.respond(this.stream, f, end);
    if (end) this.responseDone();
  }

  onUpData(up: Http2Stream, d: Buffer, end: boolean): void {
    if (this.up !== up || this.finished) return;
    this.bytesOut += d.length;
    if (this.conn.writeData(this.stream, d, end)) up.conn.consumed(up, d.length);
    else this.owedUp += d.length;
    if (end) this.responseDone();
  }

  onUpTrailers(up: Http2Stream, f: string[]): void {
    if (this.up !== up || this.finished) return;
    this.grpcStatus = grpcStatusIn(f);
    this.conn.writeTrailers(this.stream, f);
    this.responseDone();
  }

  onDownstreamWritable(): void {
    const up = this.up;
    if (up !== null && this.owedUp > 0) {
      const n = this.owedUp;
      this.owedUp = 0;
      up.conn.consumed(up, n);
    }
    if (this.h1Paused && this.h1 !== null) { this.h1Paused = false; this.h1.socket.resume(); }
  }

  onUpWritable(up: Http2Stream): void {
    if (this.up !== up) return;
    const n = this.owedDown;
    this.owedDown = 0;
    this.conn.consumed(this.stream, n);
  }

  onUpClose(up: Http2Stream): void {
    if (this.up !== up) return;
    this.releaseUp();
    this.stopRequestIfUnwanted();
  }

  onUpReset(up: Http2Stream, code: number, remote: boolean): void {
    if (this.up !== up) return;
    const us = this.us!;
    this.releaseUp();
    if (this.finished) return;
    if (!this.responded) {
      // safe to send again only if the upstream surely did not process it: never connected, or refused
      const refused = remote && code === H2Error.REFUSED_STREAM;
      const neverConnected = !us.connected;
      if ((refused || neverConnected) && this.mayRetry(refused)) {
        this.upstreamDone();
        this.connect(neverConnected ? this.endpoint ?? undefined : undefined);
        return;
      }
      if (code === H2Error.PROTOCOL_ERROR && !remote) {
        // our codec refused what the upstream sent
        this.cfg.stats.inc(this.cstats!.rqReset);
        this.localReply({ status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' });
        return;
      }
      this.failBeforeResponse(neverConnected ? (us.dnsFailed ? 'upstream_dns_failed' : 'upstream_connect_failed') : 'upstream_reset');
      return;
    }
    if (this.responseEnded) {
      // the response is whole; the upstream only stopped reading the request (RFC 9113 8.1)
      this.conn.stopStream(this.stream);
      return;
    }
    // cut off mid-response: reset the client's stream too
    this.cfg.stats.inc(this.cstats!.rqReset);
    this.reason = 'upstream_reset';
    this.conn.reset(this.stream, H2Error.INTERNAL_ERROR);
    this.finish();
  }

  private releaseUp(): void {
    const up = this.up;
    const us = this.us;
    this.up = null;
    this.us = null;
    // the upstream connection's window must not shrink by what its closed stream still had in flight
    if (up !== null && this.owedUp > 0) { up.conn.consumed(up, this.owedUp); this.owedUp = 0; }
    us?.release();
  }

  private responseDone(): void {
    this.responseEnded = true;
    // the client's stream closes (and the exchange finishes) once its request has ended too
    if (!this.requestEnded) { this.stopRequestIfUnwanted(); return; }
    this.finish();
  }

  /**
   * The response is complete and no upstream is left to take the rest of the request:
   * the client is told to stop sending (RST_STREAM NO_ERROR after our END_STREAM).
   */
  private stopRequestIfUnwanted(): void {
    if (!this.responseEnded || this.requestEnded || this.finished || this.up !== null || this.h1 !== null) return;
    this.dropEarly();
    this.conn.stopStream(this.stream);
  }

  // ── request body, either upstream ───────────────────────────────────────

  onRequestData(d: Buffer, end: boolean): void {
    this.bytesIn += d.length;
    if (end) this.requestEnded = true;
    if (this.up === null && this.h1 === null) {
      if (this.finished || this.responseEnded) { this.conn.consumed(this.stream, d.length); return; }
      // no upstream yet: kept (the client's window bounds it) until there is one
      if (d.length > 0) (this.early ??= []).push(d);
      this.earlyBytes += d.length;
      return;
    }
    this.forwardBody(d, end);
  }

  onRequestTrailers(f: string[]): void {
    this.requestEnded = true;
    if (this.up === null && this.h1 === null) {
      if (!this.finished) this.earlyTrailers = f;
      return;
    }
    this.forwardTrailers(f);
  }

  private forwardBody(d: Buffer, end: boolean): void {
    const up = this.up;
    if (up !== null) {
      if (up.conn.writeData(up, d, end)) this.conn.consumed(this.stream, d.length);
      else this.owedDown += d.length;
      return;
    }
    const conn = this.h1;
    if (conn === null) return;
    const sock = conn.socket;
    let ok = true;
    if (d.length > 0) {
      if (this.reqFraming.kind === 'chunked') { const p = chunkParts(d); sock.write(p[0]); sock.write(p[1]); ok = sock.write(p[2]); }
      else ok = sock.write(d);
    }
    if (ok) this.conn.consumed(this.stream, d.length);
    else this.owedDown += d.length;
    if (end) {
      if (this.reqFraming.kind === 'chunked') sock.write(lastChunk(null));
      conn.requestDone = true;
    }
  }

  private forwardTrailers(f: string[]): void {
    this.trailersSent = true;
    const up = this.up;
    if (up !== null) { up.conn.writeTrailers(up, f); return; }
    const conn = this.h1;
    if (conn === null) return;
    if (this.reqFraming.kind === 'chunked') conn.socket.write(lastChunk(f));
    conn.requestDone = true;
  }

  /** The HTTP/1 upstream drained after a request-body write returned false. */
  onUpstreamDrain(): void {
    const n = this.owedDown;
    this.owedDown = 0;
    if (n > 0 && !this.finished) this.conn.consumed(this.stream, n);
  }

  private failBeforeResponse(reason: 'upstream_connect_failed' | 'upstream_dns_failed' | 'upstream_reset'): void {
    if (reason === 'upstream_reset') this.cfg.stats.inc(this.cstats!.rqReset);
    const body = reason === 'upstream_reset' ? 'upstream reset before response\n'
      : reason === 'upstream_dns_failed' ? 'upstream name lookup failed\n' : 'upstream connect failed\n';
    this.localReply({ status: 503, reason, body });
  }

  // ── HTTP/1.1 upstream ────────────────────────────────────────────────────

  private forwardH1(host: string, port: number): void {
    const limits = poolLimits(this.cfg.config, this.target?.kind === 'cluster' ? this.target.cluster.config : undefined);
    const pool = this.rt.pools.http1(host, port, this.upstreamKey, limits);
    pool.acquire((err, conn) => this.onAcquired(err, conn), limits, this.cstats!);
  }

  private onAcquired(err: AcquireError | null, conn: Http1Connection | null): void {
    if (this.finished) { conn?.abandon(); return; }
    if (err || !conn) {
      const t = this.target!;
      if (err !== 'overflow' && t.kind === 'cluster' && t.cluster.endpoints.length > 1 && this.attempts < MAX_ATTEMPTS) { this.connect(this.endpoint ?? undefined); return; }
      if (err === 'overflow') this.localReply({ status: 503, reason: 'overflow', body: 'upstream overflow\n' });
      else this.failBeforeResponse(err === 'dns_failed' ? 'upstream_dns_failed' : 'upstream_connect_failed');
      return;
    }
    this.h1 = conn;
    this.countUpstream();
    const s = this.stream;
    conn.start(this, s.method);
    const bodyless = this.requestEnded && this.early === null;
    const cl = s.contentLength;
    this.reqFraming = bodyless ? { kind: cl >= 0 ? 'length' : 'none', length: 0 } as Framing
      : cl >= 0 ? { kind: 'length', length: cl } : { kind: 'chunked' };
    const r = this.resolved as Http2Target;
    let head = `${s.method} ${r.target.forward} HTTP/1.1\r\nhost: ${r.authority.canonical || this.upstreamKey}\r\n`;
    const flat = toFlat(s.fields);
    let prevVia: string | undefined;
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i];
      if (name === 'via') { prevVia = prevVia === undefined ? flat[i + 1] : `${prevVia}, ${flat[i + 1]}`; continue; }
      if (name === 'te' || name === 'host') continue;
      head += `${name}: ${flat[i + 1]}\r\n`;
    }
    const via = this.via;
    if (via) head += `via: ${prevVia !== undefined ? `${prevVia}, ` : ''}${via}\r\n`;
    else if (prevVia !== undefined) head += `via: ${prevVia}\r\n`;
    if (this.reqFraming.kind === 'length') head += `content-length: ${this.reqFraming.length}\r\n`;
    else if (this.reqFraming.kind === 'chunked') head += 'transfer-encoding: chunked\r\n';
    conn.socket.write(head + '\r\n', 'latin1');
    if (bodyless && this.earlyTrailers === null) { conn.requestDone = true; return; }
    this.flushEarly();
  }

  onResponseHead(h: Http1Head): void {
    if (h.status < 200 || this.finished) return;
    this.status = h.status;
    this.responded = true;
    const noBody = this.stream.method === 'HEAD' || h.status === 204 || h.status === 304;
    this.conn.respond(this.stream, fromFlat(h.status, h.headers, h.connectionTokens, this.via), noBody);
    if (noBody) this.responseEnded = true;
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (this.finished || this.responseEnded) return;
    if (!this.conn.writeData(this.stream, chunk, false) && this.h1 !== null && !this.h1Paused) {
      this.h1Paused = true;
      this.h1.socket.pause();
    }
  }

  onResponseEnd(trailers: string[] | null): void {
    // the pool may hand this connection to the next request now: it must not stay paused on our account
    const conn = this.h1;
    this.h1 = null;
    if (conn !== null && this.h1Paused) { this.h1Paused = false; conn.socket.resume(); }
    if (conn && !conn.requestDone) conn.abandon();
    if (this.finished) return;
    this.grpcStatus = grpcStatusIn(trailers);
    if (!this.responseEnded) {
      if (trailers !== null && trailers.length > 0) {
        const t: string[] = [];
        for (let i = 0; i < trailers.length; i += 2) {
          const name = trailers[i].toLowerCase();
          if (!isHopByHop(name)) t.push(name, trailers[i + 1]);
        }
        this.conn.writeTrailers(this.stream, t);
      } else {
        this.conn.writeData(this.stream, Buffer.alloc(0), true);
      }
    }
    this.responseDone();
  }

  onUpstreamError(kind: 'reset' | 'protocol'): void {
    this.h1 = null;
    this.h1Paused = false;
    if (this.finished) return;
    this.cfg.stats.inc(this.cstats!.rqReset);
    if (!this.responded) {
      this.localReply(kind === 'protocol'
        ? { status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' }
        : { status: 503, reason: 'upstream_reset', body: 'upstream connection reset before response\n' });
      return;
    }
    this.reason = 'upstream_reset';
    this.conn.reset(this.stream, H2Error.INTERNAL_ERROR);
    this.finish();
  }

  // ── common ───────────────────────────────────────────────────────────────

  private onTimeout(): void {
    this.timer = null;
    if (this.finished) return;
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqTimeout);
    this.dropUpstream();
    if (!this.responded) { this.localReply({ status: 504, reason: 'upstream_timeout', body: 'upstream request timeout\n' }); return; }
    this.reason = 'upstream_timeout';
    this.conn.reset(this.stream, H2Error.INTERNAL_ERROR);
    this.finish();
  }

  /** The client reset its stream, or its connection went away. */
  onDownstreamReset(): void {
    if (this.finished) return;
    this.dropUpstream();
    this.finish();
  }

  /** Both sides of the client's stream ended cleanly. */
  onDownstreamClose(): void {
    this.requestEnded = true;
    if (this.responseEnded) this.finish();
  }

  private dropUpstream(): void {
    const up = this.up;
    if (up !== null) {
      up.conn.reset(up, H2Error.CANCEL);
      this.releaseUp();
    }
    const conn = this.h1;
    this.h1 = null;
    if (conn !== null && this.h1Paused) conn.socket.resume();
    this.h1Paused = false;
    conn?.abandon();
    this.dropEarly();
  }

  /** Request bytes held or owed are given back to the client's connection window: nobody will take them now. */
  private dropEarly(): void {
    const n = this.earlyBytes + this.owedDown;
    this.early = null;
    this.earlyBytes = 0;
    this.owedDown = 0;
    if (n > 0) this.conn.consumed(this.stream, n);
  }

  private localReply(r: LocalReply): void {
    if (this.finished) return;
    this.dropUpstream();
    this.status = r.status;
    this.reason = r.reason;
    // the router says no_route itself; counted here so every path to a 404 counts once
    if (r.reason === 'no_route') this.cfg.stats.inc(this.pstats.noRoute);
    const s = this.stream;
    const conn = this.conn;
    if (!s.closed && !s.headersSent) {
      if (this.protocol === 'grpc') {
        conn.respond(s, [
          ':status', '200', 'content-type', 'application/grpc', 'grpc-status', String(grpcStatusFor(r.status)),
          'grpc-message', encodeURIComponent((r.body ?? r.reason).trim()), 'x-sluice-reason', r.reason,
        ], true);
      } else {
        const body = Buffer.from(r.body ?? '', 'utf8');
        const headOnly = s.method === 'HEAD';
        conn.respond(s, [':status', String(r.status), 'content-type', 'text/plain', 'content-length', String(body.length), 'x-sluice-reason', r.reason], headOnly);
        if (!headOnly) conn.writeData(s, body, true);
      }
      // the rest of the request is not needed
      if (!this.requestEnded) conn.stopStream(s);
    } else if (!s.closed) {
      conn.reset(s, H2Error.INTERNAL_ERROR);
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.dropEarly();
    const up = this.up;
    if (up !== null && !up.localEnded) {
      // the response is whole but our request never finished going up: free the stream and its slot
      up.conn.reset(up, H2Error.CANCEL);
      this.releaseUp();
    }
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const { stats } = this.cfg;
    const ps = this.pstats;
    stats.dec(ps.rqActive);
    // a response the upstream (or its timeout) cut off is a reset or a timeout, not also a 2xx
    const cut = this.responded && (this.reason === 'upstream_reset' || this.reason === 'upstream_timeout');
    let status = this.status;
    if (this.protocol === 'grpc' && !cut) {
      // counted by the grpc-status the client got: sent by the upstream, ours for a local reply or a
      // response without one (gRPC's HTTP mapping), CANCELLED when the client left before the end
      const ended = this.responseEnded || (this.reason !== undefined && !this.responded);
      const code = this.grpcStatus >= 0 ? this.grpcStatus : ended ? grpcStatusFor(status) : 1;
      stats.grpcStatus(code);
      status = httpStatusOfGrpc(code);
    }
    const cls = cut ? 0 : (status / 100) | 0;
    if (cls) stats.inc(ps.rqClass[cls]);
    if (this.cstats && this.upstreamActive && this.responded && cls) stats.inc(this.cstats.rqClass[cls]);
    stats.requestDone(this.protocol, (performance.now() - this.start0) / 1000, this.bytesIn, this.bytesOut);
    this.upstreamDone();
    if (this.cfg.accessLog.enabled) {
      const v = this.view;
      this.cfg.accessLog.write({
        protocol: this.protocol, direction: v.direction, listener: v.listener, method: v.method, path: v.path, service: v.service,
        status: this.status, reason: this.reason, route: this.target?.route, upstream: this.upstreamKey || undefined,
        bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs: Math.round((performance.now() - this.start0) * 1000) / 1000,
        source: v.source.address,
      });
    }
  }
}
