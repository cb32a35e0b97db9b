/**
 * HTTP/1.1 message heads and chunk framing, as bytes. Pure.
 *
 * Hop-by-hop fields (RFC 9110 §7.6.1) are dropped: Connection and every field
 * it names, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade.
 * Framing is written fresh by the caller's `framing`, so a message is never
 * forwarded with a length that the proxy did not check.
 */

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

/** Appends the end-to-end fields of a flat [name, value, ...] list. `host` and `content-length` are the caller's. */
export function appendEndToEnd(out: string, headers: readonly string[], connectionTokens: readonly string[], via: string): string {
  let sawVia = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    const lower = name.toLowerCase();
    if (isHopByHop(lower)) continue;
    if (connectionTokens.length !== 0 && connectionTokens.includes(lower)) continue;
    if (via && lower === 'via') {
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
