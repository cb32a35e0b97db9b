/**
 * A downstream HTTP/1.x connection: decode requests, run each through the
 * filter chain, forward it to an upstream HTTP/1.1 connection from the pool,
 * and stream the response back. One request at a time; pipelined requests wait
 * in the decoder until the response before them is complete.
 *
 *   socket ─▶ Http1Decoder ─▶ Http1Exchange ─▶ filter chain ─▶ Http1Pool ─▶ upstream
 *   socket ◀──────────────── Http1Exchange ◀───────────── Http1Connection ◀─┘
 *
 * Bodies stream in both directions with backpressure: a slow reader pauses the
 * socket at the other end, so memory stays flat whatever the body size.
 */
import type net from 'node:net';
import { Http1Decoder, type Http1Handler, type Http1Head } from '../codecs/http1/http1-decoder';
import {
  chunkParts, encodeLocalReply, encodeRequestHead, encodeResponseHead, lastChunk, type Framing,
} from '../codecs/http1/http1-encoder';
import type { ProtocolError } from '../errors';
import type { LocalReply } from '../filters/filter';
import { type Peer, type RequestView } from '../filters/request-view';
import { normalizeTarget, parseAuthority, splitAbsolute, type Authority, type PathPolicy, type Target } from '../codecs/http-target';
import type { RouteTarget } from '../filters/router';
import type { ClusterStats, Endpoint } from '../upstream/cluster';
import { poolLimits, type AcquireError, type Http1Connection, type Http1ResponseSink } from '../upstream/http1-pool';
import { chooseUpstream, isLocalReply, type ConnectionInfo } from './connection';
import type { CompiledConfig, WorkerRuntime } from './runtime';

const MAX_CONNECT_ATTEMPTS = 3;
/** Request body bytes held while no upstream connection is ready yet. */
const MAX_EARLY_BODY = 64 * 1024;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Also left out of a request whose h2c upgrade is not forwarded. */
const H2C_FIELDS = ['http2-settings'];

/**
 * The Upgrade value a request is forwarded with, or undefined. An upgrade to h2c is never
 * forwarded: the tunnel that a 101 opens would carry HTTP/2 requests that no route sees (RFC 9113
 * deprecates it; Sluice speaks HTTP/2 itself). Such a request goes upstream as a plain request.
 */
function forwardedUpgrade(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  for (const token of value.split(',')) if (token.trim().toLowerCase() === 'h2c') return undefined;
  return value;
}

class Http1View implements RequestView {
  readonly protocol = 'http1' as const;
  readonly method: string;
  constructor(private readonly session: Http1Session, readonly head: Http1Head, readonly service: string, readonly path: string) {
    this.method = head.method;
  }
  get direction() { return this.session.info.listener.config.direction; }
  get listener() { return this.session.info.listener.config.name; }
  get destination() { return this.session.info.dst; }
  get source(): Peer { return this.session.peer(); }
  header(name: string): string | undefined {
    const h = this.head.headers;
    for (let i = 0; i < h.length; i += 2) {
      if (h[i].length === name.length && h[i].toLowerCase() === name) return h[i + 1];
    }
    return undefined;
  }
}

interface Http1Target {
  authority: Authority;
  target: Target;
}

/**
 * The authority and path a request is routed on, which are also what is forwarded: an
 * absolute-form target's authority wins over Host (RFC 9112 §3.2.2), and goes upstream as
 * Host with the origin-form rest. A reason string when the request is refused.
 */
function resolveTarget(head: Http1Head, policy: PathPolicy): Http1Target | string {
  let authority = head.host;
  let rest = head.target;
  const c = rest.charCodeAt(0);
  if (c !== 47 /* / */ && rest !== '*') {
    const abs = splitAbsolute(rest);
    if (!abs) return 'an unsupported request target';
    if (abs.authority === '') return 'an absolute-form target without a host';
    authority = abs.authority;
    rest = abs.rest;
  }
  const a = parseAuthority(authority);
  if (!a) return authority === head.host ? 'an invalid Host header' : 'an invalid authority in the request target';
  const t = normalizeTarget(rest, policy);
  if (typeof t === 'string') return t;
  return { authority: a, target: t };
}

export class Http1Session implements Http1Handler {
  private decoder!: Http1Decoder;
  private exchange: Http1Exchange | null = null;
  private headerTimer: NodeJS.Timeout | null = null;
  private draining = false;
  private clientEnded = false;
  /** We are ending the connection: input is no longer parsed. */
  private closing = false;
  private peerCache: Peer | null = null;
  closed = false;

  constructor(readonly rt: WorkerRuntime, readonly socket: net.Socket, readonly info: ConnectionInfo) {}

  start(): void {
    const http = this.rt.current().config.http;
    this.decoder = new Http1Decoder('request', this, { maxHeaderBytes: http.maxHeaderBytes, maxHeaders: http.maxHeaders });
    const s = this.socket;
    s.on('data', (d: Buffer) => this.onData(d));
    s.on('end', () => this.onEnd());
    s.on('close', () => this.onClose());
    // one listener for the connection's life: the exchange that paused its upstream resumes it
    s.on('drain', () => this.exchange?.onDownstreamDrain());
    // not setTimeout(ms, cb): that listener is a once, and the first timeout during a long
    // exchange (ignored) would leave the connection without an idle timeout for good
    s.on('timeout', () => this.onIdle());
    s.setTimeout(http.idleTimeoutMs);
    this.rt.connections.add(this);
    if (this.rt.draining) this.draining = true;
    if (this.rt.closingIdle) this.closeIdle();
  }

  /** Bytes the decoder holds after an upgrade request (sent before the 101 came back). */
  takeRemainder(): Buffer {
    return this.decoder.takeRemainder();
  }

  peer(): Peer {
    return (this.peerCache ??= { address: this.socket.remoteAddress ?? '', port: this.socket.remotePort ?? 0 });
  }

  // ── downstream socket ────────────────────────────────────────────────────

  private onData(d: Buffer): void {
    if (this.closing) return;
    try {
      this.decoder.push(d);
      // pipelined requests queue in the decoder; stop reading once a head's worth is waiting
      if (this.decoder.bufferedBytes > this.rt.current().config.http.maxHeaderBytes) this.socket.pause();
      this.headerPending();
    } catch (err) {
      // a bug of ours, not the peer's: lose this connection, never the worker
      this.rt.logError(err as Error, 'http1 session');
      this.socket.destroy();
    }
  }

  private onEnd(): void {
    this.clientEnded = true;
    if (this.closing) return;
    // An incomplete request (head or body) gets its answer through onError. With a response in
    // flight, requests pipelined before the FIN are still served, then the connection closes.
    if (this.exchange || !this.decoder.idle) this.decoder.end();
    if (!this.exchange && this.decoder.idle) this.closeSoon();
  }

  private onClose(): void {
    this.closed = true;
    this.clearHeaderTimer();
    this.rt.connections.delete(this);
    this.exchange?.downstreamGone();
  }

  private onIdle(): void {
    const ex = this.exchange;
    if (ex && !ex.finished) return; // a request in flight has its own timeout
    if (ex) {
      // answered, but the client stopped sending the rest of its request body
      const cfg = this.rt.current();
      cfg.stats.inc(cfg.protocol('http1').timeout);
    }
    this.socket.destroy();
  }

  /**
   * The header timeout runs from the first byte of a request to the end of its head. Between
   * requests a keep-alive connection is governed by the idle timeout alone.
   */
  private headerPending(): void {
    if (this.headerTimer || this.exchange || this.closing || this.decoder.idle) return;
    let ms = this.rt.current().config.http.headerTimeoutMs;
    const first = this.info.firstByteAt;
    if (first !== undefined) {
      // the first request's head began while the protocol was being recognised
      this.info.firstByteAt = undefined;
      ms = Math.max(1, ms - (performance.now() - first));
    }
    this.headerTimer = setTimeout(onHeaderTimeout, ms, this);
  }

  /** @internal */
  headerTimeout(): void {
    this.headerTimer = null;
    if (this.exchange || this.closed || this.closing || this.decoder.idle) return;
    const cfg = this.rt.current();
    cfg.stats.inc(cfg.protocol('http1').timeout);
    this.writeErrorAndClose(408, 'request header timeout\n');
  }

  private clearHeaderTimer(): void {
    if (this.headerTimer) { clearTimeout(this.headerTimer); this.headerTimer = null; }
  }

  closeSoon(): void {
    this.closing = true;
    this.clearHeaderTimer();
    if (this.closed) return;
    this.socket.end();
    this.socket.destroySoon?.();
  }

  /** The next response says `connection: close`; an idle connection stays open for the client's next request. */
  drain(): void {
    this.draining = true;
  }

  closeIdle(): void {
    this.draining = true;
    if (!this.exchange && this.decoder.idle) this.closeSoon();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  private writeErrorAndClose(status: number, body: string): void {
    this.socket.write(encodeLocalReply(status, 'bad_request', body, true));
    this.closeSoon();
  }

  // ── decoder events ───────────────────────────────────────────────────────

  onHead(head: Http1Head): void {
    this.clearHeaderTimer();
    const ex = new Http1Exchange(this, this.rt.current(), head);
    this.exchange = ex;
    ex.start();
  }

  onBody(chunk: Buffer): void {
    this.exchange?.onRequestBody(chunk);
  }

  onMessageEnd(trailers: string[] | null): boolean {
    const ex = this.exchange;
    if (!ex) return true;
    ex.onRequestEnd(trailers);
    if (ex.finished) {
      this.exchange = null;
      const more = this.afterExchange(ex);
      if (more && !ex.tunnel) this.decoder.cancelUpgrade();
      return more;
    }
    return false; // hold pipelined requests until this response is done
  }

  onError(err: ProtocolError): void {
    const cfg = this.rt.current();
    cfg.stats.inc(cfg.protocol('http1').protocolError);
    const ex = this.exchange;
    if (ex && ex.responseStarted) { this.socket.destroy(); return; }
    ex?.abort();
    this.exchange = null;
    this.writeErrorAndClose(err.status, `${err.message}\n`);
  }

  /** Called by the exchange when its response is fully written. */
  exchangeFinished(ex: Http1Exchange): void {
    if (ex.tunnel) {
      // the bytes are the tunnel's now; no more requests on this connection
      this.exchange = null;
      this.closing = true;
      this.clearHeaderTimer();
      return;
    }
    if (!ex.requestEnded) {
      // the rest of the request body still has to be read past, even if backpressure paused us
      this.socket.resume();
      return;
    }
    this.exchange = null;
    if (this.afterExchange(ex)) {
      this.socket.resume();
      // an upgrade the upstream declined: the next request follows on the same connection
      this.decoder.cancelUpgrade();
      this.decoder.resume();
      this.headerPending();
    }
  }

  /** Decides whether the connection serves another request; closes it when not. */
  private afterExchange(ex: Http1Exchange): boolean {
    if (ex.closeAfter || this.draining || (this.clientEnded && this.decoder.idle)) {
      this.closeSoon();
      return false;
    }
    return !this.closed;
  }
}

function onHeaderTimeout(session: Http1Session): void {
  session.headerTimeout();
}

function onExchangeTimeout(ex: Http1Exchange): void {
  ex.onTimeout();
}

/** One request and its response. */
class Http1Exchange implements Http1ResponseSink {
  private readonly view: Http1View;
  private readonly start0 = performance.now();
  private target: RouteTarget | null = null;
  private cstats: ClusterStats | null = null;
  private endpoint: Endpoint | null = null;
  private upstreamKey = '';
  private conn: Http1Connection | null = null;
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private bodyStreamed = false;
  private reqTrailers: string[] | null = null;
  private timer: NodeJS.Timeout | null = null;
  private attempts = 0;
  private retriedStale = false;
  private upstreamActive = false;
  private outFraming: Framing = { kind: 'none' };
  private upHead: Http1Head | null = null;
  private bytesIn = 0;
  private bytesOut = 0;
  private status = 0;
  private localReason: string | undefined;
  requestEnded = false;
  responseStarted = false;
  finished = false;
  closeAfter = false;
  /** 101: the connection is now a tunnel to the upstream. */
  tunnel = false;
  /** The Upgrade value sent upstream; a 101 opens a tunnel only when there is one. */
  private upgrade: string | undefined = undefined;
  /** The upstream answered 101 to a request that asked for no upgrade it may grant. */
  private unaskedSwitch = false;

  private readonly resolved: Http1Target | string;

  constructor(private readonly session: Http1Session, private readonly cfg: CompiledConfig, private readonly head: Http1Head) {
    const r = resolveTarget(head, cfg.config.http);
    this.resolved = r;
    this.view = typeof r === 'string' ? new Http1View(session, head, '', '') : new Http1View(session, head, r.authority.host, r.target.path);
  }

  private get pstats() { return this.cfg.protocol('http1'); }

  start(): void {
    const { stats } = this.cfg;
    stats.inc(this.pstats.rqTotal);
    stats.inc(this.pstats.rqActive);
    if (this.head.upgrade && this.head.method === 'CONNECT') {
      this.localReply({ status: 501, reason: 'no_route', body: 'CONNECT is not supported\n' });
      return;
    }
    if (typeof this.resolved === 'string') {
      this.cfg.stats.inc(this.pstats.protocolError);
      this.localReply({ status: 400, reason: 'bad_request', body: `${this.resolved}\n` });
      return;
    }
    this.cfg.chain.run(this.view, (reply, target) => (reply ? this.localReply(reply) : this.route(target!)));
  }

  private route(target: RouteTarget): void {
    this.target = target;
    if (target.kind === 'direct') {
      this.localReply({ status: target.status, reason: 'direct_response', body: target.body });
      return;
    }
    // like Envoy's route timeout: from the end of the request, so a slow upload is not an upstream timeout
    if (this.requestEnded) this.armTimer();
    this.connect();
  }

  private armTimer(): void {
    if (this.timer || this.finished || !this.target || this.target.kind === 'direct') return;
    this.timer = setTimeout(onExchangeTimeout, this.target.timeoutMs, this);
  }

  private connect(avoid?: Endpoint): void {
    const target = this.target!;
    if (target.kind === 'direct') return;
    const choice = chooseUpstream(this.cfg, this.session.info, target, avoid);
    if (isLocalReply(choice)) { this.localReply(choice); return; }
    this.endpoint = choice.endpoint;
    this.cstats = choice.cstats;
    this.upstreamKey = choice.key;
    const { host, port } = choice;
    this.attempts++;
    const limits = poolLimits(this.cfg.config, target.kind === 'cluster' ? target.cluster.config : undefined);
    const pool = this.session.rt.pools.http1(host, port, this.upstreamKey, limits);
    pool.acquire((err, conn) => this.onAcquired(err, conn), limits, this.cstats);
  }

  private onAcquired(err: AcquireError | null, conn: Http1Connection | null): void {
    if (this.finished) { if (conn) conn.abandon(); return; }
    if (err || !conn) {
      const t = this.target!;
      const retry = err !== 'overflow' && t.kind === 'cluster' && t.cluster.endpoints.length > 1 && this.attempts < MAX_CONNECT_ATTEMPTS;
      if (retry) { this.connect(this.endpoint ?? undefined); return; }
      if (err === 'overflow') this.localReply({ status: 503, reason: 'overflow', body: 'upstream overflow\n' });
      else if (err === 'dns_failed') this.localReply({ status: 503, reason: 'upstream_dns_failed', body: 'upstream name lookup failed\n' });
      else this.localReply({ status: 503, reason: 'upstream_connect_failed', body: 'upstream connect failed\n' });
      return;
    }
    this.conn = conn;
    this.upstreamActive = true;
    if (this.endpoint) this.endpoint.active++;
    const { stats } = this.cfg;
    stats.inc(this.cstats!.rqTotal);
    stats.inc(this.cstats!.rqActive);
    conn.start(this, this.head.method);
    this.sendHead();
  }

  private sendHead(): void {
    const conn = this.conn!;
    const h = this.head;
    let framing: Framing;
    if (h.chunked) framing = { kind: 'chunked' };
    else if (h.contentLength >= 0) framing = { kind: 'length', length: h.contentLength };
    else framing = { kind: 'none' };
    this.reqFraming = framing;
    const asked = h.upgrade ? this.view.header('upgrade') : undefined;
    const upgrade = forwardedUpgrade(asked);
    this.upgrade = upgrade;
    const r = this.resolved as Http1Target;
    const head = encodeRequestHead({
      method: h.method, target: r.target.forward, host: r.authority.canonical || this.upstreamKey, headers: h.headers,
      connectionTokens: upgrade === asked ? h.connectionTokens : h.connectionTokens.concat(H2C_FIELDS),
      framing, via: this.cfg.config.http.via, upgrade,
    });
    const sock = conn.socket;
    sock.cork();
    sock.write(head, 'latin1');
    for (const b of this.early) this.writeBody(b);
    this.early = [];
    this.earlyBytes = 0;
    if (this.requestEnded) this.writeRequestEnd();
    sock.uncork();
    this.session.socket.resume();
  }

  private reqFraming: Framing = { kind: 'none' };

  private writeBody(chunk: Buffer): boolean {
    const sock = this.conn!.socket;
    this.bodyStreamed = true;
    if (this.reqFraming.kind === 'chunked') {
      // one writev, not three small segments
      const parts = chunkParts(chunk);
      sock.cork();
      sock.write(parts[0]);
      sock.write(parts[1]);
      const ok = sock.write(parts[2]);
      sock.uncork();
      return ok;
    }
    return sock.write(chunk);
  }

  private writeRequestEnd(): void {
    const conn = this.conn!;
    if (this.reqFraming.kind === 'chunked') conn.socket.write(lastChunk(this.reqTrailers));
    conn.requestDone = true;
  }

  onRequestBody(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    if (this.finished || this.responseDoneEarly) return; // answered already: read past the rest
    if (!this.conn) {
      this.early.push(chunk);
      this.earlyBytes += chunk.length;
      if (this.earlyBytes > MAX_EARLY_BODY) this.session.socket.pause();
      return;
    }
    // resumed by onUpstreamDrain (a listener the upstream connection keeps for its whole life)
    if (!this.writeBody(chunk)) this.session.socket.pause();
  }

  onUpstreamDrain(): void {
    if (!this.finished) this.session.socket.resume();
  }

  onDownstreamDrain(): void {
    this.conn?.socket.resume();
  }

  onRequestEnd(trailers: string[] | null): void {
    this.requestEnded = true;
    this.reqTrailers = trailers;
    this.armTimer();
    if (this.conn && !this.finished && !this.responseDoneEarly) this.writeRequestEnd();
  }

  private responseDoneEarly = false;

  // ── upstream response ────────────────────────────────────────────────────

  onResponseHead(h: Http1Head): void {
    if (h.status < 200 && h.status !== 101) {
      // 100 Continue and friends go to a client that speaks HTTP/1.1
      if (this.head.versionMinor === 1) {
        this.session.socket.write(encodeResponseHead({
          status: h.status, reason: h.reason, headers: h.headers, connectionTokens: h.connectionTokens,
          framing: { kind: 'none' }, via: '',
        }), 'latin1');
      }
      return;
    }
    if (h.status === 101 && this.upgrade === undefined) {
      // a tunnel nobody asked for would carry the client's next bytes past the routes
      this.unaskedSwitch = true;
      return;
    }
    this.upHead = h;
    this.status = h.status;
    this.responseStarted = true;
    const method = this.head.method;
    const noBody = method === 'HEAD' || h.status === 204 || h.status === 304 || h.status === 101;
    const v11 = this.head.versionMinor === 1;
    let framing: Framing;
    if (noBody) framing = { kind: 'none' };
    else if (h.contentLength >= 0) framing = { kind: 'length', length: h.contentLength };
    else if (v11) framing = { kind: 'chunked' };
    else framing = { kind: 'close' };
    this.outFraming = framing;
    this.closeAfter = framing.kind === 'close' || !this.head.keepAlive || this.session.isDraining;
    let connection: 'close' | 'keep-alive' | undefined;
    if (this.closeAfter) connection = 'close';
    else if (!v11) connection = 'keep-alive';
    const upgrade = h.status === 101 ? this.view.header('upgrade') ?? headerOf(h, 'upgrade') : undefined;
    this.session.socket.write(encodeResponseHead({
      status: h.status, reason: h.reason, headers: h.headers, connectionTokens: h.connectionTokens, framing,
      via: this.cfg.config.http.via, connection, upgrade, keepLength: noBody && h.status !== 204 ? h.contentLength : undefined,
    }), 'latin1');
  }

  batchStart(): void {
    this.session.socket.cork();
  }

  batchEnd(): void {
    this.session.socket.uncork();
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    const down = this.session.socket;
    let ok: boolean;
    if (this.outFraming.kind === 'chunked') {
      const parts = chunkParts(chunk);
      down.cork();
      down.write(parts[0]);
      down.write(parts[1]);
      ok = down.write(parts[2]);
      down.uncork();
    } else {
      ok = down.write(chunk);
    }
    // resumed by onDownstreamDrain; the pool resumes a connection it takes back
    if (!ok && this.conn) this.conn.socket.pause();
  }

  onResponseEnd(trailers: string[] | null): void {
    if (this.outFraming.kind === 'chunked') this.session.socket.write(lastChunk(trailers));
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.requestDone) {
      // answered before the request body was sent in full: that connection is out of step
      this.responseDoneEarly = true;
      conn.abandon();
    }
    this.finish();
  }

  onUpgrade(up: net.Socket, rest: Buffer): void {
    if (this.unaskedSwitch) {
      this.conn = null;
      up.destroy();
      this.cfg.stats.inc(this.cstats!.rqReset);
      this.localReply({ status: 502, reason: 'upstream_reset', body: 'upstream switched protocols unasked\n' });
      return;
    }
    const session = this.session;
    const down = session.socket;
    this.conn = null;
    this.closeAfter = true;
    this.tunnel = true;
    this.finish();
    down.removeAllListeners('data');
    down.removeAllListeners('end');
    // bytes the client sent after its upgrade request, held by the stopped decoder, go first
    const early = session.takeRemainder();
    if (early.length) up.write(early);
    if (rest.length) down.write(rest);
    down.setTimeout(this.cfg.config.tcp.idleTimeoutMs);
    up.pipe(down);
    down.pipe(up);
    // a clean close lets what is already written drain (pipe passed the FIN on); a reset does not
    up.on('close', (hadError: boolean) => (hadError ? down.destroy() : down.destroySoon()));
    down.on('close', (hadError: boolean) => (hadError ? up.destroy() : up.destroySoon()));
    up.resume();
    down.resume();
  }

  onUpstreamError(kind: 'reset' | 'protocol', started: boolean): void {
    const conn = this.conn;
    this.conn = null;
    if (this.finished) return;
    if (!this.responseStarted) {
      // A keep-alive connection the upstream closed as we sent: safe to try once more on a fresh
      // one when nothing came back and the request can be repeated.
      const stale = kind === 'reset' && !started && conn?.reused && !this.retriedStale && IDEMPOTENT.has(this.head.method) && !this.bodyStreamed;
      if (stale) {
        this.retriedStale = true;
        this.upstreamDone();
        this.connect();
        return;
      }
      this.cfg.stats.inc(this.cstats!.rqReset);
      this.localReply(kind === 'protocol'
        ? { status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' }
        : { status: 503, reason: 'upstream_reset', body: 'upstream connection reset before response\n' });
      return;
    }
    // The response is partly sent: the client must see it cut off, never a clean end.
    this.cfg.stats.inc(this.cstats!.rqReset);
    this.localReason = 'upstream_reset';
    this.session.socket.destroy();
    this.finish();
  }

  /** @internal */
  onTimeout(): void {
    this.timer = null;
    if (this.finished) return;
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqTimeout);
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
    if (!this.responseStarted) {
      this.localReply({ status: 504, reason: 'upstream_timeout', body: 'upstream request timeout\n' });
      return;
    }
    this.localReason = 'upstream_timeout';
    this.session.socket.destroy();
    this.finish();
  }

  /** The downstream connection closed under us. */
  downstreamGone(): void {
    if (this.finished) return;
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
    this.finish();
  }

  /** The request turned out malformed (body framing): give up the upstream side quietly. */
  abort(): void {
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
    if (!this.finished) this.finish();
  }

  private localReply(r: LocalReply): void {
    if (this.finished) return;
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
    this.status = r.status;
    this.localReason = r.reason;
    if (r.reason === 'no_route') this.cfg.stats.inc(this.pstats.noRoute);
    // a request body we did not read yet would have to be read past, and a client that
    // waits for 100-continue never sends it: close rather than guess. A request without a body
    // is complete at its head (the decoder reports its end right after this), so it keeps the connection.
    const h = this.head;
    const bodyLeft = !this.requestEnded && (h.chunked || h.contentLength > 0);
    this.closeAfter = bodyLeft || !h.keepAlive || this.session.isDraining;
    this.responseStarted = true;
    this.session.socket.write(encodeLocalReply(r.status, r.reason, r.body ?? '', this.closeAfter, h.method === 'HEAD'));
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const { stats } = this.cfg;
    stats.dec(this.pstats.rqActive);
    // a response the upstream (or its timeout) cut off is a reset or a timeout, not also a 2xx
    const cut = this.upHead !== null && (this.localReason === 'upstream_reset' || this.localReason === 'upstream_timeout');
    const cls = cut ? 0 : (this.status / 100) | 0;
    if (cls) stats.inc(this.pstats.rqClass[cls]);
    if (this.cstats && this.upHead && cls) stats.inc(this.cstats.rqClass[cls]);
    stats.requestDone('http1', (performance.now() - this.start0) / 1000, this.bytesIn, this.bytesOut);
    this.upstreamDone();
    if (this.cfg.accessLog.enabled) this.log();
    if (!this.session.closed) this.session.exchangeFinished(this);
  }

  /** Undo the in-flight counts taken when a connection was acquired. */
  private upstreamDone(): void {
    if (!this.upstreamActive) return;
    this.upstreamActive = false;
    this.cfg.stats.dec(this.cstats!.rqActive);
    if (this.endpoint) this.endpoint.active--;
  }

  private log(): void {
    const v = this.view;
    this.cfg.accessLog.write({
      protocol: 'http1', direction: v.direction, listener: v.listener, method: v.method, path: v.path, service: v.service,
      status: this.status, reason: this.localReason, route: this.target?.route, upstream: this.upstreamKey || undefined,
      bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs: Math.round((performance.now() - this.start0) * 1000) / 1000,
      source: v.source.address,
    });
  }
}

function headerOf(h: Http1Head, name: string): string | undefined {
  for (let i = 0; i < h.headers.length; i += 2) if (h.headers[i].toLowerCase() === name) return h.headers[i + 1];
  return undefined;
}
