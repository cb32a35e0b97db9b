/**
 * What a filter folder provides besides the filter itself: the schema of the sections it adds to
 * a route, the checks a schema cannot express, and the stats it counts. Config validation and the
 * stats registry read these, so adding a filter edits no other file but the list in index.ts.
 */
import type { ConfigIssue } from '../errors';
import type { Filter, FilterEnv } from '../exchange/filter';
import type { Family } from '../stats/stats';

export interface FilterModule {
  readonly name: string;
  /** JSON-schema properties this filter adds to a route (`{ fault: {...} }`). */
  readonly routeSchema?: Readonly<Record<string, unknown>>;
  /** ... and to a route's action (`{ split: [...] }`). */
  readonly actionSchema?: Readonly<Record<string, unknown>>;
  /**
   * Checks of one route the schema cannot express (references to clusters, labels no endpoint
   * has). `route` is the document as the schema left it; paths are relative to the route.
   */
  checkRoute?(route: Readonly<Record<string, unknown>>, clusters: ReadonlyMap<string, Readonly<Record<string, unknown>>>): ConfigIssue[];
  /** The stats this filter counts, declared once with their help text. */
  readonly stats: readonly Family[];
  create(env: FilterEnv): Filter;
}
