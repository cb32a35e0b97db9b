/**
 * Keep-alive HTTP/1.1 connections to one endpoint, owned by one worker.
 *
 * A connection serves one exchange at a time. `acquire` hands out an idle
 * connection (most recently used first, so idle ones age out), opens a new
 * one under the connection limit, or queues the caller under the pending limit.
 */
import net from 'node:net';
import { Http1Decoder, type Http1Handler, type Http1Head } from '../codecs/http1/http1-decoder';
import type { ProtocolError } from '../errors';
import type { Stats } from '../stats/stats';
import type { ClusterStats } from './cluster';

export interface Http1ResponseSink {
  onResponseHead(head: Http1Head): void;
  onResponseBody(chunk: Buffer): void;
  /** The final response is complete. */
  onResponseEnd(trailers: string[] | null): void;
  /** The connection failed before the response completed. `started`: response bytes were received. */
  onUpstreamError(kind: 'reset' | 'protocol', started: boolean, err?: Error): void;
  /** 101 accepted: the connection is now a tunnel; `rest` are bytes after the head. */
  onUpgrade?(socket: net.Socket, rest: Buffer): void;
}

export interface PoolLimits {
  maxConnections: number;
  maxPending: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeaderBytes: number;
  maxHeaders: number;
}

export type AcquireError = 'connect_failed' | 'connect_timeout' | 'overflow';
export type AcquireCallback = (err: AcquireError | null, conn: Http1Connection | null) => void;

export class Http1Connection implements Http1Handler {
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
  private keepAlive = true;

  constructor(
    private readonly pool: Http1Pool,
    socket: net.Socket,
    private readonly stats: Stats,
    private readonly cstats: ClusterStats,
    limits: PoolLimits,
  ) {
    this.socket = socket;
    this.decoder = new Http1Decoder('response', this, { maxHeaderBytes: limits.maxHeaderBytes, maxHeaders: limits.maxHeaders });
    socket.on('data', (d: Buffer) => {
      if (!this.sink) { this.destroy(); return; } // bytes nobody asked for: the connection is out of step
      this.responseStarted = true;
      this.decoder.push(d);
    });
    socket.on('end', () => {
      if (this.sink) this.decoder.end();
      this.destroy();
    });
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.onClose());
    socket.on('timeout', () => { if (!this.sink) this.destroy(); });
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
    if (head.status >= 200 || head.status === 101) this.keepAlive = head.keepAlive;
    this.sink?.onResponseHead(head);
  }

  onBody(chunk: Buffer): void {
    this.sink?.onResponseBody(chunk);
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
      this.detached = true;
      this.pool.detach();
      if (sink?.onUpgrade) sink.onUpgrade(this.socket, rest);
      else this.socket.destroy();
      return false;
    }
    this.sink = null;
    const reusable = this.keepAlive && this.requestDone && !this.closed && this.decoder.bufferedBytes === 0;
    sink?.onResponseEnd(trailers);
    if (reusable) {
      this.reused = true;
      this.pool.release(this);
    } else {
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
    this.stats.dec(this.cstats.cxActive);
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
  ) {}

  get size(): number { return this.total; }
  get idleCount(): number { return this.idle.length; }

  acquire(cb: AcquireCallback, limits: PoolLimits, cstats: ClusterStats): void {
    this.limits = limits;
    while (this.idle.length) {
      const c = this.idle.pop()!;
      if (c.closed) continue;
      c.socket.setTimeout(0);
      cb(null, c);
      return;
    }
    if (this.total < limits.maxConnections) {
      this.connect(cb, cstats);
      return;
    }
    if (this.waiters.length >= limits.maxPending) {
      this.stats.inc(cstats.rqPendingOverflow);
      cb('overflow', null);
      return;
    }
    this.waiters.push({ cb, cstats });
  }

  private connect(cb: AcquireCallback, cstats: ClusterStats): void {
    this.total++;
    this.connecting++;
    this.stats.inc(cstats.cxTotal);
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    let settled = false;
    const timer = setTimeout(() => fail('connect_timeout'), this.limits.connectTimeoutMs);
    const fail = (why: AcquireError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.connecting--;
      this.total--;
      this.stats.inc(cstats.cxConnectFail);
      socket.destroy();
      cb(why, null);
      this.serveWaiters();
    };
    socket.once('error', () => fail('connect_failed'));
    socket.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.connecting--;
      socket.removeAllListeners('error');
      this.stats.inc(cstats.cxActive);
      const conn = new Http1Connection(this, socket, this.stats, cstats, this.limits);
      cb(null, conn);
    });
  }

  release(c: Http1Connection): void {
    const w = this.waiters.shift();
    if (w) { w.cb(null, c); return; }
    this.idle.push(c);
    c.socket.setTimeout(this.limits.idleTimeoutMs);
  }

  /** A connection that closed, whatever its state. */
  remove(c: Http1Connection): void {
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    this.total--;
    this.serveWaiters();
  }

  /** A connection that became a tunnel: no longer ours to count. */
  detach(): void {
    this.total--;
    this.serveWaiters();
  }

  private serveWaiters(): void {
    while (this.waiters.length && this.total < this.limits.maxConnections) {
      const w = this.waiters.shift()!;
      this.connect(w.cb, w.cstats);
    }
  }

  closeIdle(): void {
    for (const c of this.idle.splice(0)) c.destroy();
  }
}
