/**
 * The filters Sluice has, by name. The config lists which run and in which order (`filters`);
 * each filter's route section, checks and stats come from its own folder.
 */
import type { Filter, FilterEnv } from '../exchange/filter';
import { declareFamilies } from '../stats/stats';
import { ADAPTIVE_MODULE } from './adaptive';
import { AUTHZ_MODULE } from './authz';
import { FAULT_MODULE } from './fault';
import { HEADERS_MODULE } from './headers';
import type { FilterModule, RouteSeries } from './module';
import { RATELIMIT_MODULE } from './ratelimit';
import { SPLIT_MODULE } from './split';
import { mirrorModule } from './mirror';
import { retryModule } from './retry';

/**
 * Every built-in filter, in the default order of the chain: authorization first (nothing acts on a
 * request that is refused: no header edit, no fault, no copy to a mirror), then rate limits (a
 * request authorization refuses takes no token), then header edits (a
 * fault's or a split's choice never depends on them), then faults (a delayed or aborted request is
 * never split), then the split that picks the target. Mirroring and retries come after.
 * Adaptive limiting comes right after authorization (and rate limits): a refused call costs
 * the application nothing, and a call refused for who sent it never counts as load.
 */
export const FILTER_MODULES: readonly FilterModule[] = [AUTHZ_MODULE, RATELIMIT_MODULE, ADAPTIVE_MODULE, HEADERS_MODULE, FAULT_MODULE, SPLIT_MODULE, mirrorModule, retryModule];

for (const m of FILTER_MODULES) declareFamilies(m.stats);

export const DEFAULT_FILTERS: readonly string[] = FILTER_MODULES.map((m) => m.name);

const BY_NAME = new Map(FILTER_MODULES.map((m) => [m.name, m]));

export function filterModule(name: string): FilterModule | undefined {
  return BY_NAME.get(name);
}

/** The chain a config names, created for one config on one thread. */
export function createFilters(names: readonly string[], env: FilterEnv): Filter[] {
  return names.map((n) => {
    const m = BY_NAME.get(n);
    if (!m) throw new Error(`unknown filter "${n}" (config validation missed it)`);
    return m.create(env);
  });
}

/**
 * The per-route series (`by: 'route'`) the listed filters count under a valid config, for the
 * main thread to allocate before it publishes the config. Route names as the router gives them.
 */
export function filterSeries(config: { readonly routes: readonly object[]; readonly filters: readonly string[] }): RouteSeries[] {
  const out: RouteSeries[] = [];
  for (const n of config.filters) {
    const m = BY_NAME.get(n);
    if (m?.configSeries) out.push(...m.configSeries(config as unknown as Readonly<Record<string, unknown>>));
  }
  config.routes.forEach((r, i) => {
    const route = r as Readonly<Record<string, unknown>>;
    const name = typeof route.name === 'string' ? route.name : `routes[${i}]`;
    for (const n of config.filters) {
      const m = BY_NAME.get(n);
      if (m?.routeSeries) out.push(...m.routeSeries(route, name));
    }
  });
  return out;
}
