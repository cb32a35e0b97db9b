/**
 * The `split` filter: a route's `action.split` spreads its requests over clusters or label
 * subsets by weight, at random or pinned per caller by a header (`action.hashOn`).
 *
 *   routes:
 *     - match: { service: orders }
 *       action:
 *         split:
 *           - { cluster: orders, labels: { version: v1 }, weight: 90 }
 *           - { cluster: orders, labels: { version: v2 }, weight: 10 }
 *         hashOn: { header: x-user }
 */
import type { ConfigIssue } from '../../errors';
import type { FilterModule, RouteSeries } from '../module';
import { HEADER_NAME, checkClusterRef, isObj } from '../route-checks';
import { SPLIT_RQ, SplitFilter, splitLabels, type SplitActionConfig } from './split-filter';

export const SPLIT_MODULE: FilterModule = {
  name: 'split',
  targetKey: 'split',
  actionSchema: {
    /** Instead of `cluster`: one of these per request, in proportion to `weight`. */
    split: {
      type: 'array',
      minItems: 1,
      maxItems: 256,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['cluster', 'weight'],
        properties: {
          cluster: { type: 'string' },
          /** Only the endpoints of the cluster whose labels include all of these. */
          labels: { type: 'object', additionalProperties: { type: 'string' } },
          weight: { type: 'integer', minimum: 1, maximum: 1_000_000 },
        },
      },
    },
    /** With `split`: the same value of this header (Dubbo: attachment) always gets the same entry. */
    hashOn: {
      type: 'object',
      additionalProperties: false,
      required: ['header'],
      properties: { header: { type: 'string' } },
    },
  },
  checkRoute(route, clusters) {
    const issues: ConfigIssue[] = [];
    const a = route.action;
    if (!isObj(a)) return issues;
    if (Array.isArray(a.split)) {
      a.split.forEach((e, i) => {
        if (isObj(e)) checkClusterRef(issues, `/action/split/${i}`, e.cluster, e.labels, clusters);
      });
    }
    if (a.hashOn !== undefined && a.split === undefined) issues.push({ path: '/action/hashOn', message: 'needs split' });
    if (isObj(a.hashOn) && typeof a.hashOn.header === 'string' && !HEADER_NAME.test(a.hashOn.header)) {
      issues.push({ path: '/action/hashOn/header', message: 'is not a valid header name' });
    }
    return issues;
  },
  stats: [
    { name: SPLIT_RQ, kind: 'counter', by: 'route', help: 'Requests a split sent to each of its entries, by route, cluster and label subset' },
  ],
  routeSeries(route, routeName) {
    const split = (route.action as SplitActionConfig | undefined)?.split;
    if (!split) return [];
    const out: RouteSeries[] = [];
    const seen = new Set<string>();
    for (const e of split) {
      const labels = splitLabels(routeName, e);
      const key = `${labels.cluster}\u0000${labels.subset}`;
      if (!seen.has(key)) { seen.add(key); out.push({ name: SPLIT_RQ, labels }); }
    }
    return out;
  },
  create: (env) => new SplitFilter(env),
};
