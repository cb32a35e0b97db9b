/**
 * One HTTP/2 (h2c) session per endpoint per worker, shared by every stream to
 * that endpoint. A session that errors, closes or is sent GOAWAY is replaced
 * by the next request; streams already on it finish or fail on their own.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Stats } from '../stats/stats';
import type { ClusterStats } from './cluster';

export class Http2Pool {
  private session: http2.ClientHttp2Session | null = null;

  constructor(readonly host: string, readonly port: number, private readonly stats: Stats) {}

  get(cstats: ClusterStats, connectTimeoutMs: number): http2.ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    return this.open(cstats, connectTimeoutMs);
  }

  private open(cstats: ClusterStats, connectTimeoutMs: number): http2.ClientHttp2Session {
    const authority = this.host.includes(':') ? `http://[${this.host}]:${this.port}` : `http://${this.host}:${this.port}`;
    const session = http2.connect(authority, {
      settings: { enablePush: false },
      peerMaxConcurrentStreams: 1000,
      createConnection: () => net.connect({ host: this.host, port: this.port, noDelay: true }),
    });
    this.session = session;
    this.stats.inc(cstats.cxTotal);
    let connected = false;
    const timer = setTimeout(() => { if (!connected) session.destroy(new Error('connect timeout')); }, connectTimeoutMs);
    session.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      this.stats.inc(cstats.cxActive);
    });
    const forget = () => { if (this.session === session) this.session = null; };
    session.on('error', () => {
      if (!connected) this.stats.inc(cstats.cxConnectFail);
      forget();
    });
    session.on('goaway', forget);
    session.once('close', () => {
      clearTimeout(timer);
      forget();
      if (connected) this.stats.dec(cstats.cxActive);
    });
    // an idle session must not keep a draining worker alive
    session.unref();
    return session;
  }

  /** True once the session reached the endpoint. */
  static connected(s: http2.ClientHttp2Session): boolean {
    return !s.connecting;
  }

  close(): void {
    this.session?.close();
    this.session = null;
  }
}
