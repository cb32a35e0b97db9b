/**
 * HTTP/1.1 message heads and chunk framing, as bytes. Pure.
 *
 * Hop-by-hop fields (RFC 9110 §7.6.1) are dropped: Connection and every field
 * it names, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade.
 * Framing is written fresh by the caller's `framing`, so a message is never
 * forwarded with a length that the proxy did not check.
 */
import type { Http1Head } from './http1-decoder';

export type Framing =
  | { kind: 'length'; length: number }
  | { kind: 'chunked' }
  | { kind: 'none' } // no body, or read-until-close towards an HTTP/1.0 peer
  | { kind: 'close' }; // body until the connection closes (HTTP/1.0 response)

/**
 * connection, keep-alive, proxy-connection, te, transfer-encoding, upgrade, content-length, host.
 * Compared by length first, not looked up in a Set: a field name is a new string on every
 * message, and a Set would hash each one.
 */
export function isHopByHop(lowerName: string): boolean {
  switch (lowerName.length) {
    case 2: return lowerName === 'te';
    case 4: return lowerName === 'host';
    case 7: return lowerName === 'upgrade';
    case 10: return lowerName === 'connection' || lowerName === 'keep-alive';
    case 14: return lowerName === 'content-length';
    case 16: return lowerName === 'proxy-connection';
    case 17: return lowerName === 'transfer-encoding';
    default: return false;
  }
}

/** `name` equals the lower-case literal `lower`, case aside (no lower-case copy of `name` made). */
function eqNoCase(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let k = 0; k < lower.length; k++) {
    const c = name.charCodeAt(k);
    // ASCII letters fold with 0x20; anything else must be equal as it is
    if (c !== lower.charCodeAt(k) && ((c | 0x20) !== lower.charCodeAt(k) || c < 0x41 || c > 0x5a)) return false;
  }
  return true;
}

/** isHopByHop of a field name as received (any case), without making its lower-case copy. */
function hopByHopName(name: string): boolean {
  switch (name.length) {
    case 2: return eqNoCase(name, 'te');
    case 4: return eqNoCase(name, 'host');
    case 7: return eqNoCase(name, 'upgrade');
    case 10: return eqNoCase(name, 'connection') || eqNoCase(name, 'keep-alive');
    case 14: return eqNoCase(name, 'content-length');
    case 16: return eqNoCase(name, 'proxy-connection');
    case 17: return eqNoCase(name, 'transfer-encoding');
    default: return false;
  }
}

/** `name` is one of the (lower-case) Connection tokens. */
function namedByConnection(name: string, tokens: readonly string[]): boolean {
  for (let k = 0; k < tokens.length; k++) if (eqNoCase(name, tokens[k])) return true;
  return false;
}

/** Appends the end-to-end fields of a flat [name, value, ...] list. `host` and `content-length` are the caller's. */
export function appendEndToEnd(out: string, headers: readonly string[], connectionTokens: readonly string[], via: string): string {
  let sawVia = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (hopByHopName(name)) continue;
    if (connectionTokens.length !== 0 && namedByConnection(name, connectionTokens)) continue;
    if (via && eqNoCase(name, 'via')) {
      out += `${name}: ${headers[i + 1]}, ${via}\r\n`;
      sawVia = true;
      continue;
    }
    out += `${name}: ${headers[i + 1]}\r\n`;
  }
  if (via && !sawVia) out += `via: ${via}\r\n`;
  return out;
}

function framingLines(f: Framing): string {
  if (f.kind === 'length') return `content-length: ${f.length}\r\n`;
  if (f.kind === 'chunked') return 'transfer-encoding: chunked\r\n';
  return '';
}

export interface RequestHeadInput {
  method: string;
  target: string;
  host: string;
  headers: readonly string[];
  connectionTokens: readonly string[];
  framing: Framing;
  via: string;
  /** Upgrade requests keep their Connection/Upgrade pair. */
  upgrade?: string;
}

export function encodeRequestHead(r: RequestHeadInput): string {
  let out = `${r.method} ${r.target} HTTP/1.1\r\nhost: ${r.host}\r\n`;
  out = appendEndToEnd(out, r.headers, r.connectionTokens, r.via);
  out += framingLines(r.framing);
  if (r.upgrade !== undefined) out += `connection: upgrade\r\nupgrade: ${r.upgrade}\r\n`;
  return out + '\r\n';
}

export interface ResponseHeadInput {
  status: number;
  reason: string;
  headers: readonly string[];
  connectionTokens: readonly string[];
  framing: Framing;
  via: string;
  /** 'close' adds `connection: close`; 'keep-alive' adds `connection: keep-alive` (for HTTP/1.0 peers). */
  connection?: 'close' | 'keep-alive';
  upgrade?: string;
  /** Keep a content-length the upstream sent on a response that has no body (HEAD, 304). */
  keepLength?: number;
}

export function encodeResponseHead(r: ResponseHeadInput): string {
  let out = `HTTP/1.1 ${r.status} ${r.reason}\r\n`;
  out = appendEndToEnd(out, r.headers, r.connectionTokens, r.via);
  out += framingLines(r.framing);
  if (r.keepLength !== undefined && r.keepLength >= 0 && r.framing.kind === 'none') out += `content-length: ${r.keepLength}\r\n`;
  if (r.upgrade !== undefined) out += `connection: upgrade\r\nupgrade: ${r.upgrade}\r\n`;
  else if (r.connection) out += `connection: ${r.connection}\r\n`;
  return out + '\r\n';
}

const COLON = 0x3a;
const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/** buf[at, at + lower.length) equals the lower-case literal, case aside (letters only fold). */
function bytesNoCase(buf: Buffer, at: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    const c = buf[at + k];
    if (c !== lower.charCodeAt(k) && ((c | 0x20) !== lower.charCodeAt(k) || c < 0x41 || c > 0x5a)) return false;
  }
  return true;
}

/** isHopByHop of the field name at buf[at, at + n), without a string. */
function hopByHopAt(buf: Buffer, at: number, n: number): boolean {
  switch (n) {
    case 2: return bytesNoCase(buf, at, 'te');
    case 4: return bytesNoCase(buf, at, 'host');
    case 7: return bytesNoCase(buf, at, 'upgrade');
    case 10: return bytesNoCase(buf, at, 'connection') || bytesNoCase(buf, at, 'keep-alive');
    case 14: return bytesNoCase(buf, at, 'content-length');
    case 16: return bytesNoCase(buf, at, 'proxy-connection');
    case 17: return bytesNoCase(buf, at, 'transfer-encoding');
    default: return false;
  }
}

function decimalDigits(n: number): number {
  let digits = 1;
  for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++;
  return digits;
}

/** `n` (an integer, 0 up to 2^53) in decimal, `digits` long, at `at`. */
function putDecimal(dst: Buffer, at: number, n: number, digits: number): number {
  for (let k = digits - 1, m = n; k >= 0; k--, m = Math.floor(m / 10)) dst[at + k] = 0x30 + (m % 10);
  return at + digits;
}

/** The runs of lines relayResponseHead copies, [start, end) pairs; more runs than this: encoded as usual. */
const MAX_RUNS = 8;
const runs = new Int32Array(2 * MAX_RUNS);

/** `via: <via>\r\ncontent-length: ` (or without the Via line), made once per Via value. */
let tailVia: string | null = null;
let tail: Buffer = Buffer.alloc(0);

function tailFor(via: string): Buffer {
  if (via !== tailVia) {
    tail = Buffer.from(`${via ? `via: ${via}\r\n` : ''}content-length: `, 'latin1');
    tailVia = via;
  }
  return tail;
}

/**
 * The response head `encodeResponseHead` would write for `h` with content-length framing and
 * nothing else added (no edits, no Connection or Upgrade of our own), made by copying the
 * upstream's own lines out of `raw`, the read `h` was decoded from, when its head starts at
 * `raw[0]` and is written the way the encoder writes it: `HTTP/1.1 <status> <reason>`, every
 * field line `<name>: <value>` with one space and no trailing whitespace. The bytes are the
 * same as the encoder's; the strings of the decoded head are not joined and flattened again.
 * null where that does not hold (any other layout, a Via field to add to, Connection naming
 * other fields): the caller encodes the head as usual. A body of `bodyUpTo` bytes or less that
 * follows the head whole in `raw` is copied after it (relayIncludedBody() says so): the caller
 * leaves those bytes out when the decoder hands them over.
 */
export function relayResponseHead(raw: Buffer, h: Http1Head, via: string, length: number, bodyUpTo = 0): Buffer | null {
  relayedBody = false;
  const reason = h.reason;
  const tokens = h.connectionTokens;
  if (h.versionMinor !== 1 || reason.length === 0 || (tokens.length !== 0 && (tokens.length !== 1 || tokens[0] !== 'keep-alive'))) return null;
  // "HTTP/1.1 " 3DIGIT SP reason CRLF (the decoder read the version and status from these bytes)
  const statusEnd = 13 + reason.length + 2;
  const rawLen = raw.length;
  if (rawLen < statusEnd + 2 || raw[0] !== 0x48 || raw[12] !== SP || raw[statusEnd - 2] !== CR || raw[statusEnd - 1] !== LF) return null;
  const headers = h.headers;
  // every line where the canonical layout puts it; the end-to-end ones in runs
  let nRuns = 0;
  let runStart = 0;
  let at = statusEnd;
  let kept = statusEnd;
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i].length;
    const end = at + n + 2 + headers[i + 1].length + 2;
    if (end > rawLen || raw[at + n] !== COLON || raw[at + n + 1] !== SP || raw[end - 2] !== CR || raw[end - 1] !== LF) return null;
    if (n === 3 && bytesNoCase(raw, at, 'via')) return null; // the encoder appends ours to it
    if (hopByHopAt(raw, at, n)) {
      if (runStart >= 0) {
        if (nRuns === MAX_RUNS) return null;
        runs[2 * nRuns] = runStart;
        runs[2 * nRuns + 1] = at;
        nRuns++;
        runStart = -1;
      }
    } else {
      if (runStart < 0) runStart = at;
      kept += end - at;
    }
    at = end;
  }
  if (at + 2 > rawLen || raw[at] !== CR || raw[at + 1] !== LF) return null;
  if (runStart >= 0) {
    if (nRuns === MAX_RUNS) return null;
    runs[2 * nRuns] = runStart;
    runs[2 * nRuns + 1] = at;
    nRuns++;
  }
  const t = tailFor(via);
  const digits = decimalDigits(length);
  // a small body that is whole in this read goes with the head (relayIncludedBody)
  const bodyAt = at + 2;
  const withBody = length > 0 && length <= bodyUpTo && bodyAt + length <= rawLen;
  const out = Buffer.allocUnsafe(kept + t.length + digits + 4 + (withBody ? length : 0));
  let o = 0;
  for (let r = 0; r < nRuns; r++) o += raw.copy(out, o, runs[2 * r], runs[2 * r + 1]);
  for (let k = 0; k < t.length; k++) out[o++] = t[k];
  o = putDecimal(out, o, length, digits);
  out[o++] = CR; out[o++] = LF; out[o++] = CR; out[o++] = LF;
  if (withBody) { raw.copy(out, o, bodyAt, bodyAt + length); relayedBody = true; }
  return out;
}

let relayedBody = false;

/** The last relayResponseHead included the body (the `length` bytes after the head in its read). */
export function relayIncludedBody(): boolean {
  return relayedBody;
}

const CRLF = Buffer.from('\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

/** One chunk of a chunked body, as the buffers to write. */
export function chunkParts(data: Buffer): Buffer[] {
  return [Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'), data, CRLF];
}

export function lastChunk(trailers: readonly string[] | null): Buffer {
  if (!trailers || trailers.length === 0) return LAST_CHUNK;
  let out = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) {
    const lower = trailers[i].toLowerCase();
    if (isHopByHop(lower)) continue;
    out += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  }
  return Buffer.from(out + '\r\n', 'latin1');
}

const REASONS: Record<number, string> = {
  100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 204: 'No Content', 301: 'Moved Permanently',
  302: 'Found', 304: 'Not Modified', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Content Too Large', 429: 'Too Many Requests',
  431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout', 505: 'HTTP Version Not Supported',
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? 'Unknown';
}

/**
 * A route's fallback (src/protection/fallback.ts): its status, its headers (content-type text/plain
 * unless they name one), its body, and `x-sluice-fallback: <reason>` saying what it stands in for.
 */
export function encodeFallback(status: number, fields: ReadonlyArray<readonly [string, string]>, body: Buffer, reason: string, close: boolean, headOnly = false): Buffer {
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
  let typed = false;
  for (const [k, v] of fields) {
    if (k === 'content-type') typed = true;
    head += `${k}: ${v}\r\n`;
  }
  if (!typed) head += 'content-type: text/plain\r\n';
  head += `content-length: ${body.length}\r\nx-sluice-fallback: ${reason}\r\n${close ? 'connection: close\r\n' : ''}\r\n`;
  return headOnly ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

/** A reply of Sluice's own. To HEAD (`headOnly`) the content-length is the body's, and the body is left out (RFC 9110 9.3.2). */
export function encodeLocalReply(status: number, reason: string, body: string, close: boolean, headOnly = false, retryAfter?: number): Buffer {
  const b = Buffer.from(body, 'utf8');
  const head =
    `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-type: text/plain\r\ncontent-length: ${b.length}\r\n` +
    `${retryAfter !== undefined ? `retry-after: ${retryAfter}\r\n` : ''}` +
    `x-sluice-reason: ${reason}\r\n${close ? 'connection: close\r\n' : ''}\r\n`;
  return headOnly ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), b]);
}

/**
 * The bytes of a local reply that is a frozen constant (rate limited, denied): made once for each
 * form (keep-alive or close, HEAD or not), so a refusal under load copies no strings.
 */
const replyBytes = new WeakMap<object, Buffer[]>();
export function cachedLocalReply(r: { readonly status: number; readonly reason: string; readonly body?: string; readonly retryAfter?: number }, close: boolean, headOnly: boolean): Buffer {
  // the map first: it holds only frozen replies, and a lookup is cheaper than Object.isFrozen
  let forms = replyBytes.get(r);
  if (forms === undefined) {
    if (!Object.isFrozen(r)) return encodeLocalReply(r.status, r.reason, r.body ?? '', close, headOnly, r.retryAfter);
    replyBytes.set(r, (forms = []));
  }
  const i = (close ? 1 : 0) + (headOnly ? 2 : 0);
  return (forms[i] ??= encodeLocalReply(r.status, r.reason, r.body ?? '', close, headOnly, r.retryAfter));
}
