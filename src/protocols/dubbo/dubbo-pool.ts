/**
 * Multiplexed Dubbo 2 connections to one endpoint, owned by one worker.
 *
 *   session A ─┐                                   ┌─▶ DubboUpstream #1 ─▶ provider     serving
 *   session B ─┼──── DubboPool.send ─▶ pick ───────┼─▶ DubboUpstream #2                only under load, or
 *   session C ─┘  rewriteId(caller id → upstream)  │                                   while #1 is on probation
 *              ◀─ rewriteId(upstream id → caller)  └── DubboUpstream #0                retired: takes no calls,
 *                                                                                      closes when its calls end
 *
 * Every call forwarded gets a fresh id on the connection that carries it; the response is
 * matched by that id, its bytes get the caller's id back, and go to the caller's sink.
 *
 * A call is written to its connection's socket only while the socket has nothing of its own
 * buffered (`writableLength === 0`): otherwise it waits in the connection's queue, in userland,
 * where it can still move. Bytes handed to a socket cannot be taken back, and a call in the
 * kernel's buffer may have reached the provider, so a written call stays where it is (Dubbo
 * calls are not retried once sent); a queued one has certainly not been sent. The calls (and
 * heartbeats) written in one turn of the event loop go to the socket together at its end, in one
 * write (src/worker/held-writes.ts): from then on they are sent, even while still held.
 *
 *   call:  queued (in the pool: can move) ──write──▶ sent (pending its response) ──▶ done
 *
 * Connection health (thresholds from `dubbo.*` in the config, defaults below):
 * - Probe: while calls are pending or queued, a connection that received nothing for
 *   `probeAfterMs` (1 s) sends a heartbeat, and idle connections send one every 30 s. Until bytes
 *   come back the connection is on probation: it writes no new calls (they queue, and `pick`
 *   opens the second connection if there is room), as Finagle's mux failure detector marks a
 *   session busy while its ping is unanswered. Any byte received ends the probation;
 *   nothing within `probeTimeoutMs` (2 s) marks it unhealthy. A provider answers heartbeats on
 *   its I/O thread even when its business threads are slow, so silence means the connection
 *   itself is stuck (a peer that stopped reading it, a decoder that died, a half-dead path).
 * - Timeouts: `maxConsecutiveTimeouts` (3) calls in a row that time out on a connection, with no
 *   response to any call in between, also mark it unhealthy, even if heartbeats are answered (a
 *   provider that runs one connection's calls in order, stuck behind one of them).
 * - Unhealthy: the connection is retired and counted (`sluice_upstream_cx_replaced_total`): it
 *   takes no new calls, its queued calls move to another connection (opened if needed;
 *   `sluice_upstream_rq_moved_total`), the callers paused on it resume, and it closes once the
 *   calls written to it have been answered or have timed out. Calls written to it before it
 *   was found out (at most `probeAfterMs` of them after the last byte it sent) cannot move.
 *
 * A connection that fails before it connects fails its calls as `connect_failed` (none was
 * sent); one lost later fails its written calls as `reset`, and moves its queued ones once.
 */
import type net from 'node:net';
import {
  DubboFrameDecoder, encodeHeartbeatRequest, encodeHeartbeatResponse, isHeartbeat, rewriteIdParts,
  type DubboFrame, type DubboProtocolError,
} from '.';
import { log } from '../../log';
import type { Stats } from '../../stats/stats';
import type { ClusterStats } from '../../upstream/cluster';
import { dial, isDnsFailure, type DialOptions } from '../../upstream/dial';
import type { TurnEnd } from '../../worker/turn-end';
import { HeldWrites } from '../../worker/held-writes';

export const DUBBO_HEARTBEAT_MS = 30_000;
/** Connections per endpoint per worker, not counting retired ones; a second opens only when the first is busy or on probation. */
const MAX_CONNECTIONS = 2;
/** Calls in flight on the least busy connection before a second connection is opened. */
const SPREAD_AT = 64;
/** Upstream ids stay positive signed 32-bit numbers (every Java client can read them back). */
const MAX_ID = 0x7fff_ffff;

/** Defaults of the health thresholds (the schema's defaults for dubbo.upstream*; see the top of this file). */
export const DEFAULT_PROBE_AFTER_MS = 1000;
export const DEFAULT_PROBE_TIMEOUT_MS = 2000;
export const DEFAULT_MAX_CONSECUTIVE_TIMEOUTS = 3;

/**
 * `connect_failed`: the call never reached the provider (no connection, or it was still queued when
 * the connection was lost for good): safe to try elsewhere; `dns_failed` the same, the provider's
 * name did not resolve. `reset`: lost after it was written.
 */
export type DubboFailure = 'connect_failed' | 'dns_failed' | 'reset' | 'bad_response';

export interface DubboCallSink {
  /** The response frame, its id already the caller's. `raw` may share memory with a socket chunk. */
  onResponse(raw: Buffer, status: number): void;
  onFailure(why: DubboFailure): void;
}

export interface DubboPoolLimits {
  connectTimeoutMs: number;
  /** Close a connection with no calls in flight after this long without a call. */
  idleTimeoutMs: number;
  maxBodyBytes?: number;
  /** Serialization ids accepted in responses (the same set as from callers). */
  serializations?: readonly number[];
  /** dubbo.upstreamProbeAfterMs: with calls outstanding and nothing received for this long, send a heartbeat. */
  probeAfterMs?: number;
  /** dubbo.upstreamProbeTimeoutMs: nothing received this long after a heartbeat: unhealthy. */
  probeTimeoutMs?: number;
  /** dubbo.upstreamMaxConsecutiveTimeouts: this many calls in a row time out with no response in between: unhealthy. */
  maxConsecutiveTimeouts?: number;
}

const QUEUED = 0;
const SENT = 1;
const DONE = 2;

/**
 * One call in the pool. `cancel` (caller gone) and `timedOut` (the caller's timer fired) drop it: a
 * late response is dropped. Only a timeout counts against the connection's health.
 */
export class DubboUpstreamCall {
  /** @internal the connection it is queued on or was written to */
  conn: DubboUpstream | null = null;
  /** @internal */
  state = QUEUED;
  /** @internal id on `conn` once written */
  upstreamId = 0;
  /** @internal moved once already (a call moves at most twice: off a retired and off a lost connection) */
  moved = false;
  /**
   * The call went to the socket at once. False: it waits, in the pool or behind the socket's own buffer;
   * a caller that keeps sending should wait for `onDrain`.
   */
  writable = true;
  private blocked = false;
  private drainCb: (() => void) | null = null;

  constructor(
    readonly raw: Buffer, readonly twoWay: boolean, readonly callerHi: number, readonly callerLo: number,
    readonly sink: DubboCallSink | null,
  ) {}

  cancel(): void {
    this.conn?.end(this, false);
  }

  timedOut(): void {
    this.conn?.end(this, true);
  }

  /**
   * `cb` once this call is out of userland (written and flushed to the kernel), or ended, or its
   * connection was retired or lost: the caller must never stay paused on a connection that is going away.
   */
  onDrain(cb: () => void): void {
    if (this.blocked) this.drainCb = cb;
    else cb();
  }

  /** @internal */
  block(): void {
    this.writable = false;
    this.blocked = true;
  }

  /** @internal */
  release(): void {
    if (!this.blocked) return;
    this.blocked = false;
    const cb = this.drainCb;
    this.drainCb = null;
    cb?.();
  }
}

export class DubboUpstream implements TurnEnd {
  readonly socket: net.Socket;
  private readonly decoder: DubboFrameDecoder;
  private readonly pending = new Map<number, DubboUpstreamCall>();
  /** Calls not written yet, in order; entries whose call ended or moved are skipped (`queued` counts the live ones). */
  private queue: DubboUpstreamCall[] = [];
  private queued = 0;
  /** Calls written while the socket still held bytes of its own: released when it flushes. */
  private backedUp: DubboUpstreamCall[] = [];
  /**
   * Frames written in this turn of the event loop (calls, heartbeats), sent together at its end
   * (turn-end.ts): the calls read from all the consumers in one turn go in one write. Written calls
   * are here until then (`heldCalls`): sent as far as the pool is concerned, they never move.
   */
  private readonly held = new HeldWrites(this);
  private heldCalls: DubboUpstreamCall[] = [];
  private nextId = 1;
  private connected = false;
  closed = false;
  /** Taken out of use (stopped answering): no new calls; closes when its pending calls end. */
  retired = false;
  /** The pool was given up (its endpoint left every cluster): close once the calls on it end. */
  private leaving = false;
  /** Retired or leaving, with nothing pending: ending (what the socket holds is flushed, then it closes). */
  private closing = false;
  private lastCall = performance.now();
  /** When the last byte arrived (0: never). */
  private lastRead = 0;
  /** When calls last became outstanding on an idle connection: silence is measured from here at most. */
  private busySince = 0;
  /** When the unanswered heartbeat went out (0: none outstanding). */
  private probeSentAt = 0;
  private consecutiveTimeouts = 0;
  private watchdog: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private failure: DubboFailure = 'connect_failed';
  private readonly probeAfterMs: number;
  private readonly probeTimeoutMs: number;
  private readonly maxTimeouts: number;
  /** Passed with every write: the socket has no `'drain'` for "all flushed" below its high-water mark. */
  private readonly onWritten = (): void => {
    if (!this.closed && !this.socket.destroyed && this.socket.writableLength === 0) this.onFlushed();
  };

  constructor(
    private readonly pool: DubboPool,
    host: string, port: number,
    private readonly stats: Stats,
    private readonly cstats: ClusterStats,
    private readonly limits: DubboPoolLimits,
  ) {
    this.probeAfterMs = limits.probeAfterMs ?? DEFAULT_PROBE_AFTER_MS;
    this.probeTimeoutMs = limits.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    this.maxTimeouts = limits.maxConsecutiveTimeouts ?? DEFAULT_MAX_CONSECUTIVE_TIMEOUTS;
    stats.inc(cstats.cxTotal);
    this.decoder = new DubboFrameDecoder({
      onFrame: (f) => this.onFrame(f),
      onError: (e) => this.onDecodeError(e),
    }, { maxBodyBytes: limits.maxBodyBytes, serializations: limits.serializations });
    const s = dial(host, port, { tls: pool.tls });
    this.socket = s;
    this.connectTimer = setTimeout(() => { this.connectTimer = null; s.destroy(); }, limits.connectTimeoutMs);
    s.once('connect', () => {
      this.connected = true;
      this.failure = 'reset';
      if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null; }
      stats.inc(cstats.cxActive);
      this.heartbeatTimer = setInterval(onHeartbeatTick, DUBBO_HEARTBEAT_MS, this);
      this.heartbeatTimer.unref?.();
      this.busySince = performance.now();
      this.flush();
      this.armWatchdog();
    });
    s.on('data', (d: Buffer) => {
      this.lastRead = performance.now();
      try {
        this.decoder.push(d);
      } catch (err) {
        log.error({ err, where: 'dubbo upstream connection' }, 'internal error on a connection');
        s.destroy();
        return;
      }
      if (this.probeSentAt !== 0) {
        // the connection answers: off probation, and what waited for it goes out
        this.probeSentAt = 0;
        this.flush();
      }
    });
    s.on('end', () => s.destroy());
    s.on('error', (err) => {
      if (!this.connected && isDnsFailure(err)) this.failure = 'dns_failed';
      s.destroy();
    });
    s.on('close', () => this.onClose());
  }

  /** Calls pending a response or queued here. */
  get inFlight(): number {
    return this.pending.size + this.queued;
  }

  /** On probation: a heartbeat is out and nothing has come back since. */
  get suspect(): boolean {
    return this.probeSentAt !== 0;
  }

  /** @internal takes a call: written now if the socket is clear, else queued. */
  enqueue(call: DubboUpstreamCall): void {
    if (this.pending.size === 0 && this.queued === 0) this.busySince = performance.now();
    call.conn = this;
    call.state = QUEUED;
    if (this.connected && !this.retired && this.probeSentAt === 0 && this.queued === 0 && this.socket.writableLength === 0) {
      this.write(call);
    } else {
      call.block();
      this.queue.push(call);
      this.queued++;
    }
    this.armWatchdog();
  }

  private write(call: DubboUpstreamCall): void {
    const id = this.takeId();
    call.upstreamId = id;
    rewriteIdParts(call.raw, 0, id);
    if (call.twoWay && call.sink) {
      call.state = SENT;
      this.pending.set(id, call);
    } else {
      call.state = DONE; // one-way: nothing comes back
    }
    this.lastCall = performance.now();
    this.held.push(call.raw);
    this.heldCalls.push(call);
  }

  /**
   * @internal the end of the turn: the frames held go out in one write. Calls the socket took at once
   * are out of userland; those it buffered wait for it to flush (backedUp), and what comes next
   * queues behind them (enqueue sees writableLength).
   */
  atTurnEnd(): void {
    const s = this.socket;
    if (!this.held.endTurn(s, this.onWritten)) return;
    const calls = this.heldCalls;
    this.heldCalls = [];
    // a socket lost meanwhile fails its written calls in onClose; the callers waiting on them are released there
    if (s.destroyed || s.writableLength === 0) {
      for (let i = 0; i < calls.length; i++) calls[i].release();
    } else {
      for (let i = 0; i < calls.length; i++) {
        calls[i].block();
        this.backedUp.push(calls[i]);
      }
    }
  }

  private takeId(): number {
    const id = this.nextId;
    this.nextId = id >= MAX_ID ? 1 : id + 1;
    return id;
  }

  /** The socket flushed its own buffer: release the callers waiting on it, write what queued. */
  private onFlushed(): void {
    if (this.backedUp.length > 0) {
      const b = this.backedUp;
      this.backedUp = [];
      for (const c of b) c.release();
    }
    this.flush();
    // a leaving connection's last queued calls were one-way: nothing will answer to close it
    this.closeIfRetiredAndDone();
  }

  private flush(): void {
    const s = this.socket;
    while (this.queued > 0 && this.connected && !this.retired && !s.destroyed && this.probeSentAt === 0 && s.writableLength === 0) {
      const call = this.queue.shift()!;
      if (call.state !== QUEUED || call.conn !== this) continue;
      this.queued--;
      this.write(call);
    }
    if (this.queued === 0 && this.queue.length > 0) this.queue = [];
  }

  /** @internal a call ends without its response: the caller timed out (`timedOut`) or left. */
  end(call: DubboUpstreamCall, timedOut: boolean): void {
    const was = call.state;
    call.state = DONE;
    call.release();
    if (was === QUEUED) {
      this.queued--;
      if (this.queued === 0) this.queue = [];
    } else if (was === SENT) {
      this.pending.delete(call.upstreamId);
      if (timedOut && !this.retired && ++this.consecutiveTimeouts >= this.maxTimeouts) {
        this.retire(`${this.consecutiveTimeouts} calls in a row timed out`);
        return;
      }
    }
    this.closeIfRetiredAndDone();
  }

  /** @internal */
  heartbeatTick(): void {
    if (this.closed || !this.connected || this.retired || this.closing) return;
    const now = performance.now();
    const idleFor = now - this.lastCall;
    if (this.pending.size === 0 && this.queued === 0 && idleFor >= this.limits.idleTimeoutMs) {
      this.socket.destroy();
      return;
    }
    // a heartbeat only when the connection was quiet both ways for a whole period; it is a probe like any other
    if (idleFor >= DUBBO_HEARTBEAT_MS - 1000 && now - this.lastRead >= DUBBO_HEARTBEAT_MS - 1000 &&
      this.socket.writableLength === 0 && this.probeSentAt === 0) {
      this.probe(now);
    }
  }

  private probe(now: number): void {
    this.probeSentAt = now;
    this.held.push(encodeHeartbeatRequest(this.takeId(), true));
    this.setWatchdog(this.probeTimeoutMs);
  }

  private armWatchdog(): void {
    if (this.watchdog || !this.connected || this.closed || this.retired) return;
    if (this.pending.size === 0 && this.queued === 0) return;
    this.setWatchdog(this.probeAfterMs);
  }

  private setWatchdog(ms: number): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(onWatchdog, Math.max(1, Math.ceil(ms)), this);
    this.watchdog.unref?.();
  }

  /** @internal the watchdog fired: probe a silent busy connection, or give up on an unanswered probe. */
  check(): void {
    this.watchdog = null;
    if (this.closed || this.retired || this.closing) return;
    const now = performance.now();
    if (this.probeSentAt !== 0) {
      // bytes arriving end the probation, so this heartbeat has had no answer at all
      const left = this.probeSentAt + this.probeTimeoutMs - now;
      if (left > 0) this.setWatchdog(left);
      else this.retire(`no answer to a heartbeat in ${this.probeTimeoutMs} ms`);
      return;
    }
    if (this.pending.size === 0 && this.queued === 0) return; // idle: the heartbeat tick watches it
    const quietFor = now - Math.max(this.lastRead, this.busySince);
    if (quietFor >= this.probeAfterMs) this.probe(now);
    else this.setWatchdog(this.probeAfterMs - quietFor);
  }

  /** Unhealthy: no new calls; queued calls move to another connection; close once the written ones end. */
  private retire(why: string): void {
    if (this.retired || this.closed) return;
    this.retired = true;
    if (this.watchdog) { clearTimeout(this.watchdog); this.watchdog = null; }
    this.stats.inc(this.cstats.cxReplaced);
    this.pool.retire(this);
    const moving = this.takeQueued();
    log.warn({ upstream: this.pool.key, why, pending: this.pending.size, moved: moving.length },
      'dubbo upstream connection stopped answering: replaced');
    for (const c of this.takeBackedUp()) c.release();
    for (const call of moving) {
      this.stats.inc(this.cstats.rqMoved);
      call.moved = true;
      this.pool.place(call, this.limits, this.cstats);
    }
    this.closeIfRetiredAndDone();
  }

  private closeIfRetiredAndDone(): void {
    if (this.closing || this.closed || !(this.retired || this.leaving) || this.pending.size !== 0 || this.queued !== 0) return;
    this.closing = true;
    this.atTurnEnd(); // one-way calls written in this turn still go
    const s = this.socket;
    if (this.retired || s.destroyed || s.writableLength === 0) {
      s.destroy(); // retired: it stopped answering, what it holds would not get through
      return;
    }
    // Leaving a healthy provider: one-way calls (and heartbeat answers) the socket still holds would
    // be lost by a destroy. They are flushed, then the FIN; the provider's own close ends it ('end'
    // destroys), or the cap does.
    s.end();
    setTimeout(destroySocket, this.limits.idleTimeoutMs, s).unref();
  }

  /** The endpoint left its cluster: the calls on this connection finish, then it closes. */
  leave(): void {
    this.leaving = true;
    this.closeIfRetiredAndDone();
  }

  private takeQueued(): DubboUpstreamCall[] {
    const q = this.queue.filter((c) => c.state === QUEUED && c.conn === this);
    this.queue = [];
    this.queued = 0;
    return q;
  }

  private takeBackedUp(): DubboUpstreamCall[] {
    const b = this.backedUp;
    this.backedUp = [];
    return b;
  }

  private onFrame(f: DubboFrame): void {
    if (f.isRequest) {
      // the provider's own heartbeat: answer it; nothing else is expected from that side
      if (isHeartbeat(f) && f.twoWay && !this.closing) this.held.push(encodeHeartbeatResponse(f));
      return;
    }
    if (f.isEvent) return; // the answer to our heartbeat (its bytes already ended any probation)
    const id = f.safeId;
    const call = this.pending.get(id);
    if (!call) return; // timed out or the caller left
    this.pending.delete(id);
    this.consecutiveTimeouts = 0;
    call.state = DONE;
    call.release();
    rewriteIdParts(f.raw, call.callerHi, call.callerLo);
    call.sink!.onResponse(f.raw, f.status);
    this.closeIfRetiredAndDone();
  }

  private onDecodeError(err: DubboProtocolError): void {
    // one broken response stream: every call on it fails; the caller of the offending frame too
    void err;
    this.failure = 'bad_response';
    this.socket.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null; }
    if (this.heartbeatTimer) { clearInterval(this.heartbeatTimer); this.heartbeatTimer = null; }
    if (this.watchdog) { clearTimeout(this.watchdog); this.watchdog = null; }
    this.decoder.destroy();
    if (this.connected) this.stats.dec(this.cstats.cxActive);
    else this.stats.inc(this.cstats.cxConnectFail);
    this.pool.remove(this);
    const failed = [...this.pending.values()];
    this.pending.clear();
    const queued = this.takeQueued();
    for (const c of this.takeBackedUp()) c.release();
    for (const call of queued) {
      if (this.connected && !call.moved) {
        // never written: it goes on another connection, once (a provider that keeps dropping connections must not bounce it forever)
        call.moved = true;
        this.pool.place(call, this.limits, this.cstats);
      } else {
        failed.push(call);
      }
    }
    for (const call of failed) {
      const why: DubboFailure = call.state === QUEUED ? (this.failure === 'dns_failed' ? 'dns_failed' : 'connect_failed') : this.failure;
      call.state = DONE;
      call.release();
      try {
        call.sink?.onFailure(why);
      } catch (err) {
        log.error({ err, where: 'dubbo upstream connection' }, 'internal error on a connection');
      }
    }
  }

  destroy(): void {
    if (!this.closed) this.socket.destroy();
  }
}

function destroySocket(s: net.Socket): void {
  s.destroy();
}

function onHeartbeatTick(c: DubboUpstream): void {
  c.heartbeatTick();
}

function onWatchdog(c: DubboUpstream): void {
  c.check();
}

export class DubboPool {
  /** Serving connections (at most MAX_CONNECTIONS, unless some are being destroyed). */
  private readonly conns: DubboUpstream[] = [];
  /** Retired connections still waiting for the calls written to them. */
  private readonly retiring = new Set<DubboUpstream>();
  readonly key: string;

  /** `tls`: mTLS to this endpoint (src/tls/), or plaintext. */
  constructor(private readonly host: string, private readonly port: number, private readonly stats: Stats, readonly tls: DialOptions['tls'] = null) {
    this.key = `${host}:${port}`;
  }

  get size(): number { return this.conns.length; }

  /**
   * Forwards one call (`raw` is the whole request frame; its id bytes are rewritten in place when it is
   * written). `sink` is told of the response or the failure, exactly once, unless the call is cancelled
   * or timed out.
   */
  send(raw: Buffer, twoWay: boolean, callerHi: number, callerLo: number, sink: DubboCallSink | null,
    limits: DubboPoolLimits, cstats: ClusterStats): DubboUpstreamCall {
    const call = new DubboUpstreamCall(raw, twoWay, callerHi, callerLo, sink);
    this.place(call, limits, cstats);
    return call;
  }

  /** @internal puts a call (new or moved) on the best serving connection. */
  place(call: DubboUpstreamCall, limits: DubboPoolLimits, cstats: ClusterStats): void {
    this.pick(limits, cstats).enqueue(call);
  }

  private pick(limits: DubboPoolLimits, cstats: ClusterStats): DubboUpstream {
    let best: DubboUpstream | null = null;
    let onProbation: DubboUpstream | null = null;
    for (const c of this.conns) {
      if (c.closed || c.retired || c.socket.destroyed) continue;
      if (c.suspect) {
        if (!onProbation || c.inFlight < onProbation.inFlight) onProbation = c;
      } else if (!best || c.inFlight < best.inFlight) {
        best = c;
      }
    }
    if (best && (best.inFlight < SPREAD_AT || this.conns.length >= MAX_CONNECTIONS)) return best;
    // no room for another: a call waits on the connection on probation (it moves if that one is retired)
    if (!best && onProbation && this.conns.length >= MAX_CONNECTIONS) return onProbation;
    const c = new DubboUpstream(this, this.host, this.port, this.stats, cstats, limits);
    this.conns.push(c);
    return c;
  }

  /** @internal a connection stopped answering: it serves no new calls. */
  retire(c: DubboUpstream): void {
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
    this.retiring.add(c);
  }

  /** @internal a connection closed. */
  remove(c: DubboUpstream): void {
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
    this.retiring.delete(c);
  }

  /** The endpoint left every cluster: its connections close as their calls end. */
  leave(): void {
    for (const c of [...this.conns, ...this.retiring]) c.leave();
  }

  /** Closes connections with nothing in flight (drain). */
  closeIdle(): void {
    for (const c of [...this.conns, ...this.retiring]) if (c.inFlight === 0) c.destroy();
  }
}
