/**
 * Protocol recognition from a connection's first bytes. Pure: bytes in, verdict out.
 *
 *   16 03 ..                          TLS handshake record
 *   da bb ..                          Dubbo 2 magic
 *   PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n  HTTP/2 prior-knowledge preface (gRPC included)
 *   TOKEN SP                          an HTTP/1.x method
 *   anything else                     opaque TCP
 *
 * `more` means the bytes so far fit a protocol but are not enough to decide.
 */
export type Sniffed = 'http1' | 'http2' | 'tls' | 'dubbo' | 'tcp' | 'more';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const MAX_METHOD = 20;

// RFC 9110 tchar, the alphabet of a method token; real methods are upper case letters and '-'.
function isMethodChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || c === 0x2d || c === 0x5f;
}

export function sniff(buf: Buffer): Sniffed {
  const n = buf.length;
  if (n === 0) return 'more';
  const b0 = buf[0];
  if (b0 === 0x16) return n < 2 ? 'more' : buf[1] === 0x03 ? 'tls' : 'tcp';
  if (b0 === 0xda) return n < 2 ? 'more' : buf[1] === 0xbb ? 'dubbo' : 'tcp';
  if (b0 === 0x50 /* P */) {
    const m = Math.min(n, H2_PREFACE.length);
    if (buf.compare(H2_PREFACE, 0, m, 0, m) === 0) return n >= H2_PREFACE.length ? 'http2' : 'more';
  }
  for (let i = 0; i < n && i <= MAX_METHOD; i++) {
    const c = buf[i];
    if (c === 0x20) return i > 0 ? 'http1' : 'tcp';
    if (!isMethodChar(c)) return 'tcp';
  }
  return n > MAX_METHOD ? 'tcp' : 'more';
}
