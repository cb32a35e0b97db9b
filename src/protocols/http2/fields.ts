/**
 * Field checks of RFC 9113 section 8: what makes an HTTP/2 request, response
 * or trailer section malformed. A malformed message is a stream error
 * (PROTOCOL_ERROR); the connection goes on.
 *
 * Pseudo-headers of a request (RFC 9113 8.3.1, RFC 3986, RFC 9110); what passes
 * can be written into an HTTP/1.1 request line and Host field as it is:
 *
 *   :method    = token                                    (CONNECT refused: Sluice does not tunnel)
 *   :scheme    = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
 *   :path      = "/" *( %x21-22 / %x24-7E )   (origin-form, what an HTTP/1 request-target may hold; no "#")
 *              / "*"                                      (OPTIONS only)
 *   :authority = host [ ":" port ], no userinfo ("@"):  *( unreserved / pct-encoded / sub-delims / ":" / "[" / "]" ),
 *                not empty; a Host field, if any, must say the same
 *   unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
 *   sub-delims = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
 *
 * So no space, control character, DEL, octet above 0x7e or "#" in a path: the same characters
 * the HTTP/1 decoder takes in a request-target, so that one request is refused or taken alike
 * whichever version carries it. Clients send | { } [ ] ^ " raw in queries; the path's canonical
 * form (escapes, dot segments, backslashes) is the business of protocols/http/http-target.ts, for both.
 */

/** tchar (RFC 9110 5.6.2) without upper-case letters: HTTP/2 field names are lower case. */
const NAME_CHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_CHAR[c.charCodeAt(0)] = 1;

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** tchar, upper case included: a method is a token. */
const TOKEN_CHAR = new Uint8Array(128);
for (const c of `!#$%&'*+-.^_\`|~${ALNUM}`) TOKEN_CHAR[c.charCodeAt(0)] = 1;
/** Visible ASCII but "#", "%" included (its escapes are checked with the path, protocols/http/http-target.ts). */
const PATH_CHAR = new Uint8Array(128);
for (let c = 0x21; c <= 0x7e; c++) if (c !== 0x23) PATH_CHAR[c] = 1;
/** reg-name / IPv4address / IP-literal / port, without "%". */
const AUTHORITY_CHAR = new Uint8Array(128);
for (const c of `-._~!$&'()*+,;=:[]${ALNUM}`) AUTHORITY_CHAR[c.charCodeAt(0)] = 1;
const SCHEME_CHAR = new Uint8Array(128);
for (const c of `+-.${ALNUM}`) SCHEME_CHAR[c.charCodeAt(0)] = 1;

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 102);
}

/** Every char in `table`, or "%" and two hex digits. */
function onlyChars(v: string, table: Uint8Array): boolean {
  const n = v.length;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 128 && table[c] === 1) continue;
    if (c === 37 /* % */ && i + 2 < n && isHex(v.charCodeAt(i + 1)) && isHex(v.charCodeAt(i + 2))) { i += 2; continue; }
    return false;
  }
  return true;
}

export function validMethod(m: string): boolean {
  if (m.length === 0) return false;
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (c >= 128 || TOKEN_CHAR[c] === 0) return false;
  }
  return true;
}

export function validScheme(s: string): boolean {
  if (s.length === 0) return false;
  const first = s.charCodeAt(0) | 0x20;
  if (first < 97 || first > 122) return false;
  for (let i = 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || SCHEME_CHAR[c] === 0) return false;
  }
  return true;
}

/** Origin-form (RFC 9112 3.2.1: absolute-path [ "?" query ]), or "*" for OPTIONS. */
export function validPath(p: string, method: string): boolean {
  if (p === '*') return method === 'OPTIONS';
  if (p.charCodeAt(0) !== 47 /* / */) return false;
  for (let i = 1; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c >= 128 || PATH_CHAR[c] === 0) return false;
  }
  return true;
}

/** host [ ":" port ] with no userinfo. */
export function validAuthority(a: string): boolean {
  return a.length > 0 && onlyChars(a, AUTHORITY_CHAR);
}

/** Host names compare without regard to case (RFC 3986 3.2.2). */
function sameAuthority(a: string, b: string): boolean {
  return a.length === b.length && (a === b || a.toLowerCase() === b.toLowerCase());
}

/** Names already checked: the same few come again and again, as the same strings out of the HPACK table. */
const goodNames = new Set<string>();

export function validName(n: string): boolean {
  if (goodNames.has(n)) return true;
  if (n.length === 0) return false;
  for (let i = 0; i < n.length; i++) {
    const c = n.charCodeAt(i);
    if (c >= 128 || NAME_CHAR[c] === 0) return false;
  }
  if (goodNames.size < 4096) goodNames.add(n);
  return true;
}

/** No NUL, CR or LF anywhere, no white space at either end (RFC 9113 8.2.1). */
export function validValue(v: string): boolean {
  const n = v.length;
  if (n === 0) return true;
  const first = v.charCodeAt(0);
  const last = v.charCodeAt(n - 1);
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return false;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return false;
  }
  return true;
}

/** Connection-specific fields, never valid in HTTP/2 (RFC 9113 8.2.2); `te` is checked apart. */
export function isConnectionSpecific(name: string): boolean {
  switch (name) {
    case 'connection': case 'keep-alive': case 'proxy-connection': case 'transfer-encoding': case 'upgrade': return true;
    default: return false;
  }
}

/** What a request's fields say, for the codec's checks and the request view. */
export interface RequestHead {
  method: string;
  scheme: string;
  path: string;
  authority: string;
  /** -1 when absent. */
  contentLength: number;
  contentType: string;
  te: string;
}

/** Content-Length as a number; negative when it is not one plain decimal (a list, even of equal values, is refused). */
function parseLength(v: string): number {
  if (v.length === 0 || v.length > 15) return -2;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -2;
    n = n * 10 + c;
  }
  return n;
}

/**
 * Checks a request's fields and fills `head`; returns null when it is well
 * formed, else why not. CONNECT is refused as malformed: Sluice does not tunnel.
 */
export function checkRequest(f: readonly string[], head: RequestHead): string | null {
  let regular = false;
  let method: string | undefined; let scheme: string | undefined; let path: string | undefined; let authority: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    const value = f[i + 1];
    if (!validValue(value)) return `invalid value for ${name}`;
    if (name.charCodeAt(0) === 58 /* : */) {
      if (regular) return 'pseudo-header after regular field';
      switch (name) {
        case ':method': if (method !== undefined) return 'duplicate :method'; method = value; break;
        case ':scheme': if (scheme !== undefined) return 'duplicate :scheme'; scheme = value; break;
        case ':path': if (path !== undefined) return 'duplicate :path'; path = value; break;
        case ':authority': if (authority !== undefined) return 'duplicate :authority'; authority = value; break;
        default: return `unknown pseudo-header ${name}`;
      }
      continue;
    }
    regular = true;
    if (!validName(name)) return 'invalid field name';
    if (isConnectionSpecific(name)) return `connection-specific field ${name}`;
    switch (name) {
      case 'te': if (value !== 'trailers') return 'te other than trailers'; head.te = value; break;
      case 'content-length': {
        const n = parseLength(value);
        if (n < 0 || (head.contentLength >= 0 && head.contentLength !== n)) return 'invalid content-length';
        head.contentLength = n;
        break;
      }
      case 'content-type': head.contentType = value; break;
      case 'host': if (host !== undefined) return 'duplicate host'; host = value; break;
      default:
    }
  }
  if (method === undefined) return 'missing :method';
  if (!validMethod(method)) return 'invalid :method';
  if (method === 'CONNECT') return 'CONNECT is not supported';
  if (scheme === undefined || scheme.length === 0) return 'missing :scheme';
  if (!validScheme(scheme)) return 'invalid :scheme';
  if (path === undefined || path.length === 0) return 'missing :path';
  if (!validPath(path, method)) return 'invalid :path';
  if (authority !== undefined && !validAuthority(authority)) return 'invalid :authority';
  if (host !== undefined) {
    if (!validAuthority(host)) return 'invalid host';
    if (authority === undefined) authority = host;
    else if (!sameAuthority(host, authority)) return 'host differs from :authority';
  }
  head.method = method;
  head.scheme = scheme;
  head.path = path;
  head.authority = authority ?? '';
  return null;
}

/** A response's status, or a negative number when its fields are malformed. */
export function checkResponse(f: readonly string[]): { status: number; contentLength: number; error: string | null } {
  let status = -1;
  let regular = false;
  let contentLength = -1;
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    const value = f[i + 1];
    if (!validValue(value)) return { status: -1, contentLength, error: `invalid value for ${name}` };
    if (name.charCodeAt(0) === 58) {
      if (regular || name !== ':status' || status !== -1 || value.length !== 3) return { status: -1, contentLength, error: `invalid pseudo-header ${name}` };
      status = parseLength(value);
      if (status < 100 || status > 599) return { status: -1, contentLength, error: 'invalid :status' };
      continue;
    }
    regular = true;
    if (!validName(name)) return { status: -1, contentLength, error: 'invalid field name' };
    if (isConnectionSpecific(name)) return { status: -1, contentLength, error: `connection-specific field ${name}` };
    if (name === 'content-length') {
      const n = parseLength(value);
      if (n < 0 || (contentLength >= 0 && n !== contentLength)) return { status: -1, contentLength, error: 'invalid content-length' };
      contentLength = n;
    }
  }
  if (status < 0) return { status: -1, contentLength, error: 'missing :status' };
  return { status, contentLength, error: null };
}

/** Trailers: regular fields only. */
export function checkTrailers(f: readonly string[]): string | null {
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name.charCodeAt(0) === 58) return 'pseudo-header in trailers';
    if (!validName(name)) return 'invalid field name';
    if (isConnectionSpecific(name)) return `connection-specific field ${name}`;
    if (!validValue(f[i + 1])) return `invalid value for ${name}`;
  }
  return null;
}
