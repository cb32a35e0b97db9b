/**
 * HTTP/2 (h2c) connections to one endpoint, owned by one worker, shared by
 * every stream to that endpoint, on Sluice's own HTTP/2 codec. One connection
 * normally carries everything (one TCP connection batches best); another opens
 * only when every open one is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS,
 * so requests never queue silently behind a peer's limit.
 *
 *   acquire() ─▶ first open connection with a free stream slot ─▶ request()
 *            └─▶ none: open one (counted in upstream_cx_total)
 *   release() ◀─ the stream ended, either way
 *
 * A connection that fails, closes, is sent GOAWAY, or has used up its stream
 * ids stops taking streams; the ones already on it finish or fail on their own.
 * A connection without streams for the idle timeout is closed by a sweep.
 */
import type net from 'node:net';
import { CONNECTION_WINDOW, Http2Connection, writeAll, type Http2ConnectionHost, type Http2Options, type Http2Stream } from './http2-connection';
import type { Stats } from '../../stats/stats';
import type { ClusterStats } from '../../upstream/cluster';
import { dial, isDnsFailure, type DialOptions } from '../../upstream/dial';

/** Until the peer's SETTINGS arrive, assume the least RFC 9113 (5.1.2) recommends: a burst must not queue behind a smaller limit. */
const INITIAL_STREAM_LIMIT = 100;

export const UPSTREAM_H2_OPTIONS: Http2Options = {
  maxConcurrentStreams: 0,
  initialWindow: 1 << 20,
  connectionWindow: CONNECTION_WINDOW,
  maxHeaderListSize: 256 * 1024,
  maxHeaderCount: 1000,
};

export class UpstreamSession implements Http2ConnectionHost {
  /** Streams open on this connection now. */
  active = 0;
  /** Takes no new streams (error, GOAWAY, closed, ids used up). */
  retired = false;
  connected = false;
  /** It never connected because the endpoint's name did not resolve. */
  dnsFailed = false;
  closed = false;
  /** When `active` last fell to 0 (performance.now()). */
  idleSince = performance.now();
  readonly conn: Http2Connection;
  readonly socket: net.Socket;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pool: Http2Pool, host: string, port: number, private readonly cstats: ClusterStats, connectTimeoutMs: number) {
    this.conn = new Http2Connection(false, this, UPSTREAM_H2_OPTIONS);
    const socket = dial(host, port, { tls: pool.tls });
    this.socket = socket;
    const stats = pool.stats;
    stats.inc(cstats.cxTotal);
    this.timer = setTimeout(() => { if (!this.connected) socket.destroy(); }, connectTimeoutMs);
    socket.once('connect', () => {
      this.connected = true;
      clearTimeout(this.timer);
      stats.inc(cstats.cxActive);
    });
    socket.on('data', (d: Buffer) => this.conn.receive(d));
    socket.on('drain', () => this.conn.onDrain());
    socket.on('error', (err) => { if (!this.connected && isDnsFailure(err)) this.dnsFailed = true; });
    socket.once('close', () => this.onSocketClose());
    // an idle connection must not keep a draining worker alive
    socket.unref();
  }

  get limit(): number {
    return this.conn.settled ? Math.max(1, this.conn.peerMaxStreams) : INITIAL_STREAM_LIMIT;
  }

  /** Can take one more stream now. */
  get open(): boolean {
    return !this.retired && !this.conn.goingAway && this.active < this.limit && this.conn.idsLeft > 0;
  }

  /** One stream opened on this connection ended. */
  release(): void {
    if (--this.active === 0) this.idleSince = performance.now();
  }

  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  writeMany(data: Buffer[]): boolean {
    return writeAll(this.socket, data);
  }

  onStream(s: Http2Stream): void {
    // a client is never sent requests; the codec refuses them before this
    this.conn.reset(s, 0x1);
  }

  onEnd(): void {
    this.pool.retire(this);
    this.socket.end();
    // a peer that does not close its side is not waited for
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  onGoaway(): void { this.pool.retire(this); }

  onIdle(): void {}

  /** An upstream that breaks the protocol fails its streams (counted as resets by their exchanges). */
  onProtocolError(): void {}

  private onSocketClose(): void {
    clearTimeout(this.timer);
    this.closed = true;
    if (this.connected) this.pool.stats.dec(this.cstats.cxActive);
    else this.pool.stats.inc(this.cstats.cxConnectFail);
    this.pool.retire(this);
    this.conn.destroy();
  }
}

/** Pools with connections, swept for idle ones by one timer per thread. */
const sweptPools = new Set<Http2Pool>();
let sweeper: NodeJS.Timeout | null = null;

function sweepIdle(): void {
  const now = performance.now();
  for (const p of sweptPools) p.closeIdle(now);
  if (sweptPools.size === 0 && sweeper) { clearInterval(sweeper); sweeper = null; }
}

export class Http2Pool {
  private sessions: UpstreamSession[] = [];
  private idleTimeoutMs = 0;

  /** `tls`: mTLS to this endpoint (src/tls/), offering h2 by ALPN, or plaintext (prior knowledge). */
  constructor(readonly host: string, readonly port: number, readonly stats: Stats, readonly tls: DialOptions['tls'] = null) {}

  /** A connection with a free stream slot; the caller opens one stream on it and calls its release() when that stream ends. */
  acquire(cstats: ClusterStats, connectTimeoutMs: number, idleTimeoutMs = 0): UpstreamSession {
    this.idleTimeoutMs = idleTimeoutMs;
    const list = this.sessions;
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      if (s.open) { s.active++; return s; }
    }
    const s = new UpstreamSession(this, this.host, this.port, cstats, connectTimeoutMs);
    this.sessions.push(s);
    if (idleTimeoutMs > 0) {
      sweptPools.add(this);
      if (!sweeper) {
        sweeper = setInterval(sweepIdle, Math.max(50, Math.min(1000, idleTimeoutMs / 4)));
        sweeper.unref();
      }
    }
    s.active++;
    return s;
  }

  /** Closes connections that have had no stream for the idle timeout. */
  closeIdle(now: number): void {
    const limit = this.idleTimeoutMs;
    if (limit <= 0) return;
    for (const s of [...this.sessions]) if (s.active === 0 && now - s.idleSince >= limit) this.close1(s);
  }

  retire(s: UpstreamSession): void {
    if (s.retired) return;
    s.retired = true;
    const i = this.sessions.indexOf(s);
    if (i >= 0) this.sessions.splice(i, 1);
    if (this.sessions.length === 0) sweptPools.delete(this);
  }

  private close1(s: UpstreamSession): void {
    this.retire(s);
    // graceful: GOAWAY, streams on it finish, then the socket ends
    if (!s.closed) s.conn.shutdown();
  }

  /** Closes every connection gracefully (drain, or the endpoint left the config). */
  close(): void {
    for (const s of [...this.sessions]) this.close1(s);
  }

  /** The endpoint left every cluster: GOAWAY on every connection; their streams finish. */
  leave(): void {
    this.close();
  }
}
