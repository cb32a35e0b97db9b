/**
 * Protocol recognition from first bytes: every row of the DESIGN.md table, with fragments.
 */
import t from 'tap';
import { H2_PREFACE, sniff, type Sniffed } from '../../src/codecs/sniff';

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

t.test('PRI followed by something else is not HTTP/2', async (t) => {
  // diverging after "PRI " leaves an HTTP/1 request line with the method PRI: the HTTP/1 codec
  // answers it (an HTTP/2.0 version is refused there), rather than an HTTP/2 server hanging
  t.equal(sniff(b('PRI /x HTTP/1.1\r\n')), 'http1');
  t.equal(sniff(b('PRI * HTTP/1.1\r\n\r\n')), 'http1');
  t.equal(sniff(b('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n')), 'http1', 'a corrupted preface');
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

t.test('anything else is opaque TCP', async (t) => {
  const cases: Array<[string, Buffer, Sniffed]> = [
    ['lowercase method', b('get / HTTP/1.1\r\n'), 'tcp'],
    ['mixed case method', b('Get / HTTP/1.1\r\n'), 'tcp'],
    ['leading space', b(' GET /'), 'tcp'],
    ['method then CR', b('GET\r\n'), 'tcp'],
    ['digits', b('123 abc'), 'tcp'],
    ['MySQL server greeting', hex('4a 00 00 00 0a 38 2e 30 2e 33 33 00'), 'tcp'],
    ['Redis inline', b('*1\r\n$4\r\nPING\r\n'), 'tcp'],
    ['SSH banner', b('SSH-2.0-OpenSSH_9.6\r\n'), 'tcp'],
    ['SSLv2 hello', hex('80 2e 01 00 02'), 'tcp'],
    ['NUL', hex('00'), 'tcp'],
    ['0xff', hex('ff'), 'tcp'],
  ];
  for (const [name, buf, want] of cases) t.equal(sniff(buf), want, name);
});

t.test('a very long token is not a method', async (t) => {
  t.equal(sniff(b('A'.repeat(20))), 'more', '20 letters: the longest method we wait for');
  t.equal(sniff(b(`${'A'.repeat(20)} / HTTP/1.1`)), 'http1');
  t.equal(sniff(b('A'.repeat(21))), 'tcp');
  t.equal(sniff(b(`${'A'.repeat(21)} / HTTP/1.1`)), 'tcp');
  t.equal(sniff(b('A'.repeat(4096))), 'tcp');
});

t.test('sniff is pure and never throws on any byte', async (t) => {
  // every single byte, and every pair with a deciding first byte
  for (let i = 0; i < 256; i++) {
    const v = sniff(Buffer.from([i]));
    t.ok(['more', 'tcp'].includes(v), `byte ${i}: ${v}`);
  }
  const buf = b('GET / HTTP/1.1\r\n');
  const copy = Buffer.from(buf);
  sniff(buf);
  t.same(buf, copy, 'the input is not modified');
});
