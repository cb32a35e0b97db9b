/**
 * A downstream Dubbo 2 connection: split frames, answer heartbeats, run each call through
 * the filter chain (the same router as HTTP: service = interface, method = method name,
 * headers = attachments) and forward it, multiplexed, to a provider connection from the pool.
 *
 *   socket ─▶ DubboFrameDecoder ─▶ DubboCall ─▶ filter chain ─▶ DubboPool ─▶ provider
 *   socket ◀──────── response (caller's id restored by the pool) ◀──────────┘
 *
 * A route's response header edits are made to the answer's attachment map, where the consumer
 * reads one (DubboResponse.withAttachments); other answers go as the provider wrote them.
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
  DubboFrame, DubboFrameDecoder, DubboProtocolError, DubboRequest, DubboResponse, DubboStatus, encodeHeartbeatRequest, encodeHeartbeatResponse,
  encodeReadonlyEvent, encodeResponse, isHeartbeat, localReply, parseHeader,
} from '.';
import { Exchange, type AttemptFactory, type Downstream, type ResponseHead } from '../../exchange/exchange';
import type { HeaderOps } from '../../exchange/filter';
import type { LocalReply, OutcomeClass } from '../../exchange/outcome';
import type { Peer, RequestView } from '../../exchange/request-view';
import type { DubboUpstreamCall } from './dubbo-pool';
import { DubboAttempt, type DubboCallForm } from './dubbo-upstream';
import { callerOf, type CompiledConfig, type ConnectionInfo, type WorkerRuntime } from '../../worker/runtime';
import type { CompiledFallback } from '../../protection/fallback';
import type { TurnEnd } from '../../worker/turn-end';
import { HeldWrites } from '../../worker/held-writes';
import type { ConnectionList, Listed } from '../../worker/connection-list';

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
    // what a Dubbo provider answers when its own filter chain refuses a call (TokenFilter's
    // "Forbid invoke remote service"): HeaderExchangeHandler turns the exception into
    // SERVICE_ERROR with its message. BAD_REQUEST is Dubbo's "could not decode the request", which
    // would send whoever reads the consumer's error after a broken client instead of a policy.
    case 'denied': return DubboStatus.SERVICE_ERROR;
    case 'upstream_timeout': return DubboStatus.SERVER_TIMEOUT;
    case 'upstream_connect_failed':
    case 'upstream_dns_failed': return DubboStatus.SERVICE_ERROR;
    case 'upstream_reset': return r.status === 502 ? DubboStatus.BAD_RESPONSE : DubboStatus.SERVER_ERROR;
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
  readonly authority = '';
  constructor(private readonly session: DubboSession, readonly req: DubboRequest) {
    this.service = req.service;
    // a generic call is routed by the method it invokes
    this.method = req.invokedMethod;
    this.path = `/${req.service}/${this.method}`;
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
  headerValues(name: string): string[] {
    const v = this.header(name);
    return v === undefined ? [] : [v];
  }
}

export class DubboSession implements TurnEnd {
  private decoder!: DubboFrameDecoder;
  private readonly calls = new Set<DubboCallDownstream>();
  private peerCache: Peer | null = null;
  private draining = false;
  /** READONLY sent: FENCE_WAITING until the consumer answers the heartbeat behind it. */
  private fence = FENCE_NONE;
  private fenceTimer: NodeJS.Timeout | null = null;
  private inputEnded = false;
  private maxCalls = MAX_DUBBO_CALLS_IN_FLIGHT;
  /** Frames for the consumer written in this turn of the event loop, sent together at its end (atTurnEnd). */
  private readonly held = new HeldWrites(this);
  closed = false;
  /** Its links in the worker's list of open connections (src/worker/connection-list.ts). */
  connPrev: Listed | null = null;
  connNext: Listed | null = null;
  connList: ConnectionList<Listed> | null = null;

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
    const i = this.info;
    return (this.peerCache ??= callerOf(this.socket, i));
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
    for (const c of [...this.calls]) c.x.onDownstreamGone();
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
    let req: DubboRequest;
    let bad: Error | null = null;
    try {
      req = DubboRequest.fromFrame(f);
      bad = req.scanAttachments();
      // A provider finds the service to run by the `path` attachment, which overrides the service
      // path written before the arguments (DecodeableRpcInvocation puts the attachments over it).
      // Routes see the latter, so a call naming two services would meet the routes of one and run
      // the other: refused, as HTTP/2 refuses a host beside :authority that names another.
      if (bad === null) void req.invokedMethod; // read now: a bad first argument refuses the call here
      const path = bad === null ? req.attachment('path') : undefined;
      if (path !== undefined && path !== req.service) {
        bad = new Error(`the path attachment ${JSON.stringify(path.slice(0, 200))} names another service than the call (${JSON.stringify(req.service.slice(0, 200))})`);
      }
    } catch (err) {
      bad = err as Error;
      req = null as unknown as DubboRequest;
    }
    if (bad) {
      // the frame itself was well delimited: only this call is refused, the connection stays
      const p = cfg.protocol('dubbo');
      cfg.stats.inc(p.rqTotal);
      cfg.stats.inc(p.protocolError);
      cfg.stats.inc(p.rqClass[4]);
      cfg.stats.requestDone('dubbo', 0, f.raw.length, 0);
      if (f.twoWay) this.write(localReply(f, DubboStatus.BAD_REQUEST, `sluice: bad request body: ${bad.message}`));
      return;
    }
    const call = new DubboCallDownstream(this, cfg, f, req);
    if (f.twoWay) this.calls.add(call);
    call.x.start();
  }

  /** @internal */
  callFinished(c: DubboCallDownstream): void {
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

  /**
   * A frame for the consumer. Every answer of one turn of the event loop (a provider's read
   * carries many) goes out in one write at its end (turn-end.ts), in the order written here;
   * whatever ends the socket sends them first (closeSoon).
   */
  write(buf: Buffer): void {
    if (!this.closed && !this.socket.destroyed) this.held.push(buf);
  }

  /** @internal sends the frames held in this turn (none if the consumer is gone). */
  atTurnEnd(): void {
    this.held.endTurn(this.socket);
  }

  closeSoon(): void {
    if (this.closed) return;
    this.held.flushTo(this.socket);
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

/** One call: the exchange's downstream side, in Dubbo form. */
class DubboCallDownstream implements Downstream, DubboCallForm {
  readonly x: Exchange;
  readonly view: DubboView;
  readonly upstreams = DUBBO_UPSTREAMS;
  readonly requestEnded = true;
  readonly request: DubboCallForm = this;

  get identityEdits(): HeaderOps | null { return this.session.info.identityEdits ?? null; }
  get countPeer(): boolean { return this.session.info.countPeer === true; }

  constructor(private readonly session: DubboSession, cfg: CompiledConfig, readonly frame: DubboFrame, readonly req: DubboRequest) {
    this.view = new DubboView(session, req);
    this.x = new Exchange(cfg, this);
    this.x.countFrames(frame.raw.length, 0);
  }

  pauseFor(call: DubboUpstreamCall): void {
    this.session.pauseFor(call);
  }

  consumed(): void {}
  pauseRequest(): void {}
  resumeRequest(): void {}

  respond(head: ResponseHead, _end: boolean, edits: HeaderOps[] | null): void {
    let raw = head.form as Buffer;
    if (edits) raw = withResponseEdits(raw, edits, this.req.dubboVersion);
    this.x.countFrames(0, raw.length);
    this.session.write(raw);
  }

  write(): boolean { return true; }
  trailers(): void {}

  abort(): void {
    // a Dubbo answer is one frame: nothing is ever cut off half way
  }

  localReply(r: LocalReply): number {
    const status = r.dubboStatus ?? statusFor(r);
    const message = status === DubboStatus.BAD_RESPONSE && r.reason === 'upstream_reset'
      ? 'sluice: invalid response from upstream'
      : `sluice: ${r.reason}${r.body ? `: ${r.body.trim()}` : ''}${r.retryAfter !== undefined ? ` (retry after ${r.retryAfter}s)` : ''}`;
    if (this.frame.twoWay) this.session.write(localReply(this.frame, status, message));
    return status;
  }

  /** A route's fallback: a normal return of its value to the consumer's stub. */
  fallback(f: CompiledFallback): number | undefined {
    if (!f.dubbo) return undefined;
    if (this.frame.twoWay) this.session.write(encodeResponse({ id: this.frame, value: f.dubbo.value, requestDubboVersion: this.req.dubboVersion }));
    return DubboStatus.OK;
  }

  /** A 2xx direct response is a normal return of its body (a string) to the consumer's stub. */
  directSuccess(_status: number, body: string): number {
    if (this.frame.twoWay) this.session.write(encodeResponse({ id: this.frame, value: body }));
    return DubboStatus.OK;
  }

  done(): void {
    this.session.callFinished(this);
  }

  statusClass(status: number): number {
    return status === 0 ? 0 : classOf(status);
  }

  classify(status: number): OutcomeClass {
    return classifyDubboStatus(status);
  }
}

/**
 * A response with header edits applied to its attachments. A response that cannot carry them
 * (an error status, a consumer too old for response attachments) or whose body cannot be read
 * goes as it came: the edits are the route's wish, the answer is the provider's.
 */
function withResponseEdits(raw: Buffer, edits: readonly HeaderOps[], requestDubboVersion: string): Buffer {
  const set: Array<readonly [string, string]> = [];
  const remove: string[] = [];
  for (const e of edits) { set.push(...e.set); remove.push(...e.remove); }
  const h = parseHeader(raw);
  const frame = new DubboFrame(raw, raw[2], h.status, h.idHi, h.idLo, h.bodyLength);
  try {
    return DubboResponse.fromFrame(frame).withAttachments(set, remove, requestDubboVersion) ?? raw;
  } catch (err) {
    if (err instanceof DubboProtocolError) return raw;
    throw err;
  }
}

/** Dubbo statuses as health and limiters see them (who is at fault). */
function classifyDubboStatus(status: number): OutcomeClass {
  switch (status) {
    case DubboStatus.OK: return 'success';
    case DubboStatus.BAD_REQUEST:
    case DubboStatus.CLIENT_ERROR:
    case DubboStatus.CLIENT_TIMEOUT:
    case DubboStatus.SERVICE_NOT_FOUND: return 'caller_error';
    case DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR: return 'overloaded';
    default: return 'upstream_error';
  }
}

/** How a Dubbo call reaches a provider: a Dubbo attempt, always. */
const DUBBO_UPSTREAMS: AttemptFactory = {
  open: (x, to, sink) => new DubboAttempt(x, to, sink),
};
