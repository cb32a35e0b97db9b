/**
 * Header edits: a route's `requestHeaders` and `responseHeaders` set and remove header fields (gRPC:
 * metadata; Dubbo: attachments) as a request goes upstream and its response comes back. The edits
 * are compiled once per route into HeaderOps; a request only hands them to the exchange, and each
 * protocol applies them as it writes the message in its own form.
 */
import { CONTINUE, type Filter, type FilterStatus, type HeaderOps, type RequestContext } from '../../exchange/filter';

/** `requestHeaders` or `responseHeaders`, as the schema leaves it. */
export interface HeaderEditConfig {
  readonly set?: Readonly<Record<string, string>>;
  readonly remove?: readonly string[];
}

export interface HeadersState {
  readonly request: HeaderOps | null;
  readonly response: HeaderOps | null;
}

/** Names lower case, as the exchange's HeaderOps has them. */
export function compileEdits(c: HeaderEditConfig | undefined): HeaderOps | null {
  if (!c) return null;
  const set = Object.entries(c.set ?? {}).map(([n, v]) => Object.freeze([n.toLowerCase(), v] as const));
  const remove = (c.remove ?? []).map((n) => n.toLowerCase());
  if (set.length === 0 && remove.length === 0) return null;
  return Object.freeze({ set: Object.freeze(set), remove: Object.freeze(remove) });
}

export class HeadersFilter implements Filter<HeadersState> {
  readonly name = 'headers';

  compileRoute(route: Readonly<Record<string, unknown>>): HeadersState | null {
    const request = compileEdits(route.requestHeaders as HeaderEditConfig | undefined);
    const response = compileEdits(route.responseHeaders as HeaderEditConfig | undefined);
    return request || response ? { request, response } : null;
  }

  onRequest(ctx: RequestContext, s: HeadersState): FilterStatus {
    if (s.request !== null) ctx.editRequest(s.request);
    if (s.response !== null) ctx.editResponse(s.response);
    return CONTINUE;
  }
}
