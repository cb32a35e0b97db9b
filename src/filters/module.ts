/**
 * What a filter folder provides besides the filter itself: the schema of the sections it adds to
 * a route, the checks a schema cannot express, and the stats it counts. Config validation and the
 * stats registry read these, so adding a filter edits no other file but the list in index.ts.
 */
import type { ConfigIssue } from '../errors';
import type { Filter, FilterEnv } from '../exchange/filter';
import type { SharedMemory } from '../shared/shared-memory';
import type { Family, Stats } from '../stats/stats';

/**
 * What a filter keeps on the main thread across configs: shared-memory slots its rules own, so
 * that a rule a reload leaves unchanged keeps its state. Made once per Sluice.
 */
export interface FilterMain {
  /**
   * A valid config is about to be published: what its workers need (plain data, cloned with the
   * config: FilterEnv.data[module name]).
   */
  publish(config: Readonly<Record<string, unknown>>): unknown;
  /** The filter's part of the admin view GET /protection (a JSON value), if it has one. */
  protection?(stats: Stats): unknown;
}

/** One series a filter counts for a route: registered when a config using the route is published. */
export interface RouteSeries {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface FilterModule {
  readonly name: string;
  /**
   * JSON-schema properties this filter adds at the top of the config (`{ authorization: [...] }`),
   * for policy that is not a route's (defaults included: the filter reads its section from
   * FilterEnv.config).
   */
  readonly configSchema?: Readonly<Record<string, unknown>>;
  /**
   * Checks of the filter's top-level sections the schema cannot express, on the whole document as
   * the schema left it (valid or not). Paths are absolute (`/authorization/0/sourceRanges/1`).
   */
  checkConfig?(doc: Readonly<Record<string, unknown>>): ConfigIssue[];
  /** JSON-schema properties this filter adds to a route (`{ fault: {...} }`). */
  readonly routeSchema?: Readonly<Record<string, unknown>>;
  /** ... and to a route's action (`{ split: [...] }`). */
  readonly actionSchema?: Readonly<Record<string, unknown>>;
  /**
   * An action key of this filter's that says where a request goes, instead of the action's
   * `cluster`, `passthrough` or `directResponse` (`split`): a route's action must have exactly one
   * of them, and a route that uses this one needs the filter in `filters`.
   */
  readonly targetKey?: string;
  /**
   * Checks of one route the schema cannot express (references to clusters, labels no endpoint
   * has). `route` is the document as the schema left it, valid or not: a check looks only at
   * values of the right type. Paths are relative to the route (`/fault/abort/status`).
   */
  checkRoute?(route: Readonly<Record<string, unknown>>, clusters: ReadonlyMap<string, Readonly<Record<string, unknown>>>): ConfigIssue[];
  /** The stats this filter counts, declared once with their help text. */
  readonly stats: readonly Family[];
  /**
   * The series of `by: 'route'` families this filter counts for a route of a valid config
   * (none when the route does not use the filter), so that the main thread allocates them.
   */
  routeSeries?(route: Readonly<Record<string, unknown>>, routeName: string): RouteSeries[];
  /** The series of `by: 'rule'` families this filter counts under a valid config (per rule of its top-level section). */
  configSeries?(config: Readonly<Record<string, unknown>>): RouteSeries[];
  /** Main thread, once per Sluice: the state the filter keeps there (see FilterMain). */
  main?(memory: SharedMemory): FilterMain;
  /** The key of this filter's view in GET /protection (`rateLimits`). */
  readonly protectionKey?: string;
  create(env: FilterEnv): Filter;
}
