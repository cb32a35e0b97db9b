/**
 * Multiplexed Dubbo 2 connections to one endpoint, owned by one worker.
 *
 *   session A ─┐  rewriteId(caller id → upstream id)   ┌─▶ DubboUpstream #1 ─▶ provider
 *   session B ─┼──────────────── DubboPool ─────────────┤
 *   session C ─┘  ◀─ rewriteId(upstream id → caller id) └─▶ DubboUpstream #2 (only under load)
 *
 * Every call forwarded gets a fresh id on the connection that carries it; the response is
 * matched by that id, its bytes get the caller's id back, and go to the caller's sink. Calls
 * are written as soon as `send` runs: bytes written before the connection is up wait in the
 * socket. A connection that fails before it connects fails its calls as `connect_failed`; one
 * lost later fails them as `reset`. Idle connections carry Sluice's own heartbeat every 30 s,
 * so neither side (nor a NAT in between) drops a quiet connection.
 */
import net from 'node:net';
import {
  DubboFrameDecoder, DubboResponse, encodeHeartbeatRequest, encodeHeartbeatResponse, isHeartbeat, rewriteIdParts,
  type DubboFrame, type DubboProtocolError,
} from '../codecs/dubbo';
import { log } from '../log';
import type { Stats } from '../stats/stats';
import type { ClusterStats } from './cluster';

export const DUBBO_HEARTBEAT_MS = 30_000;
/** Connections per endpoint per worker; a second opens only when the first is busy. */
const MAX_CONNECTIONS = 2;
/** Calls in flight on the least busy connection before a second connection is opened. */
const SPREAD_AT = 64;
/** Upstream ids stay positive signed 32-bit numbers (every Java client can read them back). */
const MAX_ID = 0x7fff_ffff;

export type DubboFailure = 'connect_failed' | 'reset' | 'bad_response';

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
}

interface Pending {
  sink: DubboCallSink;
  callerHi: number;
  callerLo: number;
}

/** A call on its way; `cancel` drops the mapping (timeout, caller gone): a late response is dropped. */
export class DubboUpstreamCall {
  constructor(private readonly conn: DubboUpstream, readonly upstreamId: number) {}
  cancel(): void {
    this.conn.cancel(this.upstreamId);
  }
  /** The connection's socket took the bytes without queueing beyond its buffer. */
  writable = true;
  /** `cb` once the socket drains, or closes (calls on it fail then; the caller must not stay paused). */
  onDrain(cb: () => void): void {
    const s = this.conn.socket;
    const done = () => { s.removeListener('drain', done); s.removeListener('close', done); cb(); };
    s.on('drain', done);
    s.on('close', done);
  }
}

export class DubboUpstream {
  readonly socket: net.Socket;
  private readonly decoder: DubboFrameDecoder;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private connected = false;
  closed = false;
  private lastCall = performance.now();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private failure: DubboFailure = 'connect_failed';

  constructor(
    private readonly pool: DubboPool,
    host: string, port: number,
    private readonly stats: Stats,
    private readonly cstats: ClusterStats,
    private readonly limits: DubboPoolLimits,
  ) {
    stats.inc(cstats.cxTotal);
    this.decoder = new DubboFrameDecoder({
      onFrame: (f) => this.onFrame(f),
      onError: (e) => this.onDecodeError(e),
    }, { maxBodyBytes: limits.maxBodyBytes, serializations: limits.serializations });
    const s = net.connect({ host, port, noDelay: true });
    this.socket = s;
    this.connectTimer = setTimeout(() => { this.connectTimer = null; s.destroy(); }, limits.connectTimeoutMs);
    s.once('connect', () => {
      this.connected = true;
      this.failure = 'reset';
      if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null; }
      stats.inc(cstats.cxActive);
      this.heartbeatTimer = setInterval(onHeartbeatTick, DUBBO_HEARTBEAT_MS, this);
      this.heartbeatTimer.unref?.();
    });
    s.on('data', (d: Buffer) => {
      try {
        this.decoder.push(d);
      } catch (err) {
        log.error({ err, where: 'dubbo upstream connection' }, 'internal error on a connection');
        s.destroy();
      }
    });
    s.on('end', () => s.destroy());
    s.on('error', () => s.destroy());
    s.on('close', () => this.onClose());
  }

  get inFlight(): number {
    return this.pending.size;
  }

  send(raw: Buffer, twoWay: boolean, callerHi: number, callerLo: number, sink: DubboCallSink | null): DubboUpstreamCall {
    const id = this.nextId;
    this.nextId = id >= MAX_ID ? 1 : id + 1;
    rewriteIdParts(raw, 0, id);
    if (twoWay && sink) this.pending.set(id, { sink, callerHi, callerLo });
    this.lastCall = performance.now();
    const call = new DubboUpstreamCall(this, id);
    call.writable = this.socket.write(raw);
    return call;
  }

  cancel(id: number): void {
    this.pending.delete(id);
  }

  /** @internal */
  heartbeatTick(): void {
    if (this.closed || !this.connected) return;
    const idleFor = performance.now() - this.lastCall;
    if (this.pending.size === 0 && idleFor >= this.limits.idleTimeoutMs) {
      this.socket.destroy();
      return;
    }
    // a heartbeat only when the connection was quiet for a whole period
    if (idleFor >= DUBBO_HEARTBEAT_MS - 1000 && this.socket.writableLength === 0) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      this.socket.write(encodeHeartbeatRequest(id, true));
    }
  }

  private onFrame(f: DubboFrame): void {
    if (f.isRequest) {
      // the provider's own heartbeat: answer it; nothing else is expected from that side
      if (isHeartbeat(f) && f.twoWay) this.socket.write(encodeHeartbeatResponse(f));
      return;
    }
    if (f.isEvent) return; // the answer to our heartbeat
    const id = f.safeId;
    const p = this.pending.get(id);
    if (!p) return; // timed out or the caller left
    this.pending.delete(id);
    rewriteIdParts(f.raw, p.callerHi, p.callerLo);
    p.sink.onResponse(f.raw, f.status);
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
    this.decoder.destroy();
    if (this.connected) this.stats.dec(this.cstats.cxActive);
    else this.stats.inc(this.cstats.cxConnectFail);
    this.pool.remove(this);
    const failed = [...this.pending.values()];
    this.pending.clear();
    for (const p of failed) {
      try {
        p.sink.onFailure(this.failure);
      } catch (err) {
        log.error({ err, where: 'dubbo upstream connection' }, 'internal error on a connection');
      }
    }
  }

  destroy(): void {
    if (!this.closed) this.socket.destroy();
  }
}

function onHeartbeatTick(c: DubboUpstream): void {
  c.heartbeatTick();
}

export class DubboPool {
  private readonly conns: DubboUpstream[] = [];

  constructor(private readonly host: string, private readonly port: number, private readonly stats: Stats) {}

  get size(): number { return this.conns.length; }

  /**
   * Forwards one call (`raw` is the whole request frame; its id bytes are rewritten in place).
   * `sink` is told of the response or the failure, exactly once, unless the call is cancelled.
   */
  send(raw: Buffer, twoWay: boolean, callerHi: number, callerLo: number, sink: DubboCallSink | null,
    limits: DubboPoolLimits, cstats: ClusterStats): DubboUpstreamCall {
    return this.pick(limits, cstats).send(raw, twoWay, callerHi, callerLo, sink);
  }

  private pick(limits: DubboPoolLimits, cstats: ClusterStats): DubboUpstream {
    let best: DubboUpstream | null = null;
    for (const c of this.conns) {
      if (c.closed || c.socket.destroyed) continue;
      if (!best || c.inFlight < best.inFlight) best = c;
    }
    if (best && (best.inFlight < SPREAD_AT || this.conns.length >= MAX_CONNECTIONS)) return best;
    const c = new DubboUpstream(this, this.host, this.port, this.stats, cstats, limits);
    this.conns.push(c);
    return c;
  }

  /** @internal a connection closed. */
  remove(c: DubboUpstream): void {
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
  }

  /** Closes connections with nothing in flight (drain). */
  closeIdle(): void {
    for (const c of [...this.conns]) if (c.inFlight === 0) c.destroy();
  }
}
