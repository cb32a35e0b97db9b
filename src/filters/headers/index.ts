/**
 * The `headers` filter: a route's `requestHeaders` and `responseHeaders` sections.
 *
 *   routes:
 *     - match: { service: orders }
 *       action: { cluster: orders }
 *       requestHeaders:  { set: { x-env: prod }, remove: [x-debug] }
 *       responseHeaders: { set: { x-served-by: sluice }, remove: [server] }
 */
import type { ConfigIssue } from '../../errors';
import type { FilterModule } from '../module';
import { HEADER_NAME, isObj, pointer } from '../route-checks';
import { HeadersFilter } from './headers-filter';

const edits = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    /** name: value, replacing every field of that name (names compare without case). */
    set: { type: 'object', additionalProperties: { type: 'string' }, minProperties: 1 },
    /** names of fields removed. */
    remove: { type: 'array', items: { type: 'string' }, minItems: 1 },
  },
};

/**
 * Fields Sluice writes itself (framing, the connection, the routed host): an edit of them would
 * make the message say another thing than the bytes that follow it, or reach another host than
 * the one routed.
 */
const MANAGED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings']);

/** A value every protocol carries as it is: visible ASCII, spaces and tabs inside, none at the ends. */
const VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$/;

function checkEdits(issues: ConfigIssue[], path: string, c: unknown): void {
  if (!isObj(c)) return;
  const seen = new Map<string, string>();
  const name = (p: string, n: string, what: string) => {
    if (!HEADER_NAME.test(n)) { issues.push({ path: p, message: 'is not a valid header name' }); return; }
    const lower = n.toLowerCase();
    if (MANAGED.has(lower)) { issues.push({ path: p, message: `${lower} is written by Sluice and cannot be edited` }); return; }
    const before = seen.get(lower);
    if (before !== undefined) issues.push({ path: p, message: `names the same header as ${before} (names compare without case)` });
    else seen.set(lower, what);
  };
  if (isObj(c.set)) {
    for (const [n, v] of Object.entries(c.set)) {
      const p = `${path}/set/${pointer(n)}`;
      name(p, n, `set/${n}`);
      if (typeof v === 'string' && !VALUE.test(v)) {
        issues.push({ path: p, message: 'must be printable ASCII without CR, LF, NUL or other control characters, and not begin or end with white space' });
      }
    }
  }
  if (Array.isArray(c.remove)) {
    c.remove.forEach((n, i) => { if (typeof n === 'string') name(`${path}/remove/${i}`, n, `remove/${i}`); });
  }
}

export const HEADERS_MODULE: FilterModule = {
  name: 'headers',
  routeSchema: {
    /** Changes to the request as it goes upstream (HTTP fields, gRPC metadata, Dubbo attachments). */
    requestHeaders: edits,
    /** Changes to the response as it goes to the client. */
    responseHeaders: edits,
  },
  checkRoute(route) {
    const issues: ConfigIssue[] = [];
    checkEdits(issues, '/requestHeaders', route.requestHeaders);
    checkEdits(issues, '/responseHeaders', route.responseHeaders);
    return issues;
  },
  stats: [],
  create: () => new HeadersFilter(),
};
