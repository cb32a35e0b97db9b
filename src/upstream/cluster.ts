/**
 * A cluster as a worker sees it: endpoints with labels, label subsets, load
 * balancing, and the stat slots for its series. Rebuilt per config; its endpoints
 * can also be replaced on their own (endpoint-directory.ts); the connection pools
 * behind the endpoints live longer (see upstream-pools.ts).
 */
import type { ClusterConfig, EndpointConfig } from '../config/config';
import { parseAddress } from '../net/address';
import type { Stats } from '../stats/stats';
import { clusterProtection, type ClusterProtection } from '../protection';

export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** `host:port`, the pool key. */
  readonly key: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly weight: number;
  /** Requests in flight from this worker (least_request). */
  active: number;
}

/**
 * A label subset with its own balancing state: subsets overlap, and sharing one
 * round-robin counter (or one set of smooth-WRR weights) between them would skew each.
 */
interface Subset {
  readonly endpoints: Endpoint[];
  readonly uniform: boolean;
  readonly totalWeight: number;
  /** Smooth weighted round robin: current weight per endpoint, same index. */
  readonly current: number[];
  rr: number;
}

export interface ClusterStats {
  cxTotal: number; cxActive: number; cxConnectFail: number;
  rqTotal: number; rqActive: number; rqTimeout: number; rqReset: number; rqPendingOverflow: number;
  /** Dubbo: connections replaced because they stopped answering, and calls moved off them unsent. */
  cxReplaced: number; rqMoved: number;
  /** Attempts after the first; requests in flight that are being retried (the retry budget's measure). */
  rqRetry: number; rqRetryActive: number;
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
    cxReplaced: s('sluice_upstream_cx_replaced_total'),
    rqMoved: s('sluice_upstream_rq_moved_total'),
    rqRetry: s('sluice_upstream_rq_retry_total'),
    rqRetryActive: s('sluice_upstream_rq_retry_active'),
    rqClass: [-1, 1, 2, 3, 4, 5].map((c) => (c < 0 ? -1 : stats.slot('sluice_upstream_rq_xx_total', { cluster: name, class: `${c}xx` }))),
  };
}

export class ClusterRuntime {
  readonly name: string;
  /** The endpoints in force: the config's, or a list that replaced them (setEndpoints). */
  endpoints: Endpoint[];
  readonly stats: ClusterStats;
  /** Its limits across every worker and its breakers. */
  readonly protection: ClusterProtection;
  private readonly subsets = new Map<string, Subset>();
  /** The labels each subset selects, to rebuild it when the endpoints change. */
  private readonly subsetLabels = new Map<string, Record<string, string>>();
  /** Subsets chosen by a test of the labels (a Dubbo call's group and version), likewise. */
  private readonly subsetTests = new Map<string, (labels: Readonly<Record<string, string>>) => boolean>();
  private all: Subset;

  /**
   * `endpoints`: a list that replaces the config's (endpoint-directory.ts).
   * `random` is for tests: least_request samples with it, round robin starts with it.
   */
  constructor(readonly config: ClusterConfig, stats: Stats, private readonly random: () => number = Math.random,
    endpoints?: readonly EndpointConfig[]) {
    this.name = config.name;
    this.endpoints = (endpoints ?? config.endpoints).map(toEndpoint);
    this.all = subset(this.endpoints, random);
    this.subsets.set('', this.all);
    this.stats = clusterStats(stats, config.name);
    this.protection = clusterProtection(config, stats);
  }

  prepareSubset(key: string, labels: Record<string, string> | undefined): void {
    if (this.subsets.has(key) || !labels) return;
    this.subsetLabels.set(key, labels);
    this.subsets.set(key, subset(select(this.endpoints, labels), this.random));
  }

  /**
   * A subset of the endpoints whose labels pass `test`, kept under `key` (and rebuilt when the
   * endpoints change). At most MAX_TEST_SUBSETS are kept: the keys come from requests, so past
   * that the oldest are forgotten (and built again when asked for).
   */
  prepareSubsetWhere(key: string, test: (labels: Readonly<Record<string, string>>) => boolean): void {
    if (this.subsets.has(key)) return;
    if (this.subsetTests.size >= MAX_TEST_SUBSETS) {
      const oldest = this.subsetTests.keys().next().value as string;
      this.subsetTests.delete(oldest);
      this.subsets.delete(oldest);
    }
    this.subsetTests.set(key, test);
    this.subsets.set(key, subset(this.endpoints.filter((e) => test(e.labels)), this.random));
  }

  /**
   * Replaces the endpoints (null: back to the config's), keeping routes, subsets and the
   * requests in flight: an endpoint that stays keeps its object, so its least-request count
   * stays true. Returns the pool keys this cluster no longer uses.
   */
  setEndpoints(list: readonly EndpointConfig[] | null): string[] {
    const before = new Map(this.endpoints.map((e) => [e.key, e]));
    this.endpoints = (list ?? this.config.endpoints).map((c) => {
      const next = toEndpoint(c);
      const old = before.get(next.key);
      return old && old.weight === next.weight && sameLabels(old.labels, next.labels) ? old : next;
    });
    this.all = subset(this.endpoints, this.random);
    this.subsets.set('', this.all);
    for (const [key, labels] of this.subsetLabels) this.subsets.set(key, subset(select(this.endpoints, labels), this.random));
    for (const [key, test] of this.subsetTests) this.subsets.set(key, subset(this.endpoints.filter((e) => test(e.labels)), this.random));
    for (const e of this.endpoints) before.delete(e.key);
    return [...before.keys()];
  }

  /** The endpoints of a label subset ('' = all). */
  subsetEndpoints(subsetKey: string): readonly Endpoint[] {
    return (this.subsets.get(subsetKey) ?? this.all).endpoints;
  }

  /** Pick an endpoint from a label subset, skipping `avoid` when there is a choice. */
  pick(subsetKey: string, avoid?: Endpoint): Endpoint | undefined {
    const sub = this.subsets.get(subsetKey) ?? this.all;
    const eps = sub.endpoints;
    const n = eps.length;
    if (n === 0) return undefined;
    if (n === 1) return eps[0];
    if (this.config.lbPolicy === 'least_request') return this.leastRequest(eps, avoid);
    const ep = this.roundRobin(sub);
    if (ep !== avoid) return ep;
    // step the same sequence again: the next pick is another endpoint unless one weight dominates
    for (let i = 0; i < n; i++) {
      const next = this.roundRobin(sub);
      if (next !== avoid) return next;
    }
    return eps[(eps.indexOf(ep) + 1) % n];
  }

  /** Power of two choices, weighted: the lower (active + 1) / weight wins. */
  private leastRequest(eps: Endpoint[], avoid: Endpoint | undefined): Endpoint {
    const n = eps.length;
    const i = Math.min(n - 1, Math.floor(this.random() * n));
    let j = Math.min(n - 2, Math.floor(this.random() * (n - 1)));
    if (j >= i) j++; // a second, different endpoint
    const a = eps[i];
    const b = eps[j];
    if (a === avoid) return b;
    if (b === avoid) return a;
    return (b.active + 1) * a.weight < (a.active + 1) * b.weight ? b : a;
  }

  private roundRobin(sub: Subset): Endpoint {
    const eps = sub.endpoints;
    if (sub.uniform) {
      const ep = eps[sub.rr];
      sub.rr = sub.rr + 1 === eps.length ? 0 : sub.rr + 1;
      return ep;
    }
    // smooth weighted round robin (nginx): even spread, exact proportions over each cycle
    const cur = sub.current;
    let best = 0;
    for (let i = 0; i < eps.length; i++) {
      cur[i] += eps[i].weight;
      if (cur[i] > cur[best]) best = i;
    }
    cur[best] -= sub.totalWeight;
    return eps[best];
  }
}

function toEndpoint(e: EndpointConfig): Endpoint {
  const a = parseAddress(e.address);
  return { host: a.host, port: a.port, key: `${a.host}:${a.port}`, labels: e.labels ?? {}, weight: e.weight ?? 1, active: 0 };
}

function select(endpoints: Endpoint[], labels: Record<string, string>): Endpoint[] {
  const want = Object.entries(labels);
  return endpoints.filter((e) => want.every(([k, v]) => e.labels[k] === v));
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** Subsets chosen by a test that a cluster keeps at once. */
const MAX_TEST_SUBSETS = 256;

/**
 * Round robin starts at a random endpoint, so workers and fresh configs do not all start on the
 * first. An endpoint of weight 0 (a Dubbo provider an operator weighed out; config weights are 1
 * and up) takes nothing while another has weight; when all have 0 they share alike, as Dubbo's
 * own balancers do.
 */
function subset(all: Endpoint[], random: () => number): Subset {
  const endpoints = all.some((e) => e.weight <= 0) && all.some((e) => e.weight > 0) ? all.filter((e) => e.weight > 0) : all;
  let total = 0;
  for (const e of endpoints) total += e.weight;
  return {
    endpoints,
    uniform: endpoints.every((e) => e.weight === endpoints[0].weight),
    totalWeight: total,
    current: endpoints.map(() => 0),
    rr: endpoints.length ? Math.min(endpoints.length - 1, Math.floor(random() * endpoints.length)) : 0,
  };
}
