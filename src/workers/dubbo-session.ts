/**
 * A downstream Dubbo 2 connection: split frames, answer heartbeats, run each call through
 * the filter chain (the same router as HTTP: service = interface, method = method name,
 * headers = attachments) and forward it, multiplexed, to a provider connection from the pool.
 *
 *   socket ─▶ DubboFrameDecoder ─▶ DubboCall ─▶ filter chain ─▶ DubboPool ─▶ provider
 *   socket ◀──────── response (caller's id restored by the pool) ◀──────────┘
 *
 * Calls are independent: many are in flight at once, answered in whatever order the
 * providers answer. Every refused or failed two-way call gets a Dubbo response with a
 * status byte, so the caller's client raises an error instead of waiting for its timeout.
 * A malformed frame (bad magic, oversized body, unknown serialization) closes this connection only.
 *
 * Drain (SIGTERM, POST /drain): as a Dubbo provider does on shutdown, Sluice sends the consumer a
 * READONLY event, so that it sends no new calls here, and a heartbeat right behind it as a fence:
 * the consumer answers the heartbeat after it has seen the event, so once the answer arrives every
 * call it sent before has arrived too. Calls received are answered; the connection closes when
 * none is left and the fence is passed (or READONLY_FENCE_MS went by without an answer).
 */
import type net from 'node:net';
import {
  DubboFrameDecoder, DubboRequest, DubboStatus, encodeHeartbeatRequest, encodeHeartbeatResponse, encodeReadonlyEvent,
  encodeResponse, isHeartbeat, localReply, type DubboFrame, type DubboProtocolError,
} from '../codecs/dubbo';
import type { LocalReply } from '../filters/filter';
import type { Peer, RequestView } from '../filters/request-view';
import type { RouteTarget } from '../filters/router';
import type { ClusterStats, Endpoint } from '../upstream/cluster';
import type { DubboCallSink, DubboFailure, DubboPoolLimits, DubboUpstreamCall } from '../upstream/dubbo-pool';
import { chooseUpstream, isLocalReply, type ConnectionInfo } from './connection';
import type { CompiledConfig, WorkerRuntime } from './runtime';

/** Two-way calls in flight per downstream connection; beyond it calls are refused (status 100). */
export const MAX_DUBBO_CALLS_IN_FLIGHT = 1000;
const MAX_CONNECT_ATTEMPTS = 3;
/**
 * How long a draining connection waits for the consumer to answer the heartbeat sent behind the READONLY
 * event before it closes (once idle) anyway: consumers that do not answer heartbeats must not hold a drain
 * until drain.timeoutMs.
 */
export const READONLY_FENCE_MS = 2000;
/** Ids of the two requests Sluice sends a consumer on drain (Sluice's own id space towards the consumer). */
const READONLY_EVENT_ID = 0x7fff_fffe;
const FENCE_ID = 0x7fff_ffff;
const FENCE_NONE = 0;
const FENCE_WAITING = 1;
const FENCE_PASSED = 2;

/** Status byte for each reason Sluice answers a call itself. */
function statusFor(r: LocalReply): number {
  switch (r.reason) {
    case 'no_route':
    case 'no_healthy_upstream': return DubboStatus.SERVICE_NOT_FOUND;
    case 'rate_limited':
    case 'overflow': return DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR;
    case 'denied': return DubboStatus.BAD_REQUEST;
    case 'upstream_timeout': return DubboStatus.SERVER_TIMEOUT;
    case 'upstream_connect_failed':
    case 'upstream_dns_failed': return DubboStatus.SERVICE_ERROR;
    case 'upstream_reset': return DubboStatus.SERVER_ERROR;
    default: return r.status < 500 && r.status >= 400 ? DubboStatus.BAD_REQUEST : DubboStatus.SERVICE_ERROR;
  }
}

/** Response class (as for HTTP) of a Dubbo status, for the rq_xx counters. */
function classOf(status: number): number {
  if (status === DubboStatus.OK) return 2;
  if (status === DubboStatus.BAD_REQUEST || status === DubboStatus.CLIENT_ERROR || status === DubboStatus.SERVICE_NOT_FOUND) return 4;
  return 5;
}

class DubboView implements RequestView {
  readonly protocol = 'dubbo' as const;
  readonly service: string;
  readonly method: string;
  readonly path: string;
  constructor(private readonly session: DubboSession, readonly req: DubboRequest) {
    this.service = req.service;
    this.method = req.method;
    this.path = `/${req.service}/${req.method}`;
  }
  get direction() { return this.session.info.listener.config.direction; }
  get listener() { return this.session.info.listener.config.name; }
  get destination() { return this.session.info.dst; }
  get source(): Peer { return this.session.peer(); }
  header(name: string): string | undefined {
    // scanAttachments() succeeded before the chain ran: the accessors no longer throw
    const v = this.req.attachment(name);
    if (v !== undefined) return v;
    if (name === 'version') return this.req.version || undefined;
    if (name === 'interface' || name === 'path') return this.req.service;
    return undefined;
  }
}

export class DubboSession {
  private decoder!: DubboFrameDecoder;
  private readonly calls = new Set<DubboCall>();
  private peerCache: Peer | null = null;
  private draining = false;
  /** READONLY sent: FENCE_WAITING until the consumer answers the heartbeat behind it. */
  private fence = FENCE_NONE;
  private fenceTimer: NodeJS.Timeout | null = null;
  private inputEnded = false;
  private maxCalls = MAX_DUBBO_CALLS_IN_FLIGHT;
  closed = false;

  constructor(readonly rt: WorkerRuntime, readonly socket: net.Socket, readonly info: ConnectionInfo) {}

  start(): void {
    const dubbo = this.rt.current().config.dubbo;
    this.maxCalls = dubbo.maxCallsPerConnection;
    this.decoder = new DubboFrameDecoder({
      onFrame: (f) => this.onFrame(f),
      onError: (e) => this.onDecodeError(e),
    }, { maxBodyBytes: dubbo.maxBodyBytes, serializations: dubbo.serializations });
    const s = this.socket;
    s.on('data', (d: Buffer) => this.onData(d));
    s.on('end', () => this.onEnd());
    s.on('close', () => this.onClose());
    s.on('timeout', () => { if (this.calls.size === 0) s.destroy(); });
    s.setTimeout(this.rt.current().config.http.idleTimeoutMs);
    this.rt.connections.add(this);
    if (this.rt.draining) this.drain();
  }

  peer(): Peer {
    return (this.peerCache ??= { address: this.socket.remoteAddress ?? '', port: this.socket.remotePort ?? 0 });
  }

  get inFlight(): number {
    return this.calls.size;
  }

  private onData(d: Buffer): void {
    try {
      this.decoder.push(d);
    } catch (err) {
      // a bug of ours, not the peer's: lose this connection, never the worker
      this.rt.logError(err as Error, 'dubbo session');
      this.socket.destroy();
    }
  }

  private onEnd(): void {
    // calls already read are still answered; then the connection closes
    this.decoder.destroy();
    this.inputEnded = true;
    this.draining = true;
    this.closeIfDone();
  }

  private onClose(): void {
    this.closed = true;
    if (this.fenceTimer) { clearTimeout(this.fenceTimer); this.fenceTimer = null; }
    this.decoder?.destroy();
    this.rt.connections.delete(this);
    for (const c of [...this.calls]) c.downstreamGone();
  }

  private onDecodeError(err: DubboProtocolError): void {
    const cfg = this.rt.current();
    cfg.stats.inc(cfg.protocol('dubbo').protocolError);
    const h = err.header;
    if (h && h.isRequest && h.twoWay && !h.isEvent) this.write(localReply(h, err.replyStatus, err.message));
    this.closeSoon();
  }

  private onFrame(f: DubboFrame): void {
    if (!f.isRequest) {
      // the consumer's answer to the heartbeat behind the READONLY event; nothing else is asked of it
      if (f.isEvent && this.fence === FENCE_WAITING && f.safeId === FENCE_ID) this.fencePassed();
      return;
    }
    if (f.isEvent) {
      if (isHeartbeat(f) && f.twoWay) this.write(encodeHeartbeatResponse(f));
      return;
    }
    const cfg = this.rt.current();
    if (this.calls.size >= this.maxCalls) {
      const p = cfg.protocol('dubbo');
      cfg.stats.inc(p.rqTotal);
      cfg.stats.inc(p.rqClass[5]);
      if (f.twoWay) this.write(localReply(f, DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR, 'sluice: too many calls in flight on this connection'));
      return;
    }
    new DubboCall(this, cfg, f).start();
  }

  /** @internal */
  track(c: DubboCall): void { this.calls.add(c); }

  /** @internal */
  callFinished(c: DubboCall): void {
    this.calls.delete(c);
    this.closeIfDone();
  }

  private waitingForUpstream = false;

  /**
   * A call could not be written at once (its provider connection is backed up, connecting or on probation):
   * stop reading calls until it is out (one listener, not one per call).
   */
  pauseFor(call: DubboUpstreamCall): void {
    if (this.waitingForUpstream) return;
    this.waitingForUpstream = true;
    this.socket.pause();
    call.onDrain(() => {
      this.waitingForUpstream = false;
      if (!this.closed) this.socket.resume();
    });
  }

  write(buf: Buffer): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(buf);
  }

  closeSoon(): void {
    if (this.closed) return;
    this.socket.end();
    this.socket.destroySoon?.();
  }

  drain(): void {
    this.draining = true;
    if (this.fence === FENCE_NONE && !this.inputEnded && !this.closed && !this.socket.destroyed) {
      this.fence = FENCE_WAITING;
      this.write(encodeReadonlyEvent(READONLY_EVENT_ID));
      this.write(encodeHeartbeatRequest(FENCE_ID, true));
      this.fenceTimer = setTimeout(onFenceTimeout, READONLY_FENCE_MS, this);
    }
    this.closeIfDone();
  }

  /** Dubbo has no idle connection to keep for the drain period: READONLY already sends consumers elsewhere. */
  closeIdle(): void {
    this.drain();
  }

  /** @internal the consumer answered the heartbeat behind the READONLY event, or did not in time. */
  fencePassed(): void {
    if (this.fence !== FENCE_WAITING) return;
    this.fence = FENCE_PASSED;
    if (this.fenceTimer) { clearTimeout(this.fenceTimer); this.fenceTimer = null; }
    this.closeIfDone();
  }

  private closeIfDone(): void {
    if (this.draining && this.calls.size === 0 && (this.fence !== FENCE_WAITING || this.inputEnded)) this.closeSoon();
  }
}

function onFenceTimeout(s: DubboSession): void {
  s.fencePassed();
}

function onCallTimeout(c: DubboCall): void {
  c.onTimeout();
}

/** One call and its response. */
class DubboCall implements DubboCallSink {
  private target: RouteTarget | null = null;
  private cstats: ClusterStats | null = null;
  private endpoint: Endpoint | null = null;
  private upstreamKey = '';
  private upstream: DubboUpstreamCall | null = null;
  private timer: NodeJS.Timeout | null = null;
  private attempts = 0;
  private upstreamActive = false;
  private status = 0;
  /** Bytes of the response frame passed back to the caller. */
  private bytesOut = 0;
  private localReason: string | undefined;
  private view: DubboView | null = null;
  private readonly start0 = performance.now();
  finished = false;

  constructor(private readonly session: DubboSession, private readonly cfg: CompiledConfig, private readonly frame: DubboFrame) {}

  private get pstats() { return this.cfg.protocol('dubbo'); }

  start(): void {
    const { stats } = this.cfg;
    stats.inc(this.pstats.rqTotal);
    stats.inc(this.pstats.rqActive);
    if (this.frame.twoWay) this.session.track(this);
    let req: DubboRequest;
    try {
      req = DubboRequest.fromFrame(this.frame);
    } catch (err) {
      this.badRequest(err as Error);
      return;
    }
    const scanErr = req.scanAttachments();
    if (scanErr) { this.badRequest(scanErr); return; }
    // A provider finds the service to run by the `path` attachment, which overrides the service
    // path written before the arguments (DecodeableRpcInvocation puts the attachments over it).
    // Routes see the latter, so a call naming two services would meet the routes of one and run
    // the other: refused, as HTTP/2 refuses a host beside :authority that names another.
    const path = req.attachment('path');
    if (path !== undefined && path !== req.service) {
      this.badRequest(new Error(`the path attachment ${JSON.stringify(path.slice(0, 200))} names another service than the call (${JSON.stringify(req.service.slice(0, 200))})`));
      return;
    }
    this.view = new DubboView(this.session, req);
    this.cfg.chain.run(this.view, (reply, target) => (reply ? this.localReply(reply) : this.route(target!)));
  }

  private badRequest(err: Error): void {
    // the frame itself was well delimited: only this call is refused, the connection stays
    this.cfg.stats.inc(this.pstats.protocolError);
    this.reply(DubboStatus.BAD_REQUEST, `sluice: bad request body: ${err.message}`, 'bad_request');
  }

  private route(target: RouteTarget): void {
    this.target = target;
    if (target.kind === 'direct') {
      if (target.status >= 200 && target.status < 300) {
        this.status = DubboStatus.OK;
        this.localReason = 'direct_response';
        if (this.frame.twoWay) this.session.write(encodeResponse({ id: this.frame, value: target.body }));
        this.finish();
        return;
      }
      this.localReply({ status: target.status, reason: 'direct_response', body: target.body });
      return;
    }
    if (this.frame.twoWay) this.timer = setTimeout(onCallTimeout, target.timeoutMs, this);
    this.connect();
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
    const c = this.cfg.config;
    const cluster = target.kind === 'cluster' ? target.cluster.config : undefined;
    const limits: DubboPoolLimits = {
      connectTimeoutMs: cluster?.connectTimeoutMs ?? c.tcp.connectTimeoutMs,
      idleTimeoutMs: c.http.upstreamIdleTimeoutMs,
      maxBodyBytes: c.dubbo.maxBodyBytes,
      serializations: c.dubbo.serializations,
      probeAfterMs: c.dubbo.upstreamProbeAfterMs,
      probeTimeoutMs: c.dubbo.upstreamProbeTimeoutMs,
      maxConsecutiveTimeouts: c.dubbo.upstreamMaxConsecutiveTimeouts,
    };
    const pool = this.session.rt.pools.dubbo(host, port, this.upstreamKey);
    const { stats } = this.cfg;
    stats.inc(this.cstats.rqTotal);
    stats.inc(this.cstats.rqActive);
    this.upstreamActive = true;
    if (this.endpoint) this.endpoint.active++;
    const f = this.frame;
    const call = pool.send(f.raw, f.twoWay, f.idHi, f.idLo, f.twoWay ? this : null, limits, this.cstats);
    // the call waits in the pool or behind the socket's buffer: read no more calls until it is out (one-way ones too)
    if (!call.writable) this.session.pauseFor(call);
    if (!f.twoWay) {
      // one-way: nothing comes back; done once handed to the pool
      this.finish();
      return;
    }
    this.upstream = call;
  }

  onResponse(raw: Buffer, status: number): void {
    if (this.finished) return;
    this.upstream = null;
    this.status = status;
    this.bytesOut = raw.length;
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqClass[classOf(status)]);
    this.session.write(raw);
    this.finish();
  }

  onFailure(why: DubboFailure): void {
    this.upstream = null;
    if (this.finished) return;
    if (why === 'connect_failed' || why === 'dns_failed') {
      this.upstreamDone();
      const t = this.target!;
      if (t.kind === 'cluster' && t.cluster.endpoints.length > 1 && this.attempts < MAX_CONNECT_ATTEMPTS) {
        this.connect(this.endpoint ?? undefined);
        return;
      }
      this.localReply(why === 'dns_failed'
        ? { status: 503, reason: 'upstream_dns_failed', body: `upstream name lookup failed (${this.upstreamKey})` }
        : { status: 503, reason: 'upstream_connect_failed', body: `upstream connect failed (${this.upstreamKey})` });
      return;
    }
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqReset);
    if (why === 'bad_response') {
      this.reply(DubboStatus.BAD_RESPONSE, `sluice: invalid response from upstream ${this.upstreamKey}`, 'upstream_reset');
      return;
    }
    this.localReply({ status: 503, reason: 'upstream_reset', body: `upstream connection lost (${this.upstreamKey})` });
  }

  /** @internal */
  onTimeout(): void {
    this.timer = null;
    if (this.finished) return;
    // told apart from a cancel: a timeout counts against the upstream connection's health
    const up = this.upstream;
    this.upstream = null;
    up?.timedOut();
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqTimeout);
    this.cfg.stats.inc(this.pstats.timeout);
    this.localReply({ status: 504, reason: 'upstream_timeout', body: `upstream timeout after ${this.target && 'timeoutMs' in this.target ? this.target.timeoutMs : 0} ms` });
  }

  downstreamGone(): void {
    if (this.finished) return;
    this.finish();
  }

  private localReply(r: LocalReply): void {
    if (r.reason === 'no_route') this.cfg.stats.inc(this.pstats.noRoute);
    this.reply(statusFor(r), `sluice: ${r.reason}${r.body ? `: ${r.body.trim()}` : ''}`, r.reason);
  }

  private reply(status: number, message: string, reason: string): void {
    if (this.finished) return;
    this.status = status;
    this.localReason = reason;
    if (this.frame.twoWay) this.session.write(localReply(this.frame, status, message));
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const up = this.upstream;
    this.upstream = null;
    up?.cancel();
    const { stats } = this.cfg;
    stats.dec(this.pstats.rqActive);
    if (this.status) stats.inc(this.pstats.rqClass[classOf(this.status)]);
    const seconds = (performance.now() - this.start0) / 1000;
    stats.requestDone('dubbo', seconds, this.frame.raw.length, this.bytesOut);
    this.upstreamDone();
    const v = this.view;
    if (v) this.session.rt.rpcStats?.record(v.service, v.method, this.frame.twoWay ? this.status : 'oneway', seconds);
    if (this.cfg.accessLog.enabled) this.log();
    this.session.callFinished(this);
  }

  private upstreamDone(): void {
    if (!this.upstreamActive) return;
    this.upstreamActive = false;
    this.cfg.stats.dec(this.cstats!.rqActive);
    if (this.endpoint) this.endpoint.active--;
  }

  private log(): void {
    const v = this.view;
    const s = this.session;
    this.cfg.accessLog.write({
      protocol: 'dubbo', direction: s.info.listener.config.direction, listener: s.info.listener.config.name,
      method: v?.method ?? '', path: v?.path ?? '', service: v?.service ?? '',
      status: this.status, reason: this.localReason, route: this.target?.route, upstream: this.upstreamKey || undefined,
      bytesIn: this.frame.raw.length, bytesOut: 0, durationMs: Math.round((performance.now() - this.start0) * 1000) / 1000,
      source: s.peer().address,
    });
  }
}
