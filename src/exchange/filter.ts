/**
 * The filter contract. A filter sees the request view and answers continue or
 * stop; a filter that stops either replies locally or calls `resume()` later.
 * Filters never see sockets; the codec renders local replies in its own protocol.
 */
import type { RequestView } from './request-view';

export const CONTINUE = 0;
export const STOP = 1;
export type FilterStatus = typeof CONTINUE | typeof STOP;

/** Why Sluice answered instead of the upstream; sent as the `x-sluice-reason` header. */
export type LocalReason =
  | 'bad_request'
  | 'no_route'
  | 'upstream_connect_failed'
  | 'upstream_dns_failed'
  | 'upstream_timeout'
  | 'upstream_reset'
  | 'overflow'
  | 'direct_response'
  | 'no_healthy_upstream'
  | 'denied'
  | 'rate_limited';

export interface LocalReply {
  status: number;
  reason: LocalReason;
  body?: string;
}

export interface FilterContext {
  readonly view: RequestView;
  /** Stop the chain and answer with a local reply. */
  reply(r: LocalReply): void;
  /**
   * Continue the chain after a STOP. Called synchronously inside onRequest it means the
   * same as returning CONTINUE; a second call for the same stop is ignored.
   */
  resume(): void;
}

export interface StreamFilter {
  onRequest(ctx: FilterContext): FilterStatus;
}

/** Validates its config once; `create` is cheap and runs per request. */
export interface FilterFactory {
  readonly name: string;
  create(): StreamFilter;
}
