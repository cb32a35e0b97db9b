/**
 * Weighted split: a route's `action.split` sends each request to one of several clusters (or label
 * subsets of one), in proportion to their weights.
 *
 *   weights 90, 10:   [0 ─────────────── 90) [90 ── 100)
 *                           entry 0            entry 1
 *   point = random() × 100, or, with hashOn, hash(value) / 2^32 × 100
 *
 * With `hashOn: { header }` the point comes from the value of that header (Dubbo: attachment), so
 * one caller always lands on the same entry while the weights stay the same. The point is the
 * hash's fraction of the whole range, not a remainder, so a change of weights moves only the
 * callers whose point lies between the old and the new boundary (90/10 → 80/20 moves those in
 * [80, 90) to entry 1, nobody else). A request without the header is split at random.
 */
import { clusterTarget } from '../../exchange/router';
import { labelsKey } from '../../config/match';
import { CONTINUE, type Filter, type FilterEnv, type FilterStatus, type RequestContext, type UpstreamTarget } from '../../exchange/filter';
import type { Stats } from '../../stats/stats';

export const SPLIT_RQ = 'sluice_split_rq_total';

export interface SplitEntryConfig {
  readonly cluster: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly weight: number;
}

/** A route's action, as far as the split filter reads it. */
export interface SplitActionConfig {
  readonly split?: readonly SplitEntryConfig[];
  readonly hashOn?: { readonly header: string };
}

interface SplitEntry {
  readonly target: UpstreamTarget;
  /** The end of this entry's range: the sum of the weights up to and including it. */
  readonly upTo: number;
  readonly slot: number;
  /** How the access log names the choice: `orders` or `orders{version=v1}`. */
  readonly note: string;
}

export interface SplitState {
  readonly entries: readonly SplitEntry[];
  readonly total: number;
  /** Lower case; null: split at random. */
  readonly hashHeader: string | null;
}

/** The labels of an entry's series: its cluster and label subset (`version=v1`, '' for the whole cluster). */
export function splitLabels(routeName: string, e: SplitEntryConfig): Record<string, string> {
  return { route: routeName, cluster: e.cluster, subset: labelsKey(e.labels) };
}

export function entryNote(e: SplitEntryConfig): string {
  const subset = labelsKey(e.labels);
  return subset === '' ? e.cluster : `${e.cluster}{${subset}}`;
}

/**
 * The point of a value in [0, 1): FNV-1a over its UTF-16 code units, then MurmurHash3's
 * finaliser so that values differing in one character spread over the whole range. Stable
 * across workers, restarts and versions: the same value always maps to the same point.
 */
export function hashPoint(value: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    h ^= value.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 0x1_0000_0000;
}

export class SplitFilter implements Filter<SplitState> {
  readonly name = 'split';
  private readonly stats: Stats;
  private readonly random: () => number;

  constructor(private readonly env: FilterEnv) {
    this.stats = env.stats;
    this.random = env.random;
  }

  compileRoute(route: Readonly<Record<string, unknown>>, routeName: string): SplitState | null {
    const action = route.action as SplitActionConfig | undefined;
    const split = action?.split;
    if (!split) return null;
    let total = 0;
    const entries: SplitEntry[] = split.map((e) => {
      total += e.weight;
      return {
        // label subsets are prepared once, here, as for a route's own `labels`
        target: clusterTarget(this.env.clusters, e.cluster, e.labels, routeName),
        upTo: total,
        slot: this.stats.slot(SPLIT_RQ, splitLabels(routeName, e)),
        note: entryNote(e),
      };
    });
    return { entries, total, hashHeader: action!.hashOn ? action!.hashOn.header.toLowerCase() : null };
  }

  onRequest(ctx: RequestContext, s: SplitState): FilterStatus {
    const value = s.hashHeader !== null ? ctx.view.header(s.hashHeader) : undefined;
    const point = (value !== undefined ? hashPoint(value) : this.random()) * s.total;
    const entries = s.entries;
    let e = entries[entries.length - 1];
    for (let i = 0; i < entries.length - 1; i++) {
      if (point < entries[i].upTo) { e = entries[i]; break; }
    }
    ctx.setTarget(e.target);
    this.stats.inc(e.slot);
    ctx.note('split', e.note);
    return CONTINUE;
  }
}
