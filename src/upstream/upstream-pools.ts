/**
 * Every upstream pool of a worker, by endpoint. Pools outlive configs, so a
 * reload keeps its warm connections to endpoints that did not change.
 */
import type { Stats } from '../stats/stats';
import { Http1Pool, type PoolLimits } from '../protocols/http1/http1-pool';
import { Http2Pool } from '../protocols/http2/http2-pool';
import { DubboPool } from '../protocols/dubbo/dubbo-pool';

export class UpstreamPools {
  private readonly h1 = new Map<string, Http1Pool>();
  private readonly h2 = new Map<string, Http2Pool>();
  private readonly dub = new Map<string, DubboPool>();

  /** `stats`: the stats of the config in force (pools outlive configs). */
  constructor(private readonly stats: () => Stats) {}

  http1(host: string, port: number, key: string, limits: PoolLimits): Http1Pool {
    let p = this.h1.get(key);
    if (!p) {
      p = new Http1Pool(host, port, this.stats(), limits);
      this.h1.set(key, p);
    }
    return p;
  }

  http2(host: string, port: number, key: string): Http2Pool {
    let p = this.h2.get(key);
    if (!p) {
      p = new Http2Pool(host, port, this.stats());
      this.h2.set(key, p);
    }
    return p;
  }

  dubbo(host: string, port: number, key: string): DubboPool {
    let p = this.dub.get(key);
    if (!p) {
      p = new DubboPool(host, port, this.stats());
      this.dub.set(key, p);
    }
    return p;
  }

  /**
   * The endpoint `key` is in no cluster any more: its pools are dropped, their connections close
   * once what is in flight on them ends. A request sent there later (an original destination
   * that happens to be the same address) opens a new pool.
   */
  leave(key: string): void {
    const h1 = this.h1.get(key);
    if (h1) { this.h1.delete(key); h1.leave(); }
    const h2 = this.h2.get(key);
    if (h2) { this.h2.delete(key); h2.leave(); }
    const d = this.dub.get(key);
    if (d) { this.dub.delete(key); d.leave(); }
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
