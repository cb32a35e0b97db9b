/**
 * Dubbo's registry entries in ZooKeeper, as Dubbo 2.x writes them:
 *
 *   /dubbo/<interface>/providers/<URL.encode(url)>       one ephemeral node per exported service
 *   /dubbo/<interface>/configurators/<URL.encode(url)>   overrides, written by an admin console
 *
 *   dubbo://10.0.0.7:20880/com.acme.Orders?application=orders&group=g1&version=1.0.0&weight=100
 *          &methods=get,put&timeout=3000&side=provider&timestamp=1700000000000&...
 *   override://10.0.0.7:20880/com.acme.Orders?category=configurators&disabled=true&dynamic=false
 *   override://0.0.0.0/com.acme.Orders?category=configurators&weight=200      (every provider)
 *
 * The node name is the whole URL, URL-encoded once (Java's URLEncoder: a space is '+'); the
 * node's data is not used. Parameter values are taken as written, as Dubbo's URL.valueOf does.
 *
 * Matching, as Dubbo's own consumer does it:
 * - a call goes only to providers of its group and version (UrlUtils.isMatch): a consumer group
 *   of `*` takes any group, a list `a,b` takes either; a version of `*` takes any; no group
 *   matches only providers without one, and likewise for the version;
 * - an override applies to the providers at its host (0.0.0.0: all) and port (absent: any), of
 *   its application, group and version when it names them, unless it says `enabled=false`;
 *   overrides for every host apply first, then those for one host; its other parameters replace
 *   the provider's (AbstractConfigurator);
 * - a provider is out when its URL, after overrides, has `disabled=true`, or has no `disabled`
 *   and says `enabled=false` (RegistryDirectory.toInvokers);
 * - weight: the `weight` parameter, 100 when absent (Dubbo's default).
 */

export interface DubboUrl {
  protocol: string;
  host: string;
  port: number;
  path: string;
  params: Record<string, string>;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: 'malformed' | 'unsupported'; detail: string };

export const DUBBO_DEFAULT_WEIGHT = 100;
/** Parameters of an override that select providers; the rest are applied to them. */
const CONDITION_KEYS = new Set(['category', 'check', 'dynamic', 'enabled', 'group', 'version', 'application', 'side',
  'configVersion', 'compatible_config', 'interfaces', 'priority', 'anyhost']);

/** Java URLDecoder.decode: '+' is a space, %XX a byte of UTF-8. Undefined when it is not valid. */
export function javaUrlDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

const same = (x: string) => x;

/**
 * `proto://[user[:pass]@]host[:port]/path?k=v&...`, decoded. `intern` may return a shared copy
 * of each key and value: thousands of providers repeat the same few.
 */
export function parseDubboUrl(text: string, intern: (s: string) => string = same): DubboUrl | string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?]*)(\/[^?]*)?(?:\?(.*))?$/s.exec(text);
  if (!m) return 'not a URL (protocol://host:port/path?params)';
  const [, protocol, authority, rawPath = '', query] = m;
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  let host: string;
  let portText: string;
  if (hostPort.startsWith('[')) {
    const end = hostPort.indexOf(']');
    if (end < 0) return 'unterminated IPv6 address';
    host = hostPort.slice(1, end);
    if (!/^[0-9a-fA-F:.]+(%[\w.-]+)?$/.test(host) || !host.includes(':')) return `"${host}" is not an IPv6 address`;
    const rest = hostPort.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return `"${hostPort}" is not [v6]:port`;
    portText = rest.slice(1);
  } else {
    const colon = hostPort.lastIndexOf(':');
    host = colon < 0 ? hostPort : hostPort.slice(0, colon);
    portText = colon < 0 ? '' : hostPort.slice(colon + 1);
    if (!/^[A-Za-z0-9_.-]+$/.test(host)) return `"${host}" is not a host`;
  }
  if (portText !== '' && (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535)) return `"${portText}" is not a port`;
  // a plain object (shared hidden classes keep thousands of them small); `__proto__` is no parameter
  const params: Record<string, string> = {};
  if (query) {
    for (const part of query.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim();
      if (key === '' || key === '__proto__') continue;
      // Dubbo's URL.valueOf: a bare key is its own value; `default.` prefixes are defaults
      params[intern(key)] = intern(eq < 0 ? part : part.slice(eq + 1).trim());
    }
  }
  return { protocol: intern(protocol.toLowerCase()), host: intern(host.toLowerCase()), port: portText === '' ? 0 : Number(portText), path: intern(rawPath.replace(/^\/+/, '')), params };
}

function param(u: DubboUrl, key: string): string | undefined {
  const v = u.params[key] ?? u.params[`default.${key}`];
  return v === undefined || v === '' ? undefined : v;
}

/** A provider node's name → its URL, or why it was skipped. */
export function parseProviderNode(child: string, intern?: (s: string) => string): ParseResult<DubboUrl> {
  const decoded = javaUrlDecode(child);
  if (decoded === undefined) return { ok: false, reason: 'malformed', detail: 'bad %-encoding' };
  const url = parseDubboUrl(decoded, intern);
  if (typeof url === 'string') return { ok: false, reason: 'malformed', detail: url };
  if (url.protocol !== 'dubbo') return { ok: false, reason: 'unsupported', detail: `protocol ${url.protocol}:// (Sluice routes dubbo:// providers)` };
  if (url.port === 0) return { ok: false, reason: 'malformed', detail: 'no port' };
  if (url.host === '0.0.0.0' || url.host === '::' || url.host === 'anyhost') return { ok: false, reason: 'malformed', detail: 'a wildcard host is no provider address' };
  const w = param(url, 'weight');
  if (w !== undefined && !/^\d{1,9}$/.test(w)) return { ok: false, reason: 'malformed', detail: `weight "${w}" is not a whole number` };
  return { ok: true, value: url };
}

/** A configurators node's name → an override, or why it was skipped (`empty://` is skipped silently: null). */
export function parseOverrideNode(child: string): ParseResult<DubboUrl> | null {
  const decoded = javaUrlDecode(child);
  if (decoded === undefined) return { ok: false, reason: 'malformed', detail: 'bad %-encoding' };
  const url = parseDubboUrl(decoded);
  if (typeof url === 'string') return { ok: false, reason: 'malformed', detail: url };
  if (url.protocol === 'empty') return null;
  if (url.protocol !== 'override') return { ok: false, reason: 'unsupported', detail: `protocol ${url.protocol}:// in configurators` };
  return { ok: true, value: url };
}

const anyHost = (u: DubboUrl) => u.host === '0.0.0.0' || u.host === '' || u.params.anyhost === 'true';

/** Dubbo's consumer-side group and version rule (UrlUtils.isMatch). */
export function dubboMatches(provider: { group?: string; version?: string }, want: { group?: string; version?: string }): boolean {
  const pg = provider.group || '';
  const pv = provider.version || '';
  const g = want.group || '';
  const v = want.version || '';
  const groupOk = g === '*' || g === pg || (g.includes(',') && g.split(',').some((x) => x.trim() === pg));
  const versionOk = v === '*' || v === pv;
  return groupOk && versionOk;
}

function overrideApplies(o: DubboUrl, p: DubboUrl): boolean {
  if (o.params.enabled === 'false') return false;
  if (!anyHost(o) && o.host !== p.host) return false;
  if (o.port !== 0 && o.port !== p.port) return false;
  const app = param(o, 'application');
  if (app !== undefined && app !== '*' && app !== param(p, 'application')) return false;
  const g = param(o, 'group');
  if (g !== undefined && g !== '*' && !g.split(',').includes(param(p, 'group') ?? '')) return false;
  const v = param(o, 'version');
  if (v !== undefined && v !== '*' && v !== (param(p, 'version') ?? '')) return false;
  // `~key=value` conditions of newer admin consoles
  for (const [k, val] of Object.entries(o.params)) {
    if (k.startsWith('~') && val !== '*' && val !== p.params[k.slice(1)]) return false;
  }
  return true;
}

/** Overrides in the order Dubbo applies them: every host first, then one host; by `priority` within. */
export function sortOverrides(overrides: DubboUrl[]): DubboUrl[] {
  const prio = (o: DubboUrl) => Number(o.params.priority) || 0;
  return overrides
    .map((o, i) => ({ o, i }))
    .sort((a, b) => (anyHost(a.o) ? 0 : 1) - (anyHost(b.o) ? 0 : 1) || prio(a.o) - prio(b.o) || a.i - b.i)
    .map((x) => x.o);
}

/** The provider's URL with the matching overrides applied (a new object; `p` is untouched). */
export function applyOverrides(p: DubboUrl, sortedOverrides: readonly DubboUrl[]): DubboUrl {
  let params: Record<string, string> | null = null;
  for (const o of sortedOverrides) {
    if (!overrideApplies(o, p)) continue;
    params ??= { ...p.params };
    for (const [k, v] of Object.entries(o.params)) if (!CONDITION_KEYS.has(k) && !k.startsWith('~')) params[k] = v;
  }
  return params ? { ...p, params } : p;
}

/** RegistryDirectory.toInvokers: `disabled` wins over `enabled`. */
export function providerEnabled(p: DubboUrl): boolean {
  const d = p.params.disabled;
  if (d !== undefined) return d !== 'true';
  return p.params.enabled !== 'false';
}

export function providerWeight(p: DubboUrl): number {
  const w = param(p, 'weight');
  return w !== undefined && /^\d{1,9}$/.test(w) ? Number(w) : DUBBO_DEFAULT_WEIGHT;
}

/** `host:port`, with brackets for IPv6, as endpoint addresses are written in the config. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Java's URLEncoder.encode, for tests and tools that write entries the way Dubbo does. */
export function javaUrlEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, '+').replace(/[!'()~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Dubbo's default warm-up, when a provider URL has a `timestamp` but no `warmup`: ten minutes. */
export const DEFAULT_WARMUP_MS = 600_000;

/**
 * A provider's weight while it warms up, as Dubbo's consumers compute it: a provider that
 * registered `uptime` ms ago (its URL's `timestamp`) gets weight × uptime / warmup, at least 1,
 * until `warmup` (its URL's parameter, 10 minutes by default) has passed; a timestamp in the
 * future (clocks apart) gives 1; no timestamp, or weight 0, leaves the weight as it is.
 */
export function warmupWeight(weight: number, labels: Readonly<Record<string, string>>, now: number): number {
  if (weight <= 0) return weight;
  const timestamp = Number(labels.timestamp);
  if (!(timestamp > 0)) return weight;
  const uptime = now - timestamp;
  if (uptime < 0) return 1;
  const w = labels.warmup !== undefined && /^\d{1,10}$/.test(labels.warmup) ? Number(labels.warmup) : DEFAULT_WARMUP_MS;
  if (uptime === 0 || uptime >= w) return weight;
  return Math.max(1, Math.min(weight, Math.floor(uptime / (w / weight))));
}

/** When the warm-up of these labels ends (ms since the epoch), or 0 when it is over or does not apply. */
export function warmupEnds(labels: Readonly<Record<string, string>>, now: number): number {
  const timestamp = Number(labels.timestamp);
  if (!(timestamp > 0)) return 0;
  const w = labels.warmup !== undefined && /^\d{1,10}$/.test(labels.warmup) ? Number(labels.warmup) : DEFAULT_WARMUP_MS;
  const end = timestamp + w;
  return end > now ? end : 0;
}
