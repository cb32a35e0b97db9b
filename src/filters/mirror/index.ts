/**
 * Mirroring: a route sends a copy of each matching request (or `percent` of them) to a second
 * cluster; the copy's answer is read and dropped.
 *
 *   mirror: { cluster: orders-shadow, percent: 100 }
 *
 * The copy never delays, fails or holds the request: it is started with the request, carries the
 * body (and a Dubbo call's frame) as it arrives, and is given up when it falls more than a
 * bounded amount behind (exchange.ts, MIRROR_BUFFER_BYTES) or outlives the route's timeout.
 */
import { CONTINUE, type Filter, type FilterEnv } from '../../exchange/filter';
import type { ClusterRuntime } from '../../upstream/cluster';
import type { FilterModule } from '../module';

export interface MirrorConfig {
  cluster: string;
  percent: number;
}

export const routeSchema = {
  mirror: {
    type: 'object',
    additionalProperties: false,
    required: ['cluster'],
    properties: {
      cluster: { type: 'string' },
      percent: { type: 'number', minimum: 0, maximum: 100, default: 100 },
    },
  },
};

interface Compiled {
  cluster: ClusterRuntime;
  share: number;
  sent: number;
  dropped: () => void;
}

export function createMirror(env: FilterEnv): Filter<Compiled> {
  return {
    name: 'mirror',
    compileRoute(route, routeName) {
      const c = route.mirror as MirrorConfig | undefined;
      if (!c) return null;
      const cluster = env.clusters.get(c.cluster);
      if (!cluster) throw new Error(`route ${routeName}: unknown mirror cluster "${c.cluster}" (config validation missed it)`);
      const dropSlot = env.stats.slot('sluice_mirror_rq_dropped_total', { cluster: cluster.name });
      return {
        cluster,
        share: (c.percent ?? 100) / 100,
        sent: env.stats.slot('sluice_mirror_rq_total', { cluster: cluster.name }),
        dropped: () => env.stats.inc(dropSlot),
      };
    },
    onRequest(ctx, m) {
      if (m.share < 1 && env.random() >= m.share) return CONTINUE;
      env.stats.inc(m.sent);
      ctx.mirror(m.cluster, m.dropped);
      ctx.note('mirror', m.cluster.name);
      return CONTINUE;
    },
  };
}

export const mirrorModule: FilterModule = {
  name: 'mirror',
  routeSchema,
  checkRoute(route, clusters) {
    const m = route.mirror as Record<string, unknown> | undefined;
    if (!m || typeof m.cluster !== 'string' || clusters.has(m.cluster)) return [];
    return [{ path: '/mirror/cluster', message: `unknown cluster "${m.cluster}"` }];
  },
  stats: [
    { name: 'sluice_mirror_rq_total', kind: 'counter', by: 'cluster', help: 'Copies of requests sent to this cluster as a mirror' },
    { name: 'sluice_mirror_rq_dropped_total', kind: 'counter', by: 'cluster', help: 'Mirror copies given up: the mirror fell behind, outlived the route timeout, or had no endpoint' },
  ],
  create: createMirror,
};
