/**
 * Every upstream pool of a worker, by endpoint. Pools outlive configs, so a
 * reload keeps its warm connections to endpoints that did not change.
 *
 * An endpoint reached as mTLS has pools of its own (beside any plaintext ones), one per set of
 * expected peer identities, so a config that changes what a peer must be opens new connections
 * rather than reusing ones checked against the old expectation.
 */
import type { Stats } from '../stats/stats';
import { Http1Pool, type PoolLimits } from '../protocols/http1/http1-pool';
import { Http2Pool } from '../protocols/http2/http2-pool';
import { DubboPool } from '../protocols/dubbo/dubbo-pool';
import type { OutboundTls, TlsRuntime } from '../tls/tls-runtime';

const H2_ALPN = ['h2'];
const H1_ALPN = ['http/1.1'];

export class UpstreamPools {
  private readonly h1 = new Map<string, Http1Pool>();
  private readonly h2 = new Map<string, Http2Pool>();
  private readonly dub = new Map<string, DubboPool>();
  /** Pool keys by endpoint key, the endpoint's own and its mTLS ones, for leave(). */
  private readonly variants = new Map<string, Set<string>>();

  /** `stats`: the stats of the config in force (pools outlive configs). */
  constructor(private readonly stats: () => Stats, readonly tls: TlsRuntime | null = null) {}

  private poolKey(key: string, tls: OutboundTls | null): string {
    if (!tls) return key;
    const k = `${key}#mtls:${tls.principals?.join(',') ?? '*'}`;
    let v = this.variants.get(key);
    if (!v) this.variants.set(key, (v = new Set()));
    v.add(k);
    return k;
  }

  private dialTls(tls: OutboundTls | null, alpn?: readonly string[]) {
    return tls && this.tls ? { runtime: this.tls, spec: tls, alpn } : null;
  }

  http1(host: string, port: number, key: string, limits: PoolLimits, tls: OutboundTls | null = null): Http1Pool {
    const k = this.poolKey(key, tls);
    let p = this.h1.get(k);
    if (!p) {
      p = new Http1Pool(host, port, this.stats(), limits, this.dialTls(tls, H1_ALPN));
      this.h1.set(k, p);
    }
    return p;
  }

  http2(host: string, port: number, key: string, tls: OutboundTls | null = null): Http2Pool {
    const k = this.poolKey(key, tls);
    let p = this.h2.get(k);
    if (!p) {
      p = new Http2Pool(host, port, this.stats(), this.dialTls(tls, H2_ALPN));
      this.h2.set(k, p);
    }
    return p;
  }

  dubbo(host: string, port: number, key: string, tls: OutboundTls | null = null): DubboPool {
    const k = this.poolKey(key, tls);
    let p = this.dub.get(k);
    if (!p) {
      p = new DubboPool(host, port, this.stats(), this.dialTls(tls));
      this.dub.set(k, p);
    }
    return p;
  }

  /**
   * The endpoint `key` is in no cluster any more: its pools are dropped, their connections close
   * once what is in flight on them ends. A request sent there later (an original destination
   * that happens to be the same address) opens a new pool.
   */
  leave(key: string): void {
    const keys = [key, ...(this.variants.get(key) ?? [])];
    this.variants.delete(key);
    for (const k of keys) {
      const h1 = this.h1.get(k);
      if (h1) { this.h1.delete(k); h1.leave(); }
      const h2 = this.h2.get(k);
      if (h2) { this.h2.delete(k); h2.leave(); }
      const d = this.dub.get(k);
      if (d) { this.dub.delete(k); d.leave(); }
    }
  }

  /** Pools by protocol, for tests and the admin view. */
  get size(): number {
    return this.h1.size + this.h2.size + this.dub.size;
  }

  closeIdle(): void {
    for (const p of this.h1.values()) p.closeIdle();
    for (const p of this.h2.values()) p.close();
    for (const p of this.dub.values()) p.closeIdle();
  }
}
