/**
 * Protocol recognition from a connection's first bytes. Pure: bytes in, verdict out.
 *
 *   16 03 ..                          TLS handshake record
 *   da bb ..                          Dubbo 2 magic
 *   PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n  HTTP/2 prior-knowledge preface (gRPC included)
 *   PRI * HTTP/2.0 ... (then wrong)   HTTP/2 too: a broken preface, which the HTTP/2 codec answers with GOAWAY
 *   [ws] 1*tchar WS                   HTTP/1.x: a token, then anything a lenient server splits words on
 *   anything else                     opaque TCP
 *
 * Sniffing is part of the security boundary: bytes called opaque reach the upstream without
 * routes or filters, so whatever some HTTP server somewhere would take for a request line must
 * be called HTTP here, and go through Sluice's strict decoder (which refuses the odd forms).
 * Lenient servers skip leading whitespace and split the request line on any whitespace (Python's
 * str.split takes \v \f \x1c-\x1f \x85 \xa0 too, and a CR not followed by LF), accept lower-case
 * and unknown methods, and do not bound the method's length. So:
 * - leading CR, LF and other whitespace are skipped (RFC 9112 §2.2 asks servers to ignore empty
 *   lines before a request), up to MAX_LEADING bytes; more than that is handed to the decoder;
 * - any token (RFC 9110 tchar, any case, any length) followed by such whitespace is HTTP/1; a token
 *   longer than MAX_TOKEN without a decision is HTTP/1 too (the decoder refuses it, the upstream never sees it);
 * - a token followed by CRLF or LF alone (`QUIT\r\n`) is not a request line anywhere: opaque.
 *
 * `more` means the bytes so far fit a protocol but are not enough to decide: the caller waits,
 * under the HTTP header timeout once a byte has arrived, and refuses what is still undecided then
 * (mayBeRouted), TLS's first byte excepted.
 */
import { TCHAR } from './http1/http1-decoder';

export type Sniffed = 'http1' | 'http2' | 'tls' | 'dubbo' | 'tcp' | 'more';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** "PRI * HTTP/2.0": once this much matches, the client speaks HTTP/2 whatever follows. */
const H2_PREFACE_LINE = 14;
/** Leading whitespace skipped before the decision; beyond it the bytes go to the HTTP/1 decoder, which refuses them. */
export const MAX_LEADING = 64;
/** A token this long without whitespace is handed to the HTTP/1 decoder rather than waited on. */
export const MAX_TOKEN = 64;
/** Bytes a caller needs to keep for a decision: every `more` is decided within this many. */
export const MAX_SNIFF_BYTES = MAX_LEADING + MAX_TOKEN + 2;

const CR = 0x0d;
const LF = 0x0a;


/** Whitespace some HTTP/1 server splits a request line on (CR and LF are handled apart). */
const WS = new Uint8Array(256);
for (const c of [0x09, 0x0b, 0x0c, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0]) WS[c] = 1;

export function sniff(buf: Buffer): Sniffed {
  const n = buf.length;
  if (n === 0) return 'more';
  const b0 = buf[0];
  if (b0 === 0x16) return n < 2 ? 'more' : buf[1] === 0x03 ? 'tls' : 'tcp';
  if (b0 === 0xda) return n < 2 ? 'more' : buf[1] === 0xbb ? 'dubbo' : 'tcp';
  if (b0 === 0x50 /* P */) {
    const m = Math.min(n, H2_PREFACE.length);
    let same = 0;
    while (same < m && buf[same] === H2_PREFACE[same]) same++;
    if (same === H2_PREFACE.length) return 'http2';
    if (same >= H2_PREFACE_LINE) return same === m ? 'more' : 'http2';
    if (same === m) return 'more';
    // diverged inside "PRI * HTTP/2.0": an HTTP/1 request line with the method PRI, or not HTTP at all
  }
  let i = 0;
  while (i < n && (WS[buf[i]] === 1 || buf[i] === CR || buf[i] === LF)) {
    if (++i > MAX_LEADING) return 'http1';
  }
  if (i === n) return 'more';
  const start = i;
  while (i < n && TCHAR[buf[i]] === 1) {
    if (++i - start > MAX_TOKEN) return 'http1';
  }
  if (i === start) return 'tcp';
  if (i === n) return 'more';
  const c = buf[i];
  if (WS[c] === 1) return 'http1';
  if (c === CR) {
    // CR LF ends a line (`QUIT\r\n`); a CR inside a line is whitespace to some servers
    if (i + 1 === n) return 'more';
    return buf[i + 1] === LF ? 'tcp' : 'http1';
  }
  return 'tcp';
}

/**
 * Bytes that `sniff` called `more` and that may still become a protocol routes apply to: an
 * HTTP/1 request, the HTTP/2 preface, or a Dubbo frame (its first magic byte alone). Only TLS's
 * first byte is not: TLS is opaque whichever way it is decided. Bytes for which this is true must
 * never be passed on as opaque TCP, or a client that pauses after them skips the routes.
 */
export function mayBeRouted(buf: Buffer): boolean {
  if (buf.length === 0 || buf[0] === 0x16) return false;
  return sniff(buf.length > MAX_SNIFF_BYTES ? buf.subarray(0, MAX_SNIFF_BYTES) : buf) === 'more';
}
