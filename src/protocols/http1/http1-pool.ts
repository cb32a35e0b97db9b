/**
 * Keep-alive HTTP/1.1 connections to one endpoint, owned by one worker.
 *
 * A connection serves one exchange at a time. `acquire` hands out an idle
 * connection (most recently used first, so idle ones age out), opens a new
 * one under the connection limit, or queues the caller under the pending limit.
 */
import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import { Http1Decoder, type Http1Handler, type Http1Head } from './http1-decoder';
import type { ProtocolError } from '../../errors';
import { log } from '../../log';
import type { Stats } from '../../stats/stats';
import type { ClusterConfig, SluiceConfig } from '../../config/config';
import type { ClusterStats } from '../../upstream/cluster';
import { dial, dialFailure, type DialOptions } from '../../upstream/dial';
import { CONNECTIONS, type ClusterLimits } from '../../protection';
import { isDirect, setReadSink } from '../../net/direct-read';
import { SocketWrites } from '../../worker/held-writes';
import { addDeadline, clearDeadline, type DeadlineList, type Timed } from '../../exchange/deadlines';

export interface Http1ResponseSink {
  /**
   * `raw`: the read the head was decoded from, when the head is its first byte on (valid during
   * this call only); null when the head began in an earlier read, after other bytes of this one,
   * or came after an interim response.
   */
  onResponseHead(head: Http1Head, raw: Buffer | null): void;
  /** `lent`: a view of the thread's read buffer, valid during this call only (whoever keeps it copies it). */
  onResponseBody(chunk: Buffer, lent: boolean): void;
  /** The final response is complete. */
  onResponseEnd(trailers: string[] | null): void;
  /** The connection failed before the response completed. `started`: response bytes were received. */
  onUpstreamError(kind: 'reset' | 'protocol', started: boolean, err?: Error): void;
  /** 101 accepted: the connection is now a tunnel; `rest` are bytes after the head. */
  onUpgrade?(socket: net.Socket, rest: Buffer): void;
  /** The upstream socket drained after a request-body write returned false. */
  onUpstreamDrain?(): void;
  /**
   * Around each read from the upstream: everything one read produces (head, body,
   * end) can go to the client in one write instead of one per piece.
   */
  batchStart?(): void;
  batchEnd?(): void;
}

export interface PoolLimits {
  maxConnections: number;
  maxPending: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeaderBytes: number;
  maxHeaders: number;
  /** The cluster's connections across every worker (clusters[].circuitBreaker.maxConnections); null: none. */
  gate: ClusterLimits | null;
}

/**
 * The pool limits for a request to `cluster` (or to an original destination, when undefined).
 * Built per request from the config the request started under; the Envoy circuit-breaker
 * defaults (1024) apply to original destinations.
 */
export function poolLimits(config: SluiceConfig, cluster: ClusterConfig | undefined, gate: ClusterLimits | null = null): PoolLimits {
  return {
    gate,
    maxConnections: cluster?.maxConnectionsPerEndpoint ?? 1024,
    maxPending: cluster?.maxPendingRequests ?? 1024,
    connectTimeoutMs: cluster?.connectTimeoutMs ?? config.tcp.connectTimeoutMs,
    idleTimeoutMs: config.http.upstreamIdleTimeoutMs,
    maxHeaderBytes: config.http.maxHeaderBytes,
    maxHeaders: config.http.maxHeaders,
  };
}

export type AcquireError = 'connect_failed' | 'dns_failed' | 'connect_timeout' | 'overflow';
export type AcquireCallback = (err: AcquireError | null, conn: Http1Connection | null) => void;

export class Http1Connection implements Http1Handler, Timed {
  readonly socket: net.Socket;
  private readonly decoder: Http1Decoder;
  private sink: Http1ResponseSink | null = null;
  private head: Http1Head | null = null;
  private responseStarted = false;
  /** Set when the request is fully written; a response that ends before that makes the connection unusable. */
  requestDone = false;
  /** Served at least one exchange before the current one. */
  reused = false;
  closed = false;
  /** Became a tunnel after 101: no longer counted by the pool. */
  detached = false;
  /** In the pool's idle list (and then in the thread's deadline list of the idle timeout). */
  parked = false;
  // The idle timeout, as a deadline (src/exchange/deadlines.ts) from the moment the connection is
  // parked to the moment it is taken again. A socket timeout would move a timer in Node's lists
  // on every read and every write of every request.
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;
  dlList: DeadlineList | null = null;
  /** The cluster limits this connection holds a place of, given back when it closes. */
  gate: ClusterLimits | null = null;
  private keepAlive = true;
  /** The read being decoded while the decoder was between messages when it came (see Http1ResponseSink.onResponseHead). */
  private headRead: Buffer | null = null;
  /** The socket reads through the thread's buffer (src/net/direct-read.ts). */
  private readonly direct: boolean;
  /**
   * What the request writes: held until the end of the turn in which the exchange took the
   * connection (the head, and the body that came with it), sent then in one write (held-writes.ts).
   */
  readonly writes: SocketWrites;

  constructor(
    private readonly pool: Http1Pool,
    socket: net.Socket,
    private readonly stats: Stats,
    private readonly cstats: ClusterStats,
    limits: PoolLimits,
  ) {
    this.socket = socket;
    this.writes = new SocketWrites(socket);
    this.decoder = new Http1Decoder('response', this, { maxHeaderBytes: limits.maxHeaderBytes, maxHeaders: limits.maxHeaders });
    // reads through the thread's buffer (onRead), plaintext or mTLS; a stream where the runtime gives no way to
    this.direct = isDirect(socket);
    if (this.direct) setReadSink(socket, this);
    else socket.on('data', (d: Buffer) => this.onRead(d));
    socket.on('end', () => {
      try {
        if (this.sink) this.decoder.end();
      } catch (err) {
        this.bug(err as Error);
      }
      this.destroy();
    });
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.onClose());
    socket.on('drain', () => this.sink?.onUpstreamDrain?.());
  }

  /** Idle for the pool's idle timeout (only a parked connection has the deadline). */
  onDeadline(): void {
    if (this.parked) this.destroy();
  }

  /** Response bytes; with `direct`, a view of the thread's read buffer, valid during this call only. */
  onRead(d: Buffer): boolean {
    const sink = this.sink;
    if (!sink) { this.destroy(); return false; } // bytes nobody asked for: the connection is out of step
    this.responseStarted = true;
    try {
      sink.batchStart?.();
      // a head that comes first in this read is at d[0] (the decoder holds nothing of an earlier one)
      if (this.decoder.idle) this.headRead = d;
      this.decoder.push(d, this.direct);
      this.headRead = null;
      sink.batchEnd?.();
    } catch (err) {
      this.headRead = null;
      this.bug(err as Error);
    }
    return true;
  }

  /** A bug of ours surfaced in a response callback: lose this exchange, never the worker. */
  private bug(err: Error): void {
    log.error({ err, where: 'http1 upstream connection' }, 'internal error on a connection');
    this.destroy();
  }

  start(sink: Http1ResponseSink, method: string): void {
    this.sink = sink;
    this.head = null;
    this.responseStarted = false;
    this.requestDone = false;
    this.decoder.expectResponseTo(method);
  }

  /** The exchange gives up on this connection (timeout, downstream gone). */
  abandon(): void {
    this.sink = null;
    this.destroy();
  }

  destroy(): void {
    if (!this.closed) this.socket.destroy();
  }

  onHead(head: Http1Head): void {
    this.head = head;
    // only the read's first head starts at its first byte
    const raw = this.headRead;
    this.headRead = null;
    if (head.status >= 200 || head.status === 101) this.keepAlive = head.keepAlive;
    this.sink?.onResponseHead(head, raw);
  }

  onBody(chunk: Buffer): void {
    // a view of the shared read buffer: whoever keeps it (a write the socket did not take at once) copies it
    this.sink?.onResponseBody(chunk, this.direct);
  }

  onMessageEnd(trailers: string[] | null): boolean {
    const head = this.head!;
    const sink = this.sink;
    if (head.status < 200 && head.status !== 101) { this.head = null; return true; }
    if (head.status === 101) {
      this.sink = null;
      const rest = this.decoder.takeRemainder();
      this.socket.removeAllListeners('data');
      this.socket.removeAllListeners('end');
      setReadSink(this.socket, null); // the tunnel reads the socket as a stream
      this.detached = true;
      this.pool.detach();
      if (sink?.onUpgrade) sink.onUpgrade(this.writes.out, rest);
      else this.socket.destroy();
      return false;
    }
    this.sink = null;
    // an answer nobody asked for (sink gone), or bytes behind this one (bufferedBytes): out of step, not reused
    const reusable = sink !== null && this.keepAlive && this.requestDone && !this.closed && this.decoder.bufferedBytes === 0;
    if (reusable) {
      // Idle before the sink hears of the end, so that a request it unblocks (the next pipelined
      // one) reuses this connection instead of opening another. Waiters are served only after the
      // sink is done with it (it still reads requestDone).
      this.reused = true;
      this.socket.resume(); // the sink may have paused it for backpressure
      this.pool.park(this);
      sink?.onResponseEnd(trailers);
      this.pool.settle(this);
    } else {
      sink?.onResponseEnd(trailers);
      this.destroy();
    }
    return true;
  }

  onError(err: ProtocolError): void {
    const sink = this.sink;
    this.sink = null;
    this.destroy();
    sink?.onUpstreamError('protocol', true, err);
  }

  private onClose(): void {
    this.closed = true;
    clearDeadline(this);
    this.stats.dec(this.cstats.cxActive);
    if (this.gate) { this.gate.release(CONNECTIONS); this.gate = null; }
    if (!this.detached) this.pool.remove(this);
    const sink = this.sink;
    this.sink = null;
    sink?.onUpstreamError('reset', this.responseStarted);
  }
}

interface Waiter { cb: AcquireCallback; cstats: ClusterStats }

export class Http1Pool {
  private readonly idle: Http1Connection[] = [];
  private readonly waiters: Waiter[] = [];
  private total = 0;
  private connecting = 0;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly stats: Stats,
    private limits: PoolLimits,
    /** mTLS to this endpoint (src/tls/), or plaintext. */
    private readonly tls: DialOptions['tls'] = null,
  ) {}

  get size(): number { return this.total; }
  get idleCount(): number { return this.idle.length; }

  acquire(cb: AcquireCallback, limits: PoolLimits, cstats: ClusterStats): void {
    this.limits = limits;
    while (this.idle.length) {
      const c = this.idle.pop()!;
      c.parked = false;
      clearDeadline(c);
      // destroyed by its idle timer or an upstream FIN, its 'close' not delivered yet
      if (c.closed || c.socket.destroyed) continue;
      cb(null, c);
      return;
    }
    if (this.total < limits.maxConnections) {
      if (!limits.gate || limits.gate.acquire(CONNECTIONS, false)) {
        this.connect(cb, cstats, limits.gate);
        return;
      }
      // the cluster is at its connections: wait for one of this pool's, if it has any
      if (this.total === 0) { limits.gate.overflowed(CONNECTIONS); cb('overflow', null); return; }
    }
    if (this.waiters.length >= limits.maxPending) {
      this.stats.inc(cstats.rqPendingOverflow);
      cb('overflow', null);
      return;
    }
    this.waiters.push({ cb, cstats });
  }

  /** `gate`: the cluster limits a place was taken from for this connection. */
  private connect(cb: AcquireCallback, cstats: ClusterStats, gate: ClusterLimits | null): void {
    this.total++;
    this.connecting++;
    this.stats.inc(cstats.cxTotal);
    const socket = dial(this.host, this.port, { tls: this.tls, direct: true });
    let settled = false;
    const timer = setTimeout(() => fail('connect_timeout'), this.limits.connectTimeoutMs);
    const fail = (why: AcquireError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.connecting--;
      this.total--;
      this.stats.inc(cstats.cxConnectFail);
      gate?.release(CONNECTIONS);
      socket.destroy();
      cb(why, null);
      this.serveWaiters();
    };
    socket.once('error', (err) => fail(dialFailure(err)));
    socket.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.connecting--;
      socket.removeAllListeners('error');
      this.stats.inc(cstats.cxActive);
      const conn = new Http1Connection(this, socket, this.stats, cstats, this.limits);
      conn.gate = gate;
      cb(null, conn);
    });
  }

  /** A connection free for the next exchange: idle, most recently used last. */
  park(c: Http1Connection): void {
    c.parked = true;
    this.idle.push(c);
    // An exchange waiting on a slow upstream has no idle timeout (its route timeout covers it)
    if (this.limits.idleTimeoutMs > 0) addDeadline(c, this.limits.idleTimeoutMs, performance.now());
    if (this.leaving) queueMicrotask(() => { if (c.parked && this.waiters.length === 0) c.destroy(); });
  }

  /** After park(): hand the connection to a waiter if nobody took it meanwhile. */
  settle(c: Http1Connection): void {
    if (!c.parked || c.closed || this.waiters.length === 0) return;
    const i = this.idle.lastIndexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    c.parked = false;
    clearDeadline(c);
    this.waiters.shift()!.cb(null, c);
  }

  /** A connection that closed, whatever its state. */
  remove(c: Http1Connection): void {
    if (c.parked) {
      c.parked = false;
      clearDeadline(c);
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
    }
    this.total--;
    this.serveWaiters();
  }

  /** A connection that became a tunnel: no longer ours to count. */
  detach(): void {
    this.total--;
    this.serveWaiters();
  }

  private serveWaiters(): void {
    const gate = this.limits.gate;
    while (this.waiters.length && this.total < this.limits.maxConnections) {
      if (gate && !gate.acquire(CONNECTIONS, false)) {
        // the cluster is at its connections: waiters keep waiting for this pool's, or give up when it has none
        if (this.total === 0) for (const w of this.waiters.splice(0)) { gate.overflowed(CONNECTIONS); w.cb('overflow', null); }
        return;
      }
      const w = this.waiters.shift()!;
      this.connect(w.cb, w.cstats, gate);
    }
  }

  closeIdle(): void {
    for (const c of this.idle.splice(0)) c.destroy();
  }

  /** The endpoint left every cluster: idle connections close now, busy ones when their exchange ends. */
  leave(): void {
    this.leaving = true;
    this.closeIdle();
  }

  private leaving = false;
}
