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
const MTLS = '#mtls:';
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
    const k = `${key}${MTLS}${principalsKey(tls)}`;
    let v = this.variants.get(key);
    if (!v) this.variants.set(key, (v = new Set()));
    v.add(k);
    return k;
  }

  /** `group`: the pool's key, so that retirement's time cap finds the pool's connections. */
  private dialTls(tls: OutboundTls | null, group: string, alpn?: readonly string[]) {
    return tls && this.tls ? { runtime: this.tls, spec: tls, alpn, group } : null;
  }

  http1(host: string, port: number, key: string, limits: PoolLimits, tls: OutboundTls | null = null): Http1Pool {
    const k = this.poolKey(key, tls);
    let p = this.h1.get(k);
    if (!p) {
      p = new Http1Pool(host, port, this.stats(), limits, this.dialTls(tls, k, H1_ALPN));
      this.h1.set(k, p);
    }
    return p;
  }

  http2(host: string, port: number, key: string, tls: OutboundTls | null = null): Http2Pool {
    const k = this.poolKey(key, tls);
    let p = this.h2.get(k);
    if (!p) {
      p = new Http2Pool(host, port, this.stats(), this.dialTls(tls, k, H2_ALPN));
      this.h2.set(k, p);
    }
    return p;
  }

  dubbo(host: string, port: number, key: string, tls: OutboundTls | null = null): DubboPool {
    const k = this.poolKey(key, tls);
    let p = this.dub.get(k);
    if (!p) {
      p = new DubboPool(host, port, this.stats(), this.dialTls(tls, k));
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
    for (const k of keys) this.leavePool(k);
  }

  private leavePool(k: string): void {
    const h1 = this.h1.get(k);
    if (h1) { this.h1.delete(k); h1.leave(); }
    const h2 = this.h2.get(k);
    if (h2) { this.h2.delete(k); h2.leave(); }
    const d = this.dub.get(k);
    if (d) { this.dub.delete(k); d.leave(); }
  }

  /**
   * Retirement (a new identity, or expected peer identities that changed): the mTLS pools whose
   * expected principals `pick` selects are given up as leave() gives up an endpoint's (HTTP/1
   * connections close after their exchange, HTTP/2 ones get GOAWAY, Dubbo ones close when no call
   * is pending); the next request opens a new pool, whose connections are made with the identity
   * and expectations in force. Returns the keys of the pools given up, for the time cap.
   */
  retireTls(pick: (principals: string) => boolean): Set<string> {
    const out = new Set<string>();
    for (const [endpoint, variants] of this.variants) {
      for (const k of [...variants]) {
        if (!pick(k.slice(k.indexOf(MTLS) + MTLS.length))) continue;
        variants.delete(k);
        out.add(k);
        this.leavePool(k);
      }
      if (variants.size === 0) this.variants.delete(endpoint);
    }
    return out;
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

/** The expected principals of an mTLS pool, as its key writes them. */
export function principalsKey(tls: OutboundTls): string {
  return tls.principals?.join(',') ?? '*';
}
