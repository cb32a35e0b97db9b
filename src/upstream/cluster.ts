/**
 * A cluster as a worker sees it: endpoints with labels, label subsets, load
 * balancing, and the stat slots for its series. Rebuilt per config; the
 * connection pools behind the endpoints live longer (see upstream-pools.ts).
 */
import type { ClusterConfig } from '../config/config';
import { parseAddress } from '../net/address';
import type { Stats } from '../stats/stats';

export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** `host:port`, the pool key. */
  readonly key: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
  /** Requests in flight from this worker (least_request). */
  active: number;
  /** Smooth weighted round robin state. */
  current: number;
}

export interface ClusterStats {
  cxTotal: number; cxActive: number; cxConnectFail: number;
  rqTotal: number; rqActive: number; rqTimeout: number; rqReset: number; rqPendingOverflow: number;
  /** Indexed by status / 100. */
  rqClass: number[];
}

export function clusterStats(stats: Stats, name: string): ClusterStats {
  const s = (n: string) => stats.slot(n, { cluster: name });
  return {
    cxTotal: s('sluice_upstream_cx_total'),
    cxActive: s('sluice_upstream_cx_active'),
    cxConnectFail: s('sluice_upstream_cx_connect_fail_total'),
    rqTotal: s('sluice_upstream_rq_total'),
    rqActive: s('sluice_upstream_rq_active'),
    rqTimeout: s('sluice_upstream_rq_timeout_total'),
    rqReset: s('sluice_upstream_rq_reset_total'),
    rqPendingOverflow: s('sluice_upstream_rq_pending_overflow_total'),
    rqClass: [-1, 1, 2, 3, 4, 5].map((c) => (c < 0 ? -1 : stats.slot('sluice_upstream_rq_xx_total', { cluster: name, class: `${c}xx` }))),
  };
}

export class ClusterRuntime {
  readonly name: string;
  readonly endpoints: Endpoint[];
  readonly stats: ClusterStats;
  private readonly subsets = new Map<string, Endpoint[]>();
  private rr = 0;

  constructor(readonly config: ClusterConfig, stats: Stats) {
    this.name = config.name;
    this.endpoints = config.endpoints.map((e) => {
      const a = parseAddress(e.address);
      return { host: a.host, port: a.port, key: `${a.host}:${a.port}`, labels: e.labels, weight: e.weight, active: 0, current: 0 };
    });
    this.subsets.set('', this.endpoints);
    this.stats = clusterStats(stats, config.name);
  }

  prepareSubset(key: string, labels: Record<string, string> | undefined): void {
    if (this.subsets.has(key) || !labels) return;
    const want = Object.entries(labels);
    this.subsets.set(key, this.endpoints.filter((e) => want.every(([k, v]) => e.labels[k] === v)));
  }

  /** Pick an endpoint from a label subset, skipping `avoid` when there is a choice. */
  pick(subsetKey: string, avoid?: Endpoint): Endpoint | undefined {
    const eps = this.subsets.get(subsetKey) ?? this.endpoints;
    const n = eps.length;
    if (n === 0) return undefined;
    if (n === 1) return eps[0];
    let ep: Endpoint;
    if (this.config.lbPolicy === 'least_request') {
      // power of two choices
      const a = eps[(Math.random() * n) | 0];
      let b = eps[(Math.random() * n) | 0];
      if (b === a) b = eps[(eps.indexOf(a) + 1) % n];
      ep = b.active < a.active ? b : a;
    } else {
      ep = this.roundRobin(eps);
    }
    if (ep === avoid) ep = eps[(eps.indexOf(ep) + 1) % n];
    return ep;
  }

  private roundRobin(eps: Endpoint[]): Endpoint {
    let uniform = true;
    for (const e of eps) if (e.weight !== eps[0].weight) { uniform = false; break; }
    if (uniform) return eps[this.rr++ % eps.length];
    // smooth weighted round robin: even spread, exact proportions
    let total = 0;
    let best = eps[0];
    for (const e of eps) {
      e.current += e.weight;
      total += e.weight;
      if (e.current > best.current) best = e;
    }
    best.current -= total;
    return best;
  }
}
