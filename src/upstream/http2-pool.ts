/**
 * HTTP/2 (h2c) sessions to one endpoint, owned by one worker, shared by every
 * stream to that endpoint. One session normally carries everything (one TCP
 * connection batches best); another opens only when every open one is at the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS, so requests never queue silently
 * behind a peer's limit.
 *
 *   acquire() ─▶ first open session with a free stream slot ─▶ stream
 *            └─▶ none: open a session (counted in upstream_cx_total)
 *   release() ◀─ the stream closed
 *
 * A session that errors, closes, is sent GOAWAY, or has used up its stream ids
 * stops taking streams; the ones already on it finish or fail on their own.
 * A session without streams for the idle timeout is closed by a sweep, not by
 * Node's session timer: that one is re-armed by every frame, which costs a
 * timer-list update several times per request on the hot path.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Stats } from '../stats/stats';
import type { ClusterStats } from './cluster';

/**
 * Client stream ids are odd and stop at 2^31-1; a session that has opened this
 * many streams is retired before Node would refuse the next one.
 */
const MAX_STREAMS_PER_SESSION = 1_000_000_000;
/** Until the peer's SETTINGS arrive, assume the least RFC 9113 (5.1.2) recommends: a burst must not queue behind a smaller limit. */
const INITIAL_STREAM_LIMIT = 100;

export class UpstreamSession {
  /** Streams open on this session now. */
  active = 0;
  /** Streams ever opened. */
  opened = 0;
  limit = INITIAL_STREAM_LIMIT;
  /** Takes no new streams (error, GOAWAY, closed, ids used up). */
  retired = false;
  connected = false;
  /** When `active` last fell to 0 (performance.now()). */
  idleSince = performance.now();

  constructor(readonly session: http2.ClientHttp2Session) {}

  /** One stream opened by acquire() closed. */
  release(): void {
    if (--this.active === 0) this.idleSince = performance.now();
  }
}

/** Pools with sessions, swept for idle ones by one timer per thread. */
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

  constructor(readonly host: string, readonly port: number, private readonly stats: Stats) {}

  /** A session with a free stream slot; the caller opens one stream on it and calls its release() when that stream closes. */
  acquire(cstats: ClusterStats, connectTimeoutMs: number, idleTimeoutMs = 0): UpstreamSession {
    this.idleTimeoutMs = idleTimeoutMs;
    const list = this.sessions;
    for (let i = 0; i < list.length; i++) {
      const s = list[i];
      if (s.active < s.limit && !s.retired && !s.session.closed && !s.session.destroyed) return this.take(s);
    }
    return this.take(this.open(cstats, connectTimeoutMs, idleTimeoutMs));
  }

  private take(s: UpstreamSession): UpstreamSession {
    s.active++;
    if (++s.opened >= MAX_STREAMS_PER_SESSION) this.retire(s, true);
    return s;
  }

  /** Closes sessions that have had no stream for the idle timeout. */
  closeIdle(now: number): void {
    const limit = this.idleTimeoutMs;
    if (limit <= 0) return;
    for (const s of [...this.sessions]) if (s.active === 0 && now - s.idleSince >= limit) this.retire(s, true);
  }

  private retire(s: UpstreamSession, close: boolean): void {
    if (s.retired) return;
    s.retired = true;
    const i = this.sessions.indexOf(s);
    if (i >= 0) this.sessions.splice(i, 1);
    if (this.sessions.length === 0) sweptPools.delete(this);
    // close() is graceful: streams on the session finish, no new ones start
    if (close && !s.session.closed && !s.session.destroyed) s.session.close();
  }

  private open(cstats: ClusterStats, connectTimeoutMs: number, idleTimeoutMs: number): UpstreamSession {
    const authority = this.host.includes(':') ? `http://[${this.host}]:${this.port}` : `http://${this.host}:${this.port}`;
    const session = http2.connect(authority, {
      settings: { enablePush: false },
      peerMaxConcurrentStreams: INITIAL_STREAM_LIMIT,
      createConnection: () => net.connect({ host: this.host, port: this.port, noDelay: true }),
    });
    const s = new UpstreamSession(session);
    this.sessions.push(s);
    if (idleTimeoutMs > 0) {
      sweptPools.add(this);
      if (!sweeper) {
        sweeper = setInterval(sweepIdle, Math.max(50, Math.min(1000, idleTimeoutMs / 4)));
        sweeper.unref();
      }
    }
    this.stats.inc(cstats.cxTotal);
    const timer = setTimeout(() => { if (!s.connected) session.destroy(new Error('connect timeout')); }, connectTimeoutMs);
    session.once('connect', () => {
      s.connected = true;
      clearTimeout(timer);
      this.stats.inc(cstats.cxActive);
    });
    session.on('remoteSettings', (settings: http2.Settings) => {
      const max = settings.maxConcurrentStreams;
      if (max !== undefined) s.limit = Math.max(1, max);
    });
    session.on('error', () => {
      if (!s.connected) this.stats.inc(cstats.cxConnectFail);
      this.retire(s, false);
    });
    session.on('goaway', () => this.retire(s, false));
    session.once('close', () => {
      clearTimeout(timer);
      this.retire(s, false);
      if (s.connected) this.stats.dec(cstats.cxActive);
    });
    // an idle session must not keep a draining worker alive
    session.unref();
    return s;
  }

  /** Closes every session gracefully (drain, or the endpoint left the config). */
  close(): void {
    for (const s of [...this.sessions]) this.retire(s, true);
  }
}
