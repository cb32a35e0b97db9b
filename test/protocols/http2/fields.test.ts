/**
 * The request field checks on their own (RFC 9113 8.3.1, RFC 3986): which
 * pseudo-header values pass, which make the request malformed, and why.
 */
import t from 'tap';
import { checkRequest, validAuthority, validMethod, validPath, validScheme, type RequestHead } from '../../../src/protocols/http2/fields';

const head = (): RequestHead => ({ method: '', scheme: '', path: '', authority: '', contentLength: -1, contentType: '', te: '' });

function check(fields: Array<[string, string]>): { error: string | null; head: RequestHead } {
  const h = head();
  return { error: checkRequest(fields.flat(), h), head: h };
}

const req = (extra: Array<[string, string]> = [], over: Record<string, string | null> = {}): Array<[string, string]> => {
  const base: Record<string, string | null> = { ':method': 'GET', ':scheme': 'https', ':path': '/', ':authority': 'a.example', ...over };
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(base)) if (v !== null) out.push([k, v]);
  return [...out, ...extra];
};

t.test(':path: origin-form of what an HTTP/1 request-target may hold, or * for OPTIONS', async (t) => {
  for (const p of ['/', '/a/b/c', '/a%20b', '/%7e%7E', "/:@!$&'()*+,;=-._~", '/x?', '/x?a=1&b=/c?d', '/?', '//double',
    '/x?q={"a":[1]}|^`<>', '/%zz', '/\\']) {
    // what the path's canonical form makes of escapes and backslashes is decided by protocols/http/http-target.ts, for HTTP/1 too
    t.ok(validPath(p, 'GET'), `${JSON.stringify(p)} passes`);
  }
  t.ok(validPath('*', 'OPTIONS'), '* for OPTIONS');
  t.notOk(validPath('*', 'GET'), '* for GET');
  const bad = ['', 'a', '*x', 'http://a/b', '/a b', '/a\tb', '/\x00', '/\x1f', '/\x7f', '/\x80', '/\xff', '/é', '/#', '/a#b'];
  for (const p of bad) t.notOk(validPath(p, 'GET'), `${JSON.stringify(p)} is refused`);
});

t.test(':method is a token, :scheme a scheme, :authority a host[:port] without userinfo', async (t) => {
  for (const m of ['GET', 'get', 'M-SEARCH', "X!#$%&'*+.^_`|~9"]) t.ok(validMethod(m), `method ${JSON.stringify(m)}`);
  for (const m of ['', 'G T', 'G\tT', 'G(T', 'G/T', 'G:T', 'G\x7fT', 'GÉT', 'G"T']) t.notOk(validMethod(m), `method ${JSON.stringify(m)} refused`);
  for (const s of ['http', 'https', 'HTTP', 'a', 'coap+tcp', 'x-y.z1']) t.ok(validScheme(s), `scheme ${JSON.stringify(s)}`);
  for (const s of ['', '1a', '+a', 'a:', 'a b', 'a/b', 'é']) t.notOk(validScheme(s), `scheme ${JSON.stringify(s)} refused`);
  for (const a of ['a', 'a.example:8080', '127.0.0.1:80', '[::1]', '[fe80::1%25eth0]:443', 'xn--bcher-kva.example', 'a%41']) t.ok(validAuthority(a), `authority ${JSON.stringify(a)}`);
  for (const a of ['', 'u@a', 'u:p@a', '@a', 'a b', 'a/b', 'a?b', 'a#b', 'é.example', 'a\\b', 'a%4']) t.notOk(validAuthority(a), `authority ${JSON.stringify(a)} refused`);
});

t.test('checkRequest: what a request view gets, and why a request is malformed', async (t) => {
  const ok = check(req([['x', '1']]));
  t.equal(ok.error, null);
  t.same([ok.head.method, ok.head.scheme, ok.head.path, ok.head.authority], ['GET', 'https', '/', 'a.example']);
  t.equal(check(req([['host', 'h.example']], { ':authority': null })).head.authority, 'h.example', 'host stands in for a missing :authority');
  t.equal(check(req([['host', 'A.Example']])).error, null, 'host equal to :authority but for case');
  t.equal(check(req([], { ':authority': null })).error, null, 'no authority at all is left to the route (as before)');
  const cases: Array<[string, Array<[string, string]>, string]> = [
    ['space in :path', req([], { ':path': '/a b' }), 'invalid :path'],
    [':path not origin-form', req([], { ':path': 'a' }), 'invalid :path'],
    [':method not a token', req([], { ':method': 'G T' }), 'invalid :method'],
    [':scheme not a scheme', req([], { ':scheme': 'ht tp' }), 'invalid :scheme'],
    ['userinfo in :authority', req([], { ':authority': 'u@a' }), 'invalid :authority'],
    ['empty :authority', req([], { ':authority': '' }), 'invalid :authority'],
    ['userinfo in host', req([['host', 'u@a']], { ':authority': null }), 'invalid host'],
    ['host differs', req([['host', 'b.example']]), 'host differs from :authority'],
    ['two host fields', req([['host', 'a.example'], ['host', 'a.example']]), 'duplicate host'],
    ['CONNECT', req([], { ':method': 'CONNECT' }), 'CONNECT is not supported'],
  ];
  for (const [what, f, why] of cases) t.equal(check(f).error, why, what);
});
