/**
 * Protocol recognition from first bytes: every row of the DESIGN.md table, with fragments.
 */
import t from 'tap';
import { H2_PREFACE, MAX_SNIFF_BYTES, mayBeRouted, sniff, type Sniffed } from '../../src/protocols/sniff';

const b = (s: string) => Buffer.from(s, 'latin1');
const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

t.test('nothing yet is "more"', async (t) => {
  t.equal(sniff(Buffer.alloc(0)), 'more');
});

t.test('TLS: 16 03', async (t) => {
  t.equal(sniff(hex('16')), 'more', 'a single 0x16 could still be TLS');
  t.equal(sniff(hex('16 03')), 'tls');
  t.equal(sniff(hex('16 03 01 02 00 01 00 01 fc 03 03')), 'tls', 'a ClientHello record header');
  t.equal(sniff(hex('16 03 03')), 'tls');
  t.equal(sniff(hex('16 02')), 'tcp');
  t.equal(sniff(hex('16 16')), 'tcp');
});

t.test('Dubbo 2: da bb', async (t) => {
  t.equal(sniff(hex('da')), 'more');
  t.equal(sniff(hex('da bb')), 'dubbo');
  t.equal(sniff(hex('da bb c2 00 00 00 00 00 00 00 00 01 00 00 00 10')), 'dubbo', 'a request header');
  t.equal(sniff(hex('da bc')), 'tcp');
  t.equal(sniff(hex('db bb')), 'tcp');
});

t.test('HTTP/2 prior knowledge: the full preface, arriving in any fragments', async (t) => {
  t.equal(H2_PREFACE.length, 24);
  for (let n = 1; n < H2_PREFACE.length; n++) {
    t.equal(sniff(H2_PREFACE.subarray(0, n)), 'more', `${n} byte(s) of the preface: ${JSON.stringify(H2_PREFACE.subarray(0, n).toString('latin1'))}`);
  }
  t.equal(sniff(H2_PREFACE), 'http2');
  // with the client's SETTINGS frame right behind it (gRPC clients send both at once)
  t.equal(sniff(Buffer.concat([H2_PREFACE, hex('00 00 0c 04 00 00 00 00 00 00 03 00 00 00 64 00 04 00 10 00 00')])), 'http2');
  t.equal(sniff(b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), 'http2');
});

t.test('PRI followed by something else', async (t) => {
  // diverging inside "PRI * HTTP/2.0" leaves an HTTP/1 request line with the method PRI, which
  // the HTTP/1 codec answers; diverging after it is a broken HTTP/2 preface, answered with GOAWAY
  t.equal(sniff(b('PRI /x HTTP/1.1\r\n')), 'http1');
  t.equal(sniff(b('PRI * HTTP/1.1\r\n\r\n')), 'http1');
  t.equal(sniff(b('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n')), 'http2', 'a corrupted preface goes to the HTTP/2 codec');
  t.equal(sniff(b('PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ')), 'http2', 'wrong in its last byte');
  t.equal(sniff(b('PRI * HTTP/2.0 ')), 'http2');
  t.equal(sniff(b('PRI * HTTP/2.0')), 'more');
  t.equal(sniff(b('PRIX')), 'more', 'still a possible method token');
  t.equal(sniff(b('PRIX / HTTP/1.1')), 'http1');
  t.equal(sniff(b('PRI\r\n')), 'tcp');
  t.equal(sniff(b('PUT /a HTTP/1.1\r\n')), 'http1', 'another P method');
  t.equal(sniff(b('POST')), 'more');
});

t.test('HTTP/1.x: a method token then a space', async (t) => {
  for (const m of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'PROPFIND', 'M-SEARCH', 'BASELINE_CONTROL']) {
    t.equal(sniff(b(`${m} / HTTP/1.1\r\nHost: a\r\n\r\n`)), 'http1', m);
    t.equal(sniff(b(m)), 'more', `${m} alone: the space may follow`);
    t.equal(sniff(b(`${m} `)), 'http1', `${m} and a space is enough`);
  }
  t.equal(sniff(b('G')), 'more');
  t.equal(sniff(b('GE')), 'more');
});

t.test('whatever a lenient server would read as a request line is HTTP/1', async (t) => {
  // these reach Sluice's strict decoder (which refuses the odd ones), never an upstream as opaque bytes
  const cases: Array<[string, string]> = [
    ['lowercase method', 'get /admin HTTP/1.1\r\n'],
    ['mixed case method', 'Get /admin HTTP/1.1\r\n'],
    ['unknown method', 'FROB /admin HTTP/1.1\r\n'],
    ['digits as a method', '123 /admin'],
    ['tab after the method', 'GET\t/admin HTTP/1.1\r\n'],
    ['vertical tab', 'GET\x0b/admin HTTP/1.1\r\n'],
    ['form feed', 'GET\x0c/admin HTTP/1.1\r\n'],
    ['unit separator (Python splits on it)', 'GET\x1f/admin HTTP/1.1\r\n'],
    ['NEL', 'GET\x85/admin HTTP/1.1\r\n'],
    ['NBSP', 'GET\xa0/admin HTTP/1.1\r\n'],
    ['a CR inside the line', 'GET\r/admin HTTP/1.1\r\n'],
    ['leading empty line', '\r\nGET /admin HTTP/1.1\r\n'],
    ['leading empty lines', '\r\n\r\n\r\nGET /admin HTTP/1.1\r\n'],
    ['leading bare LF', '\nGET /admin HTTP/1.1\r\n'],
    ['leading space', ' GET /admin HTTP/1.1\r\n'],
    ['leading tab', '\tGET /admin HTTP/1.1\r\n'],
    ['a long method', `${'A'.repeat(40)} /admin HTTP/1.1\r\n`],
    ['a token longer than any method', 'A'.repeat(65)],
    ['endless leading whitespace', '\r\n'.repeat(40)],
  ];
  for (const [name, s] of cases) t.equal(sniff(b(s)), 'http1', name);
  t.equal(sniff(b('\r\n')), 'more', 'an empty line: a request may follow');
  t.equal(sniff(b('\r\nGE')), 'more');
  t.equal(sniff(b('GET\r')), 'more', 'a CR: the next byte decides');
  t.equal(sniff(b('A'.repeat(64))), 'more', 'up to MAX_TOKEN a token may still be a method');
});

t.test('anything else is opaque TCP', async (t) => {
  const cases: Array<[string, Buffer, Sniffed]> = [
    ['a token then CRLF is no request line', b('QUIT\r\n'), 'tcp'],
    ['a token then LF', b('QUIT\n'), 'tcp'],
    ['method then CR LF', b('GET\r\n'), 'tcp'],
    ['slash right after the token', b('GET/admin HTTP/1.1\r\n'), 'tcp'],
    ['MySQL server greeting', hex('4a 00 00 00 0a 38 2e 30 2e 33 33 00'), 'tcp'],
    ['Redis inline', b('*1\r\n$4\r\nPING\r\n'), 'tcp'],
    ['SSH banner', b('SSH-2.0-OpenSSH_9.6\r\n'), 'tcp'],
    ['SSLv2 hello', hex('80 2e 01 00 02'), 'tcp'],
    ['PostgreSQL startup', hex('00 00 00 08 04 d2 16 2f'), 'tcp'],
    ['NUL', hex('00'), 'tcp'],
    ['0xff', hex('ff'), 'tcp'],
    ['whitespace then binary', hex('20 00'), 'tcp'],
  ];
  for (const [name, buf, want] of cases) t.equal(sniff(buf), want, name);
});

t.test('mayBeRouted: what is waited for under the header timeout and then refused, never passed on', async (t) => {
  t.equal(mayBeRouted(b('GE')), true);
  t.equal(mayBeRouted(b('\r\n')), true);
  t.equal(mayBeRouted(b('PRI * HTTP/2.0\r\n')), true);
  t.equal(mayBeRouted(hex('da')), true, 'one byte of Dubbo: the rest of a call may follow the pause');
  t.equal(mayBeRouted(hex('16')), false, 'one byte of TLS: opaque either way');
  t.equal(mayBeRouted(b('GET ')), false, 'decided already');
  t.equal(mayBeRouted(b('\x00')), false);
});

t.test('sniff is pure and never throws on any byte', async (t) => {
  // every single byte, and every pair with a deciding first byte
  for (let i = 0; i < 256; i++) {
    const v = sniff(Buffer.from([i]));
    t.ok(['more', 'tcp'].includes(v), `byte ${i}: ${v}`);
    for (let j = 0; j < 256; j++) sniff(Buffer.from([i, j]));
  }
  // every prefix that is `more` is decided within MAX_SNIFF_BYTES
  for (const s of ['\r\n'.repeat(100), ' '.repeat(200), 'A'.repeat(200), `${' '.repeat(64)}${'A'.repeat(64)}\r\r`]) {
    t.not(sniff(b(s).subarray(0, MAX_SNIFF_BYTES)), 'more', JSON.stringify(s.slice(0, 8)));
  }
  const buf = b('GET / HTTP/1.1\r\n');
  const copy = Buffer.from(buf);
  sniff(buf);
  t.same(buf, copy, 'the input is not modified');
});
