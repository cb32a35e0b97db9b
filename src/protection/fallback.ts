/**
 * A route's fallback (routes[].fallback), compiled once per config: what the route answers when a
 * request is refused for one of the reasons in `on` (a limit, an open breaker, a cluster limit, no
 * healthy endpoint). The exchange decides (in its one place for local replies); each protocol's
 * downstream side only renders it (Downstream.fallback).
 */
import type { Stats } from '../stats/stats';
import type { FallbackConfig } from './config';

export interface CompiledFallback {
  readonly on: ReadonlySet<string>;
  readonly http: { readonly status: number; readonly headers: ReadonlyArray<readonly [string, string]>; readonly body: Buffer } | null;
  readonly grpc: { readonly status: number; readonly message: string } | null;
  readonly dubbo: { readonly value: unknown } | null;
  /** The sluice_fallback_total slot of this route and reason. */
  slot(stats: Stats, route: string, reason: string): number;
}

export function compileFallback(f: FallbackConfig): CompiledFallback {
  const slots = new Map<string, number>();
  let statsOf: Stats | null = null;
  return {
    on: new Set(f.on),
    http: f.http
      ? { status: f.http.status, headers: Object.entries(f.http.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v] as const), body: Buffer.from(f.http.body ?? '', 'utf8') }
      : null,
    grpc: f.grpc ? { status: f.grpc.status, message: f.grpc.message ?? '' } : null,
    dubbo: f.dubbo ? { value: f.dubbo.value ?? null } : null,
    slot(stats, route, reason) {
      if (stats !== statsOf) { slots.clear(); statsOf = stats; }
      let s = slots.get(reason);
      if (s === undefined) slots.set(reason, (s = stats.slot('sluice_fallback_total', { route, reason })));
      return s;
    },
  };
}
