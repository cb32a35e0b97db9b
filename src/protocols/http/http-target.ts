/**
 * Request targets and authorities as routes see them and upstreams receive them. Pure.
 *
 * A route written for `/admin` on `admin.internal` must meet every spelling an upstream would
 * take for the same resource, so the path and the host are put in one canonical form before
 * matching, and that form is what is forwarded (a proxy that routes one string and forwards
 * another can be walked around):
 *
 *   path       percent-encoded unreserved bytes decoded (`%61` → `a`), other escapes upper-cased,
 *              dot segments removed (RFC 3986 §5.2.4, `%2e` included), `//` merged (an option);
 *              `%2F`, `%5C` and `\` per `escapedSlashes`; a fragment, a broken escape, a dot
 *              segment with parameters (`..;x`, which Tomcat takes for `..`) or a segment of
 *              parameters alone before another (`/;x/admin`, which Tomcat takes for `/admin`)
 *              is refused
 *   authority  host (reg-name of unreserved characters, IPv4, or `[IPv6]`) and an optional port;
 *              no userinfo, no spaces, no escapes; lower case, one trailing dot dropped
 *
 * Everything here runs per request: a path with nothing to normalise is scanned once and
 * returned as it is.
 */
import { isIP } from 'node:net';

export interface PathPolicy {
  normalizePath: boolean;
  mergeSlashes: boolean;
  escapedSlashes: 'reject' | 'keep' | 'unescape';
}

export interface Target {
  /** The path routes match, without the query. */
  path: string;
  /** What goes on the request line / `:path`: the path and the query (`?...`) as received. */
  forward: string;
}

const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) { HEX[0x41 + c] = 10 + c; HEX[0x61 + c] = 10 + c; }
const HEXCHARS = '0123456789ABCDEF';

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
const UNRESERVED = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) UNRESERVED[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) UNRESERVED[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) UNRESERVED[c] = 1;
for (const ch of '-._~') UNRESERVED[ch.charCodeAt(0)] = 1;

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const PERCENT = 0x25;
const DOT = 0x2e;
const HASH = 0x23;
const QUERY = 0x3f;
const SEMI = 0x3b;

/**
 * An origin-form target (`/path?query`) in canonical form, or a reason to refuse it. `*` (the
 * asterisk form of OPTIONS) passes as it is.
 */
export function normalizeTarget(target: string, policy: PathPolicy): Target | string {
  if (target === '*') return { path: '*', forward: '*' };
  if (target.charCodeAt(0) !== SLASH) return 'the request target is not a path';
  const n = target.length;
  let end = n;
  // one scan: where the path ends, and whether it needs any work
  let work = false;
  let params = false;
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const c = target.charCodeAt(i);
    // what no request line may carry (HTTP/2 sends :path as it likes; HTTP/1 upstreams must not see it)
    if (c <= 0x20 || c >= 0x7f) return 'a space, control or non-ASCII character in the request target';
    if (c === HASH) return 'a fragment (#) in the request target';
    if (end < n) continue;
    if (c === QUERY) { end = i; continue; }
    if (c === SEMI) params = true;
    if (c === PERCENT || c === BACKSLASH || ((c === DOT || c === SEMI || c === SLASH) && prev === SLASH)) work = true;
    prev = c;
  }
  if (!work) {
    const path = end === n ? target : target.slice(0, end);
    return { path: params && policy.normalizePath ? withoutParams(path) : path, forward: target };
  }
  const path = normalizePath(target.slice(0, end), policy);
  if (path.charCodeAt(0) !== SLASH) return path; // a reason
  return { path: params && policy.normalizePath ? withoutParams(path) : path, forward: end === n ? path : path + target.slice(end) };
}

/**
 * The path routes match when it carries segment parameters: each `;...` dropped, as servlet
 * containers (Tomcat, Jetty: Spring's own) do before they dispatch, so `/admin;x/secret` meets
 * the rules for `/admin/secret`. It is forwarded with its parameters: to those servers it is that
 * path, and to the others a rule written for the plainer path still holds (it matches more, never less).
 */
function withoutParams(path: string): string {
  let out = '';
  let from = 0;
  for (;;) {
    const semi = path.indexOf(';', from);
    if (semi < 0) return out + path.slice(from);
    out += path.slice(from, semi);
    const slash = path.indexOf('/', semi);
    if (slash < 0) return out;
    from = slash;
  }
}

/** The path part alone; a reason (not starting with `/`) when it cannot be made canonical safely. */
function normalizePath(raw: string, policy: PathPolicy): string {
  // 1. escapes: unreserved decoded (when normalising), the rest upper-cased; slashes per policy
  let s = '';
  let from = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === PERCENT) {
      const h = i + 2 < raw.length ? HEX[raw.charCodeAt(i + 1) & 0xff] : -1;
      const l = h >= 0 ? HEX[raw.charCodeAt(i + 2) & 0xff] : -1;
      if (h < 0 || l < 0 || raw.charCodeAt(i + 1) > 0xff || raw.charCodeAt(i + 2) > 0xff) return 'a broken percent-encoding in the path';
      const v = (h << 4) | l;
      let out: string;
      if (v === SLASH || v === BACKSLASH) {
        if (policy.escapedSlashes === 'reject') return 'an encoded slash (%2F or %5C) in the path';
        out = policy.escapedSlashes === 'unescape' ? '/' : `%${HEXCHARS[h]}${HEXCHARS[l]}`;
      } else if (policy.normalizePath && UNRESERVED[v] === 1) {
        out = String.fromCharCode(v);
      } else {
        out = `%${HEXCHARS[h]}${HEXCHARS[l]}`;
      }
      s += raw.slice(from, i) + out;
      from = i + 3;
      i += 2;
    } else if (c === BACKSLASH) {
      if (policy.escapedSlashes === 'reject') return 'a backslash in the path';
      if (policy.escapedSlashes === 'unescape') { s += `${raw.slice(from, i)}/`; from = i + 1; }
    }
  }
  s += raw.slice(from);
  if (!policy.normalizePath && !policy.mergeSlashes) return s;

  // 2. segments: merged slashes, dot segments removed
  const segs = s.split('/'); // segs[0] is '' (the path starts with '/')
  const out: string[] = [];
  const last = segs.length - 1;
  let trailing = false;
  for (let k = 1; k <= last; k++) {
    const seg = segs[k];
    trailing = false;
    if (seg === '') {
      if (policy.mergeSlashes && k !== last) continue;
      out.push(seg);
      continue;
    }
    if (policy.normalizePath && seg.charCodeAt(0) === DOT) {
      if (seg === '.') { trailing = true; continue; }
      if (seg === '..') { out.pop(); trailing = true; continue; }
      const semi = seg.indexOf(';');
      if (semi === 1 || (semi === 2 && seg.charCodeAt(1) === DOT)) return 'a dot segment with parameters (.;/..;) in the path';
    }
    // Servlet containers drop every ";..." before looking at the path: a segment of parameters
    // alone becomes empty and merges away, so /;x/admin is /admin to them. As the last segment it
    // is only a trailing slash (/;jsessionid=...), which moves no prefix.
    if (policy.normalizePath && seg.charCodeAt(0) === SEMI && k !== last) return 'a segment of parameters only (/;x/) in the path';
    out.push(seg);
  }
  if (trailing) out.push('');
  // a last empty segment kept by merging is the trailing slash; an earlier one only without merging
  return `/${out.join('/')}`;
}

// ── authority ───────────────────────────────────────────────────────────────

export interface Authority {
  /** Lower case, without a trailing dot; an IPv6 literal without its brackets. */
  host: string;
  /** The port as given (digits), or '' when there is none. */
  port: string;
  /** host[:port] as forwarded: IPv6 in brackets. */
  canonical: string;
}

const REG_NAME = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) REG_NAME[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) REG_NAME[c] = 2; // upper case: lowered
for (let c = 0x61; c <= 0x7a; c++) REG_NAME[c] = 1;
for (const ch of '-._~') REG_NAME[ch.charCodeAt(0)] = 1;

const EMPTY_AUTHORITY: Authority = { host: '', port: '', canonical: '' };

/**
 * A Host header, `:authority` or absolute-URI authority (RFC 3986 host [":" port], no userinfo),
 * in canonical form; null when it is not one. An empty value is an empty authority (RFC 9112 §3.2).
 */
export function parseAuthority(v: string): Authority | null {
  const n = v.length;
  if (n === 0) return EMPTY_AUTHORITY;
  let hostEnd: number;
  let host: string;
  if (v.charCodeAt(0) === 0x5b /* [ */) {
    hostEnd = v.indexOf(']');
    if (hostEnd < 0) return null;
    const inner = v.slice(1, hostEnd);
    if (!isIPv6(inner)) return null;
    host = inner.toLowerCase();
    hostEnd++;
  } else {
    let lower = false;
    hostEnd = n;
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c === 0x3a /* : */) { hostEnd = i; break; }
      const k = c < 256 ? REG_NAME[c] : 0;
      if (k === 0) return null;
      if (k === 2) lower = true;
    }
    if (hostEnd === 0) return null;
    host = lower ? v.slice(0, hostEnd).toLowerCase() : hostEnd === n ? v : v.slice(0, hostEnd);
    if (host.charCodeAt(host.length - 1) === DOT) host = host.slice(0, -1);
    // empty labels (`a..b`, `.a`, `a..`) name nothing DNS can resolve; an upstream might still strip them
    if (host.length === 0 || host.charCodeAt(0) === DOT || host.charCodeAt(host.length - 1) === DOT || host.includes('..')) return null;
  }
  let port = '';
  if (hostEnd < n) {
    if (v.charCodeAt(hostEnd) !== 0x3a) return null;
    port = v.slice(hostEnd + 1);
    if (port.length > 5) return null;
    for (let i = 0; i < port.length; i++) {
      const c = port.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return null;
    }
    if (port.length > 0 && Number(port) > 65535) return null;
  }
  const h = host.includes(':') ? `[${host}]` : host;
  return { host, port, canonical: port ? `${h}:${port}` : h };
}

/** An IPv6 literal without a zone id (RFC 3986 IP-literal; IPvFuture is not taken). */
function isIPv6(s: string): boolean {
  return !s.includes('%') && isIP(s) === 6;
}

/**
 * An absolute-form target (`http://authority/path?query`, RFC 9112 §3.2.2): its authority and
 * its origin-form rest. null when it is not one Sluice forwards (another scheme, userinfo).
 */
export function splitAbsolute(target: string): { authority: string; rest: string } | null {
  const sep = target.indexOf('://');
  if (sep <= 0) return null;
  const scheme = target.slice(0, sep).toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') return null;
  let i = sep + 3;
  for (; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === SLASH || c === QUERY || c === HASH) break;
  }
  const authority = target.slice(sep + 3, i);
  let rest = target.slice(i);
  if (rest === '') rest = '/';
  else if (rest.charCodeAt(0) === QUERY) rest = `/${rest}`;
  return { authority, rest };
}
