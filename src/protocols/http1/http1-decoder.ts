/**
 * Strict, incremental HTTP/1.x decoder: bytes in, events out (no sockets).
 *
 * Grammar accepted (RFC 9112; anything else is a ProtocolError):
 *
 *   message       = *4( CRLF ) start-line *( field-line CRLF ) CRLF [ body ]
 *   start-line    = request-line / status-line
 *   request-line  = method SP request-target SP HTTP-version CRLF
 *   status-line   = HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF          (status 100..599)
 *   method        = 1*tchar
 *   request-target= origin-form / absolute-form / authority-form / asterisk-form, 1*( %x21-7E ):
 *                   "/" ...  |  1*ALPHA "://" 1*char  |  (CONNECT only) host ":" 1*DIGIT  |  (OPTIONS only) "*"
 *   HTTP-version  = "HTTP/1.0" / "HTTP/1.1"                                  (case-sensitive)
 *   reason-phrase = *( HTAB / SP / VCHAR / obs-text )
 *   field-line    = field-name ":" OWS field-value OWS                        (no obs-fold, no SP before ":")
 *   field-name    = 1*tchar
 *   field-value   = *( HTAB / SP / VCHAR / obs-text )                         (no CTL, no DEL)
 *   CRLF          = %x0D %x0A                                                (bare CR or bare LF rejected)
 *
 *   body          = chunked-body / Content-Length octets / octets until EOF (responses only)
 *   chunked-body  = *chunk last-chunk trailer-section CRLF
 *   chunk         = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-size    = 1*16HEXDIG                                               (value <= 2^53-1)
 *   chunk-ext     = *( ";" token [ "=" ( token / quoted-string ) ] )         (no BWS; max 16 KiB per message)
 *   last-chunk    = 1*("0") [ chunk-ext ] CRLF
 *   trailer-section = *( field-line CRLF )        (same rules/limits as headers; no Content-Length / Transfer-Encoding)
 *
 *   Content-Length = 1*15DIGIT, at most once.  Transfer-Encoding = "chunked" exactly, at most once,
 *   never together with Content-Length, never in HTTP/1.0.  HTTP/1.1 requests need exactly one Host.
 *   After a final message that is not keep-alive, further input is discarded (never parsed).
 *
 * Performance notes: the head is validated line by line straight out of the pushed Buffer with byte
 * loops and lookup tables (no regexes). When the rest of the head is in the chunk it is decoded with
 * one latin1Slice and all strings are substrings of that (one native call per head); only an
 * incomplete trailing line is copied into a small internal buffer. Body bytes are delivered as
 * zero-copy subarrays of the pushed chunks. Error codes/statuses: see fail(); a response decoder
 * always reports status 502 (the peer is the upstream).
 */
import { ProtocolError } from '../../errors';

export interface Http1Head {
  method: string;        // request: method token as sent ('' for responses)
  target: string;        // request: request-target ('' for responses)
  status: number;        // response: 3-digit status (0 for requests)
  reason: string;        // response: reason phrase ('' for requests)
  versionMinor: number;  // 0 or 1
  headers: string[];     // flat list [name, value, ...]; names as received, values OWS-trimmed
  contentLength: number; // -1 when no Content-Length
  chunked: boolean;      // Transfer-Encoding: chunked
  keepAlive: boolean;    // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive"
  upgrade: boolean;      // request has Connection: upgrade + Upgrade header (or response status 101)
  expectContinue: boolean; // request "Expect: 100-continue" (case-insensitive)
  host: string;          // request Host header value ('' if none)
  connectionTokens: string[]; // lower-cased tokens of all Connection headers
}

export interface Http1Limits { maxHeaderBytes: number; maxHeaders: number; }

export interface Http1Handler {
  onHead(head: Http1Head): void;
  onBody(chunk: Buffer): void;
  onMessageEnd(trailers: string[] | null): boolean | void;
  onError(err: ProtocolError): void;
}

// ---- byte constants & tables -------------------------------------------------------------

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const SEMI = 0x3b;
const COMMA = 0x2c;

const MAX_LEADING_CRLF = 4;
const MAX_CHUNK_EXT_BYTES = 16 * 1024;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** RFC 9110 tchar (1 where the byte may be part of a token). */
export const TCHAR = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;
for (const ch of "!#$%&'*+-.^_`|~") TCHAR[ch.charCodeAt(0)] = 1;

/** field-value / reason / chunk-ext bytes: 1 = visible (VCHAR / obs-text), 2 = SP / HTAB, 0 = invalid. */
const VAL = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) VAL[c] = 1;
for (let c = 0x80; c <= 0xff; c++) VAL[c] = 1;
VAL[SP] = 2;
VAL[HTAB] = 2;

/** Hex digit values; 0xff = not a hex digit. */
const HEX = new Uint8Array(256).fill(0xff);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) { HEX[0x41 + c] = 10 + c; HEX[0x61 + c] = 10 + c; }

type Latin1Buffer = Buffer & { latin1Slice(start: number, end: number): string };
/** Fast latin1 string from a byte range (Buffer#latin1Slice is what toString('latin1') calls). */
function str(buf: Buffer, s: number, e: number): string {
  return (buf as Latin1Buffer).latin1Slice(s, e);
}

/** Case-insensitive compare of buf[s, s+lit.length) with a lower-case literal (caller checks length). */
function eqLower(buf: Buffer, s: number, lit: string): boolean {
  for (let k = 0; k < lit.length; k++) {
    if ((buf[s + k] | 0x20) !== lit.charCodeAt(k)) return false;
  }
  return true;
}

function hasHtab(buf: Buffer, s: number, e: number): boolean {
  for (let i = s; i < e; i++) if (buf[i] === HTAB) return true;
  return false;
}

function isVersionLike(buf: Buffer, s: number, e: number): boolean {
  // case-insensitive "HTTP/" 1*DIGIT [ "." 1*DIGIT ]
  if (e - s < 6 || !eqLower(buf, s, 'http/')) return false;
  let i = s + 5;
  let digits = 0;
  while (i < e && buf[i] >= 0x30 && buf[i] <= 0x39) { i++; digits++; }
  if (digits === 0) return false;
  if (i === e) return true;
  if (buf[i] !== 0x2e) return false;
  i++;
  digits = 0;
  while (i < e && buf[i] >= 0x30 && buf[i] <= 0x39) { i++; digits++; }
  return digits > 0 && i === e;
}

/** Returns 0 / 1 for exactly "HTTP/1.0" / "HTTP/1.1", else -1. */
function versionMinorOf(buf: Buffer, s: number, e: number): number {
  if (e - s !== 8 || buf[s] !== 0x48 || buf[s + 1] !== 0x54 || buf[s + 2] !== 0x54 || buf[s + 3] !== 0x50 ||
      buf[s + 4] !== 0x2f || buf[s + 5] !== 0x31 || buf[s + 6] !== 0x2e) return -1;
  const d = buf[s + 7];
  return d === 0x31 ? 1 : d === 0x30 ? 0 : -1;
}

/** RFC 9112 §3.2 target forms (llhttp-compatible scheme rule: letters only). */
function targetFormOk(buf: Buffer, ms: number, me: number, ts: number, te: number): boolean {
  const t0 = buf[ts];
  if (me - ms === 7 && buf[ms] === 0x43 && str(buf, ms, me) === 'CONNECT') {
    // authority-form: host ":" port
    let colon = -1;
    for (let i = ts; i < te; i++) {
      const c = buf[i];
      if (c === 0x2f || c === 0x3f || c === 0x23 || c === 0x40) return false; // / ? # @
      if (c === COLON) colon = i;
    }
    if (colon <= ts || colon === te - 1) return false;
    for (let i = colon + 1; i < te; i++) if (buf[i] < 0x30 || buf[i] > 0x39) return false;
    return true;
  }
  if (t0 === 0x2f) return true;                                  // origin-form
  if (t0 === 0x2a) return te - ts === 1 && me - ms === 7 && str(buf, ms, me) === 'OPTIONS'; // asterisk-form
  let i = ts;                                                     // absolute-form
  while (i < te && ((buf[i] | 0x20) >= 0x61 && (buf[i] | 0x20) <= 0x7a)) i++;
  return i > ts && te - i > 3 && buf[i] === COLON && buf[i + 1] === 0x2f && buf[i + 2] === 0x2f;
}

// ---- states --------------------------------------------------------------------------------

const S_HEAD = 0;        // reading start line + header lines
const S_BODY = 1;        // Content-Length body
const S_CHUNK_SIZE = 2;  // chunk-size [ext] CRLF
const S_CHUNK_DATA = 3;
const S_CHUNK_CRLF = 4;  // CRLF after chunk-data
const S_TRAILERS = 5;
const S_CLOSE_BODY = 6;  // read until EOF
const S_MSG_END = 7;     // message complete, onMessageEnd not yet emitted (paused)

/** Return values of the line parsers besides "index after the line". */
const NEED_MORE = -1;
const FAILED = -2;

/** Between messages: the field lists of the next one are made when it begins (an idle connection holds none). */
const NO_FIELDS: string[] = Object.freeze([]) as unknown as string[];
/** A Connection header with one token, as nearly every message has: one list for all (read only, as every head's lists are to their users). */
const TOKENS_CLOSE: string[] = Object.freeze(['close']) as unknown as string[];
const TOKENS_KEEP_ALIVE: string[] = Object.freeze(['keep-alive']) as unknown as string[];
const TOKENS_UPGRADE: string[] = Object.freeze(['upgrade']) as unknown as string[];
const EMPTY = Buffer.alloc(0);
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
/** Chunks up to this size are decoded to a string whole instead of searching for the end of the head. */
const MAP_WHOLE_BYTES = 1024;

export class Http1Decoder {
  private readonly isRequest: boolean;
  private readonly handler: Http1Handler;
  private readonly maxHeaderBytes: number;
  private readonly maxHeaders: number;

  private state = S_HEAD;
  private dead = false;
  private paused = false;
  private stopped = false;     // upgraded: never parse again; bytes kept for takeRemainder()
  private executing = false;
  private closed = false;      // end() called
  private discarding = false;  // a final non-keep-alive message ended: input is dropped
  private eofPending = false;  // end() called while paused with unprocessed input

  /** Bytes queued while paused / stopped / re-entrant. */
  private queue: Buffer[] = [];
  private queued = 0;
  /** The buffer being decoded when a message ended, and where: takeRemainder() from onMessageEnd takes its rest too. */
  private endBuf: Buffer | null = null;
  private endPos = 0;
  /** `endBuf` is a transient view (push's `transient`): its rest is copied when taken. */
  private runTransient = false;

  /** Incomplete head / trailer line. */
  private lineBuf: Buffer = EMPTY;
  private lineLen = 0;

  /**
   * When a complete head sits in one pushed chunk it is decoded with a single latin1Slice and the
   * method/target/field strings are substrings of it (one native call per head instead of ~15).
   */
  private hsBuf: Buffer | null = null;
  private hs = '';
  private hsBase = 0;
  private hsEnd = 0;

  /**
   * Methods of requests whose responses are still expected (response decoder only), first in
   * first out: the next one apart, so that one request at a time (the usual case) needs no array.
   * `laterMethods` is empty whenever `nextMethod` is null.
   */
  private nextMethod: string | null = null;
  private laterMethods: string[] | null = null;

  // ---- per-message scratch ----
  private inMessage = false;   // start line seen
  private leadingCrlf = 0;
  private sectionBytes = 0;    // head (or trailer section) bytes so far
  private fieldCount = 0;
  private method = '';
  private target = '';
  private status = 0;
  private reason = '';
  private versionMinor = 1;
  private headers: string[] = NO_FIELDS;
  private trailers: string[] | null = null;
  private contentLength = -1;
  private teSeen = false;
  private chunked = false;
  private hostSeen = false;
  private host = '';
  private upgradeHeader = false;
  private expectContinue = false;
  private connTokens: string[] = NO_FIELDS;
  /** connTokens is an array of this message's own (not NO_FIELDS or one of the shared one-token lists). */
  private connTokensOwned = false;
  private connClose = false;
  private connKeepAlive = false;
  private connUpgrade = false;
  private msgUpgrade = false;  // stop after this message ends
  private msgLast = false;     // final message without keep-alive: discard input after it

  // ---- body ----
  private remaining = 0;
  private chunkPhase = 0;
  private chunkDigits = 0;
  private chunkSize = 0;
  private chunkExtBytes = 0;

  constructor(kind: 'request' | 'response', handler: Http1Handler, limits: Http1Limits) {
    this.isRequest = kind === 'request';
    this.handler = handler;
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.maxHeaders = limits.maxHeaders;
  }

  get idle(): boolean {
    return this.state === S_HEAD && !this.inMessage && this.lineLen === 0 && this.queued === 0 &&
      !this.dead && !this.stopped;
  }

  /** Bytes held and not decoded yet; from onMessageEnd, the rest of the read being decoded counts too. */
  get bufferedBytes(): number {
    return (this.endBuf !== null ? this.endBuf.length - this.endPos : 0) + this.queued + this.lineLen;
  }

  /**
   * `transient`: the chunk's memory is reused once this call returns (a socket's shared read
   * buffer): whatever of it the decoder keeps (a paused or pipelined remainder) is copied. Body
   * slices handed to onBody are views of it all the same, valid during that call only.
   */
  push(chunk: Buffer, transient = false): void {
    if (this.dead || this.closed || this.discarding || chunk.length === 0) return;
    if (this.paused || this.stopped || this.executing) {
      this.queue.push(transient ? Buffer.from(chunk) : chunk);
      this.queued += chunk.length;
      return;
    }
    this.drain(chunk, transient);
  }

  /** Stop emitting events (also callable from inside a handler); later bytes are buffered. */
  pause(): void {
    this.paused = true;
  }

  /** Continue with buffered bytes; may emit synchronously. No effect after an upgrade. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.executing || this.dead || this.stopped) return; // the running loop picks it up
    this.drain(null);
  }

  /**
   * The upgrade a request asked for did not happen (its answer was not 101): the connection is
   * still HTTP/1.1 (RFC 9110 §7.8), so the bytes after that request are parsed as requests again.
   */
  cancelUpgrade(): void {
    if (!this.stopped || this.dead) return;
    this.stopped = false;
    if (this.closed) this.eofPending = true;
    if (!this.paused && !this.executing) this.drain(null);
  }

  /**
   * Response decoder: announce the method of the next request sent on this connection. Calls are
   * queued FIFO (one per request, pipelining-safe); each final (non-1xx) response consumes one.
   */
  expectResponseTo(method: string): void {
    if (this.nextMethod === null) this.nextMethod = method;
    else (this.laterMethods ??= []).push(method);
  }

  /**
   * Returns and clears all bytes held by the decoder (the tunnel bytes after an upgrade, on either
   * side). Zero-copy when a single chunk is held.
   */
  takeRemainder(): Buffer {
    const q = this.queue;
    const cur = this.endBuf;
    if (cur !== null) {
      // called from onMessageEnd (a 101 and the new protocol's first bytes in one read): the rest of that read comes first
      this.endBuf = null;
      if (this.endPos < cur.length) {
        const rest = cur.subarray(this.endPos);
        q.unshift(this.runTransient ? Buffer.from(rest) : rest);
        this.queued += rest.length;
      }
    }
    let out: Buffer;
    if (q.length === 0) out = EMPTY;
    else if (q.length === 1) out = q[0];
    else out = Buffer.concat(q, this.queued);
    this.queue = [];
    this.queued = 0;
    return out;
  }

  /**
   * Peer closed (EOF). Ends a read-until-close response; reports ERR_HTTP_INCOMPLETE for a partial
   * message. Returns true if EOF fell cleanly between messages (or after an upgrade). Called while
   * paused with unprocessed input, the EOF is handled after resume() has drained it and this
   * returns false. Input pushed after end() is ignored.
   */
  end(): boolean {
    if (this.dead || this.closed) return false;
    this.closed = true;
    if (this.stopped) return true;
    if (this.paused || this.executing) {
      if (this.idle) return true;
      this.eofPending = true; // handled once resume() has drained the buffered input
      return false;
    }
    return this.finishEof();
  }

  // ---- driver ------------------------------------------------------------------------------

  private drain(first: Buffer | null, transient = false): void {
    this.executing = true;
    try {
      let buf: Buffer | undefined = first ?? this.shiftQueue() ?? EMPTY;
      for (;;) {
        this.runTransient = transient && buf === first;
        const pos = this.run(buf, 0);
        if (this.dead) break;
        if (pos < buf.length) {
          const rest = pos === 0 ? buf : buf.subarray(pos);
          this.queue.unshift(transient && buf === first ? Buffer.from(rest) : rest);
          this.queued += buf.length - pos;
          break;
        }
        if (this.paused || this.stopped || this.queued === 0) break;
        buf = this.shiftQueue();
        if (buf === undefined) break;
      }
    } finally {
      this.executing = false;
      this.endBuf = null;
    }
    if (this.dead || this.discarding) {
      this.queue = [];
      this.queued = 0;
    }
    if (!this.dead && this.eofPending && !this.paused && this.queued === 0) {
      this.eofPending = false;
      if (!this.stopped) this.finishEof();
    }
  }

  private shiftQueue(): Buffer | undefined {
    const b = this.queue.shift();
    if (b !== undefined) this.queued -= b.length;
    return b;
  }

  private finishEof(): boolean {
    if (this.dead) return false;
    if (this.state === S_CLOSE_BODY) {
      this.messageEnd();
      return true;
    }
    if (this.state === S_HEAD && !this.inMessage && this.lineLen === 0) return true;
    this.fail('ERR_HTTP_INCOMPLETE', 'connection closed before the message was complete', 400);
    return false;
  }

  /** Consume buf from pos; returns the index where parsing stopped (paused / stopped / dead / end). */
  private run(buf: Buffer, pos: number): number {
    const len = buf.length;
    for (;;) {
      if (this.paused || this.stopped) return pos;
      if (this.dead || this.discarding) return len;
      if (this.state === S_MSG_END) {
        this.endBuf = buf;
        this.endPos = pos;
        this.messageEnd();
        if (this.endBuf === null) pos = len; // takeRemainder() took the rest
        else this.endBuf = null;
        continue;
      }
      if (pos >= len) return pos;
      switch (this.state) {
        case S_HEAD:
        case S_TRAILERS:
          pos = this.readLines(buf, pos);
          break;
        case S_BODY: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          if (this.remaining === 0) this.state = S_MSG_END;
          const slice = buf.subarray(pos, pos + n);
          pos += n;
          this.handler.onBody(slice);
          break;
        }
        case S_CHUNK_SIZE:
          pos = this.readChunkSize(buf, pos);
          break;
        case S_CHUNK_DATA: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          if (this.remaining === 0) { this.state = S_CHUNK_CRLF; this.chunkPhase = 0; }
          const slice = buf.subarray(pos, pos + n);
          pos += n;
          this.handler.onBody(slice);
          break;
        }
        case S_CHUNK_CRLF: {
          const c = buf[pos++];
          if (this.chunkPhase === 0) {
            if (c !== CR) { this.badChunk('missing CRLF after chunk data'); return len; }
            this.chunkPhase = 1;
          } else {
            if (c !== LF) { this.badChunk('missing LF after chunk data'); return len; }
            this.startChunkSize();
          }
          break;
        }
        case S_CLOSE_BODY: {
          const slice = pos === 0 ? buf : buf.subarray(pos);
          pos = len;
          this.handler.onBody(slice);
          break;
        }
        default:
          return len;
      }
    }
  }

  // ---- head / trailer lines ----------------------------------------------------------------

  private readLines(buf: Buffer, pos: number): number {
    const len = buf.length;
    const section = this.state;
    if (this.lineLen > 0) {
      const lf = buf.indexOf(LF, pos);
      const end = lf === -1 ? len : lf + 1;
      if (!this.appendLine(buf, pos, end)) return len;
      if (lf === -1) return len;
      const n = this.lineLen;
      this.lineLen = 0;
      const r = this.parseLine(this.lineBuf, 0, n);
      if (this.lineBuf.length > 4096) this.lineBuf = EMPTY; // don't pin a big buffer per idle connection
      if (r === FAILED) return len;
      if (r !== n) { this.failLine('malformed line'); return len; }
      pos = end;
      if (this.state !== section) return pos;
    }
    if (section === S_HEAD && len - pos > 16) this.mapHead(buf, pos);
    while (pos < len) {
      const r = this.parseLine(buf, pos, len);
      if (r < 0) {
        if (r === NEED_MORE) this.appendLine(buf, pos, len);
        pos = len;
        break;
      }
      pos = r;
      if (this.state !== section || this.paused || this.stopped) break;
    }
    // the mapped head is for this call only: an idle connection keeps no copy of its last head
    this.hsBuf = null;
    this.hs = '';
    return pos;
  }

  /**
   * Decode the rest of the head once (see hsBuf): a small remainder is mapped whole (cheaper than
   * searching for the end of the head); otherwise only if the end of the head is within the limit.
   */
  private mapHead(buf: Buffer, pos: number): void {
    const len = buf.length;
    let end: number;
    if (len - pos <= MAP_WHOLE_BYTES) end = len;
    else {
      const budget = this.maxHeaderBytes - this.sectionBytes + 2 * MAX_LEADING_CRLF + 4;
      let he: number;
      if (len - pos <= budget) he = buf.indexOf(HEAD_END, pos);
      else {
        he = buf.subarray(pos, pos + budget).indexOf(HEAD_END);
        if (he !== -1) he += pos;
      }
      if (he === -1) return;
      end = he + 4;
    }
    this.hsBuf = buf;
    this.hsBase = pos;
    this.hsEnd = end;
    this.hs = str(buf, pos, end);
  }

  /** latin1 string of buf[s, e): a substring of the mapped head when possible. */
  private sub(buf: Buffer, s: number, e: number): string {
    if (buf === this.hsBuf && e <= this.hsEnd && s >= this.hsBase) {
      return this.hs.substring(s - this.hsBase, e - this.hsBase);
    }
    return str(buf, s, e);
  }

  /** Buffer an incomplete line; fails with 431 as soon as the section would exceed the limit. */
  private appendLine(buf: Buffer, s: number, e: number): boolean {
    const n = e - s;
    const need = this.lineLen + n;
    if (this.sectionBytes + need > this.maxHeaderBytes) {
      this.tooLarge();
      return false;
    }
    if (need > this.lineBuf.length) {
      const nb = Buffer.allocUnsafe(Math.min(Math.max(need, this.lineBuf.length * 2, 256), this.maxHeaderBytes + 1));
      this.lineBuf.copy(nb, 0, 0, this.lineLen);
      this.lineBuf = nb;
    }
    buf.copy(this.lineBuf, this.lineLen, s, e);
    this.lineLen = need;
    return true;
  }

  /** Parse one line starting at s; returns index after its LF, NEED_MORE or FAILED. */
  private parseLine(buf: Buffer, s: number, len: number): number {
    const c0 = buf[s];
    if (c0 === CR) {
      if (s + 1 >= len) return NEED_MORE;
      if (buf[s + 1] !== LF) return this.bareCr();
      return this.emptyLine(s + 2);
    }
    if (c0 === LF) return this.bareLf();
    if (this.state === S_HEAD && !this.inMessage) {
      return this.isRequest ? this.requestLine(buf, s, len) : this.statusLine(buf, s, len);
    }
    return this.fieldLine(buf, s, len);
  }

  private emptyLine(next: number): number {
    if (this.state === S_HEAD) {
      if (!this.inMessage) {
        if (++this.leadingCrlf > MAX_LEADING_CRLF) {
          return this.failStart('too many empty lines before the start line');
        }
        return next;
      }
      if (!this.count(2)) return FAILED;
      this.finishHead();
      return this.dead ? FAILED : next;
    }
    // end of trailer section
    if (!this.count(2)) return FAILED;
    this.state = S_MSG_END;
    return next;
  }

  /** Add a complete line's bytes to the section size. */
  private count(n: number): boolean {
    this.sectionBytes += n;
    if (this.sectionBytes > this.maxHeaderBytes) { this.tooLarge(); return false; }
    return true;
  }

  private requestLine(buf: Buffer, s: number, len: number): number {
    let i = s;
    while (i < len && TCHAR[buf[i]] === 1) i++;
    if (i >= len) return NEED_MORE;
    if (i === s || buf[i] !== SP) return this.badStartByte(buf, i, len, 'method is not a token or not followed by one SP');
    const mEnd = i++;
    const ts = i;
    while (i < len) {
      const c = buf[i];
      if (c < 0x21 || c > 0x7e) break;
      i++;
    }
    if (i >= len) return NEED_MORE;
    if (i === ts) return this.badStartByte(buf, i, len, 'empty request-target');
    if (buf[i] !== SP) {
      if (buf[i] === CR && i + 1 < len && buf[i + 1] === LF) return this.failStart('missing HTTP version');
      return this.badStartByte(buf, i, len, 'invalid byte in request-target');
    }
    const tEnd = i++;
    if (!targetFormOk(buf, s, mEnd, ts, tEnd)) return this.failStart('invalid request-target form');
    const vs = i;
    while (i < len) {
      const c = buf[i];
      if (c < 0x21 || c > 0x7e) break;
      i++;
    }
    if (i >= len) return NEED_MORE;
    const ve = i;
    if (buf[i] !== CR) return this.badStartByte(buf, i, len, 'trailing garbage after HTTP version');
    if (i + 1 >= len) return NEED_MORE;
    if (buf[i + 1] !== LF) return this.bareCr();
    const minor = versionMinorOf(buf, vs, ve);
    if (minor < 0) {
      if (isVersionLike(buf, vs, ve)) {
        return this.fail('ERR_HTTP_VERSION', `unsupported HTTP version "${str(buf, vs, ve)}"`, 505);
      }
      return this.failStart('malformed HTTP version');
    }
    const end = i + 2;
    if (!this.count(end - s)) return FAILED;
    this.inMessage = true;
    this.headers = [];
    this.connTokensOwned = false;
    this.versionMinor = minor;
    this.method = this.sub(buf, s, mEnd);
    this.target = this.sub(buf, ts, tEnd);
    return end;
  }

  private statusLine(buf: Buffer, s: number, len: number): number {
    let i = s;
    while (i < len) {
      const c = buf[i];
      if (c < 0x21 || c > 0x7e) break;
      i++;
    }
    if (i >= len) return NEED_MORE;
    if (buf[i] !== SP) return this.badStartByte(buf, i, len, 'HTTP version not followed by SP');
    const minor = versionMinorOf(buf, s, i);
    if (minor < 0) {
      if (isVersionLike(buf, s, i)) {
        return this.fail('ERR_HTTP_VERSION', `unsupported HTTP version "${str(buf, s, i)}"`, 505);
      }
      return this.failStart('malformed HTTP version');
    }
    i++;
    let status = 0;
    for (let k = 0; k < 3; k++, i++) {
      if (i >= len) return NEED_MORE;
      const d = buf[i] - 0x30;
      if (d < 0 || d > 9) return this.badStartByte(buf, i, len, 'status code is not 3 digits');
      status = status * 10 + d;
    }
    if (status < 100 || status > 599) return this.failStart(`status code ${status} out of range`);
    if (i >= len) return NEED_MORE;
    let rs = i;
    if (buf[i] === SP) {
      rs = ++i;
      while (i < len && VAL[buf[i]] !== 0) i++;
      if (i >= len) return NEED_MORE;
    }
    if (buf[i] !== CR) return this.badStartByte(buf, i, len, 'invalid byte in status line');
    if (i + 1 >= len) return NEED_MORE;
    if (buf[i + 1] !== LF) return this.bareCr();
    const end = i + 2;
    if (!this.count(end - s)) return FAILED;
    this.inMessage = true;
    this.headers = [];
    this.connTokensOwned = false;
    this.versionMinor = minor;
    this.status = status;
    this.reason = rs < i ? this.sub(buf, rs, i) : '';
    return end;
  }

  private fieldLine(buf: Buffer, s: number, len: number): number {
    const c0 = buf[s];
    if (c0 === SP || c0 === HTAB) return this.badHeader('obsolete line folding / line starts with whitespace');
    let i = s;
    while (i < len && TCHAR[buf[i]] === 1) i++;
    if (i >= len) return NEED_MORE;
    if (buf[i] !== COLON) {
      if (i === s) return this.badHeader('field name is not a token');
      const c = buf[i];
      if (c === SP || c === HTAB) return this.badHeader('whitespace between field name and colon');
      if (c === CR || c === LF) return this.badHeader('header line without colon');
      return this.badHeader('field name is not a token');
    }
    if (i === s) return this.badHeader('empty field name');
    const nEnd = i++;
    while (i < len && (buf[i] === SP || buf[i] === HTAB)) i++;
    const vs = i;
    let ve = i;
    for (; i < len; i++) {
      const t = VAL[buf[i]];
      if (t === 1) ve = i + 1;
      else if (t !== 2) break;
    }
    if (i >= len) return NEED_MORE;
    if (buf[i] !== CR) {
      if (buf[i] === LF) return this.bareLf();
      return this.badHeader('control character in field value');
    }
    if (i + 1 >= len) return NEED_MORE;
    if (buf[i + 1] !== LF) return this.bareCr();
    const end = i + 2;
    if (!this.count(end - s)) return FAILED;
    if (++this.fieldCount > this.maxHeaders) {
      this.fail('ERR_HTTP_HEADERS_TOO_LARGE', `more than ${this.maxHeaders} header fields`, 431);
      return FAILED;
    }
    const name = this.sub(buf, s, nEnd);
    const value = vs < ve ? this.sub(buf, vs, ve) : '';
    if (this.state === S_TRAILERS) {
      const n = nEnd - s;
      if ((n === 14 && eqLower(buf, s, 'content-length')) || (n === 17 && eqLower(buf, s, 'transfer-encoding'))) {
        return this.badHeader(`${name} is not allowed in the trailer section`);
      }
      (this.trailers ??= []).push(name, value);
      return end;
    }
    this.headers.push(name, value);
    switch (nEnd - s) {
      case 4:
        if (eqLower(buf, s, 'host')) {
          if (this.hostSeen) return this.fail('ERR_HTTP_DUPLICATE_HOST', 'more than one Host header', 400);
          this.hostSeen = true;
          this.host = value;
        }
        break;
      case 6:
        if (eqLower(buf, s, 'expect') && ve - vs === 12 && eqLower(buf, vs, '100-continue')) this.expectContinue = true;
        break;
      case 7:
        if (eqLower(buf, s, 'upgrade') && ve > vs) this.upgradeHeader = true;
        break;
      case 10:
        if (eqLower(buf, s, 'connection')) this.connection(buf, vs, ve);
        break;
      case 14:
        if (eqLower(buf, s, 'content-length') && !this.contentLengthField(buf, vs, ve, i)) return FAILED;
        break;
      case 17:
        if (eqLower(buf, s, 'transfer-encoding') && !this.transferEncoding(buf, vs, ve, i)) return FAILED;
        break;
    }
    return end;
  }

  private connection(buf: Buffer, vs: number, ve: number): void {
    let i = vs;
    while (i < ve) {
      let a = i;
      while (i < ve && buf[i] !== COMMA) i++;
      let b = i;
      i++; // skip comma
      while (a < b && (buf[a] === SP || buf[a] === HTAB)) a++;
      while (b > a && (buf[b - 1] === SP || buf[b - 1] === HTAB)) b--;
      const n = b - a;
      if (n === 0) continue;
      if (n === 5 && eqLower(buf, a, 'close')) { this.connClose = true; this.addToken('close', TOKENS_CLOSE); }
      else if (n === 10 && eqLower(buf, a, 'keep-alive')) { this.connKeepAlive = true; this.addToken('keep-alive', TOKENS_KEEP_ALIVE); }
      else if (n === 7 && eqLower(buf, a, 'upgrade')) { this.connUpgrade = true; this.addToken('upgrade', TOKENS_UPGRADE); }
      else this.addToken(this.sub(buf, a, b).toLowerCase(), null);
    }
  }

  /** A Connection token: alone, one of the shared lists (`shared`); with others, a list of the message's own. */
  private addToken(token: string, shared: string[] | null): void {
    const cur = this.connTokens;
    if (this.connTokensOwned) { cur.push(token); return; }
    if (cur.length === 0 && shared !== null) { this.connTokens = shared; return; }
    const own = cur.slice();
    own.push(token);
    this.connTokens = own;
    this.connTokensOwned = true;
  }

  private contentLengthField(buf: Buffer, vs: number, ve: number, rawEnd: number): boolean {
    if (this.contentLength !== -1) {
      this.fail('ERR_HTTP_BAD_CONTENT_LENGTH', 'more than one Content-Length header', 400);
      return false;
    }
    const n = ve - vs;
    if (hasHtab(buf, ve, rawEnd)) {
      this.fail('ERR_HTTP_BAD_CONTENT_LENGTH', 'HTAB after Content-Length value', 400);
      return false;
    }
    if (n === 0 || n > 15) {
      this.fail('ERR_HTTP_BAD_CONTENT_LENGTH', 'Content-Length must be 1 to 15 digits', 400);
      return false;
    }
    let v = 0;
    for (let i = vs; i < ve; i++) {
      const d = buf[i] - 0x30;
      if (d < 0 || d > 9) {
        this.fail('ERR_HTTP_BAD_CONTENT_LENGTH', 'Content-Length is not a decimal number', 400);
        return false;
      }
      v = v * 10 + d;
    }
    this.contentLength = v;
    return true;
  }

  private transferEncoding(buf: Buffer, vs: number, ve: number, rawEnd: number): boolean {
    if (this.teSeen) {
      this.fail('ERR_HTTP_BAD_TRANSFER_ENCODING', 'more than one Transfer-Encoding header', 400);
      return false;
    }
    this.teSeen = true;
    if (ve - vs === 7 && eqLower(buf, vs, 'chunked') && !hasHtab(buf, ve, rawEnd)) {
      this.chunked = true;
      return true;
    }
    // A coding list ending in chunked is well-formed but unsupported (501); anything else is bad.
    let c = ve - 1;
    while (c >= vs && buf[c] !== COMMA) c--;
    if (c >= vs) {
      let a = c + 1;
      while (a < ve && (buf[a] === SP || buf[a] === HTAB)) a++;
      if (ve - a === 7 && eqLower(buf, a, 'chunked')) {
        this.fail('ERR_HTTP_UNSUPPORTED_TRANSFER_ENCODING',
          `unsupported Transfer-Encoding "${str(buf, vs, ve)}"`, 501);
        return false;
      }
    }
    this.fail('ERR_HTTP_BAD_TRANSFER_ENCODING', `invalid Transfer-Encoding "${str(buf, vs, ve)}"`, 400);
    return false;
  }

  private finishHead(): void {
    const req = this.isRequest;
    if (req && this.versionMinor === 1 && !this.hostSeen) {
      this.fail('ERR_HTTP_MISSING_HOST', 'HTTP/1.1 request without Host header', 400);
      return;
    }
    if (this.teSeen) {
      if (this.contentLength !== -1) {
        this.fail('ERR_HTTP_BAD_TRANSFER_ENCODING', 'both Transfer-Encoding and Content-Length', 400);
        return;
      }
      if (this.versionMinor === 0) {
        this.fail('ERR_HTTP_BAD_TRANSFER_ENCODING', 'Transfer-Encoding in an HTTP/1.0 message', 400);
        return;
      }
    }
    let keepAlive = this.versionMinor === 1 ? !this.connClose : this.connKeepAlive && !this.connClose;
    const status = this.status;
    let upgrade: boolean;
    let next: number;
    if (req) {
      upgrade = this.connUpgrade && this.upgradeHeader;
      next = this.chunked ? S_CHUNK_SIZE : this.contentLength > 0 ? S_BODY : S_MSG_END;
    } else {
      upgrade = status === 101;
      if (status < 200 && status !== 101) {
        next = S_MSG_END; // interim response; the final one follows and answers the same request
      } else {
        const m = this.nextMethod;
        const later = this.laterMethods;
        this.nextMethod = later !== null && later.length > 0 ? later.shift()! : null;
        if (status === 101 || status === 204 || status === 304 || m === 'HEAD') next = S_MSG_END;
        else if (this.chunked) next = S_CHUNK_SIZE;
        else if (this.contentLength >= 0) next = this.contentLength > 0 ? S_BODY : S_MSG_END;
        else { next = S_CLOSE_BODY; keepAlive = false; }
      }
    }
    this.msgUpgrade = upgrade;
    this.msgLast = !keepAlive && !upgrade && (req || status >= 200);
    const head: Http1Head = {
      method: this.method,
      target: this.target,
      status,
      reason: this.reason,
      versionMinor: this.versionMinor,
      headers: this.headers,
      contentLength: this.contentLength,
      chunked: this.chunked,
      keepAlive,
      upgrade,
      expectContinue: req && this.expectContinue,
      host: this.host,
      connectionTokens: this.connTokens,
    };
    if (next === S_BODY) this.remaining = this.contentLength;
    else if (next === S_CHUNK_SIZE) { this.startChunkSize(); this.chunkExtBytes = 0; }
    this.state = next;
    this.handler.onHead(head);
  }

  // ---- chunked ------------------------------------------------------------------------------

  private startChunkSize(): void {
    this.state = S_CHUNK_SIZE;
    this.chunkPhase = 0;
    this.chunkDigits = 0;
    this.chunkSize = 0;
  }

  /**
   * chunk-size line, byte by byte. Phases: 0 size digits, 1 ext-name start, 2 ext-name, 3 ext-value start,
   * 4 token value, 5 quoted value, 6 quoted-pair, 7 after closing quote, 8 CR seen.
   */
  private readChunkSize(buf: Buffer, pos: number): number {
    const len = buf.length;
    let phase = this.chunkPhase;
    for (; pos < len; pos++) {
      const c = buf[pos];
      switch (phase) {
        case 0: {
          const h = HEX[c];
          if (h !== 0xff) {
            if (++this.chunkDigits > 16 || this.chunkSize > (MAX_SAFE - h) / 16) {
              this.badChunk('chunk size too large');
              return len;
            }
            this.chunkSize = this.chunkSize * 16 + h;
            continue;
          }
          if (this.chunkDigits === 0) { this.badChunk('chunk size is not hexadecimal'); return len; }
          if (c === CR) phase = 8;
          else if (c === SEMI) phase = 1;
          else { this.badChunk(c === LF ? 'bare LF in chunk size line' : 'invalid byte after chunk size'); return len; }
          continue;
        }
        case 8:
          if (c !== LF) { this.badChunk('bare CR in chunk size line'); return len; }
          pos++;
          if (this.chunkSize === 0) {
            this.state = S_TRAILERS;
            this.sectionBytes = 0;
            this.fieldCount = 0;
          } else {
            this.state = S_CHUNK_DATA;
            this.remaining = this.chunkSize;
          }
          return pos;
      }
      // chunk extension
      if (++this.chunkExtBytes > MAX_CHUNK_EXT_BYTES) { this.badChunk('chunk extensions too large'); return len; }
      switch (phase) {
        case 1: // ext-name start
          if (TCHAR[c] !== 1) { this.badChunk('invalid chunk extension name'); return len; }
          phase = 2;
          break;
        case 2: // ext-name
        case 4: // token value
          if (TCHAR[c] === 1) break;
          if (c === SEMI) phase = 1;
          else if (c === CR) phase = 8;
          else if (c === 0x3d && phase === 2) phase = 3;
          else { this.badChunk('invalid byte in chunk extension'); return len; }
          break;
        case 3: // ext-value start
          if (TCHAR[c] === 1) phase = 4;
          else if (c === 0x22) phase = 5;
          else { this.badChunk('invalid chunk extension value'); return len; }
          break;
        case 5: // quoted-string
          if (c === 0x22) phase = 7;
          else if (c === 0x5c) phase = 6;
          else if (VAL[c] === 0) { this.badChunk('control character in chunk extension'); return len; }
          break;
        case 6: // quoted-pair
          if (VAL[c] === 0) { this.badChunk('control character in chunk extension'); return len; }
          phase = 5;
          break;
        default: // 7: after closing quote
          if (c === SEMI) phase = 1;
          else if (c === CR) phase = 8;
          else { this.badChunk('invalid byte after chunk extension value'); return len; }
      }
    }
    this.chunkPhase = phase;
    return pos;
  }

  // ---- message end / errors -------------------------------------------------------------------

  private messageEnd(): void {
    const trailers = this.trailers;
    const upgrade = this.msgUpgrade;
    const last = this.msgLast;
    this.resetMessage();
    if (upgrade) this.stopped = true;
    else if (last) {
      this.discarding = true;
      this.queue = [];
      this.queued = 0;
    }
    if (this.handler.onMessageEnd(trailers) === false) this.paused = true;
  }

  private resetMessage(): void {
    this.state = S_HEAD;
    this.inMessage = false;
    this.leadingCrlf = 0;
    this.sectionBytes = 0;
    this.fieldCount = 0;
    this.method = '';
    this.target = '';
    this.status = 0;
    this.reason = '';
    this.versionMinor = 1;
    this.headers = NO_FIELDS;
    this.trailers = null;
    this.contentLength = -1;
    this.teSeen = false;
    this.chunked = false;
    this.hostSeen = false;
    this.host = '';
    this.upgradeHeader = false;
    this.expectContinue = false;
    this.connTokens = NO_FIELDS;
    this.connTokensOwned = false;
    this.connClose = false;
    this.connKeepAlive = false;
    this.connUpgrade = false;
    this.msgUpgrade = false;
    this.msgLast = false;
    this.remaining = 0;
  }

  /** Report a protocol error; the decoder is dead afterwards. Responses always map to 502. */
  private fail(code: string, message: string, requestStatus: number): number {
    if (this.dead) return FAILED;
    this.dead = true;
    this.state = -1;
    this.lineLen = 0;
    this.lineBuf = EMPTY;
    this.hsBuf = null;
    this.queue = [];
    this.queued = 0;
    const status = this.isRequest ? requestStatus : 502;
    this.handler.onError(new ProtocolError(code, `HTTP/1 ${this.isRequest ? 'request' : 'response'}: ${message}`, status));
    return FAILED;
  }

  private tooLarge(): void {
    this.fail('ERR_HTTP_HEADERS_TOO_LARGE', `header section exceeds ${this.maxHeaderBytes} bytes`, 431);
  }

  private failStart(message: string): number {
    return this.isRequest
      ? this.fail('ERR_HTTP_BAD_REQUEST_LINE', message, 400)
      : this.fail('ERR_HTTP_BAD_STATUS_LINE', message, 502);
  }

  /** Start-line rejection at byte i: bare CR / LF get the line-ending code, anything else the start-line code. */
  private badStartByte(buf: Buffer, i: number, len: number, message: string): number {
    const c = buf[i];
    if (c === LF) return this.bareLf();
    if (c === CR) {
      if (i + 1 >= len) return NEED_MORE;
      if (buf[i + 1] !== LF) return this.bareCr();
    }
    return this.failStart(message);
  }

  private failLine(message: string): number {
    return this.state === S_HEAD && !this.inMessage ? this.failStart(message) : this.badHeader(message);
  }

  private badHeader(message: string): number {
    return this.fail('ERR_HTTP_BAD_HEADER', message, 400);
  }

  private bareLf(): number {
    return this.fail('ERR_HTTP_BAD_LINE_ENDING', 'bare LF (lines must end in CRLF)', 400);
  }

  private bareCr(): number {
    return this.fail('ERR_HTTP_BAD_LINE_ENDING', 'bare CR (CR not followed by LF)', 400);
  }

  private badChunk(message: string): void {
    this.fail('ERR_HTTP_BAD_CHUNK', message, 400);
  }
}
