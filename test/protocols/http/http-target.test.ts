/**
 * Canonical request targets and authorities: every spelling of a path or host that some
 * upstream takes for the same resource comes out as one string, or is refused.
 */
import t from 'tap';
import { normalizeTarget, parseAuthority, splitAbsolute, type PathPolicy, type Target } from '../../../src/protocols/http/http-target';

const STRICT: PathPolicy = { normalizePath: true, mergeSlashes: true, escapedSlashes: 'reject' };

function norm(target: string, policy: PathPolicy = STRICT): Target | string {
  return normalizeTarget(target, policy);
}

t.test('paths with nothing to do come back as they are', async (t) => {
  for (const p of ['/', '/a', '/a/b/c', '/a/b/', '/api/v1/orders?id=3&x=%2F', '/pkg.Service/Method', '/a-b_c~d', '/a/b.c']) {
    const r = norm(p) as Target;
    t.equal(r.forward, p, p);
    t.equal(r.path, p.split('?')[0], `${p}: path`);
  }
  t.same(norm('*'), { path: '*', forward: '*' }, 'OPTIONS *');
});

t.test('every spelling of /admin is /admin', async (t) => {
  const spellings = [
    '/admin', '/./admin', '//admin', '///admin', '/%61dmin', '/%61%64%6D%69%6E', '/%61%64%6d%69%6e', '/x/../admin',
    '/x/y/../../admin', '/../admin', '/%2e/admin', '/%2E%2E/admin', '/x/%2e%2e/admin', '/.//./admin', '/a/b/../../../admin',
  ];
  for (const s of spellings) t.same(norm(s), { path: '/admin', forward: '/admin' }, s);
  t.same(norm('/%61dmin/x?q=%61'), { path: '/admin/x', forward: '/admin/x?q=%61' }, 'the query is left alone');
  t.same(norm('/admin/./'), { path: '/admin/', forward: '/admin/' }, 'a trailing slash stays');
  t.same(norm('/admin/x/..'), { path: '/admin/', forward: '/admin/' });
  t.same(norm('/a%2fb'.replace('%2f', '%7e')), { path: '/a~b', forward: '/a~b' }, 'tilde decoded');
});

t.test('escapes that are not unreserved stay escaped, upper-cased', async (t) => {
  t.same(norm('/a%20b'), { path: '/a%20b', forward: '/a%20b' });
  t.same(norm('/a%3fb'), { path: '/a%3Fb', forward: '/a%3Fb' }, '%3f is "?": decoding it would start a query');
  t.same(norm('/a%25b'), { path: '/a%25b', forward: '/a%25b' }, '%25 is "%": never decoded (no double decoding)');
  t.same(norm('/%2561dmin'), { path: '/%2561dmin', forward: '/%2561dmin' });
  t.same(norm('/a%00b'), { path: '/a%00b', forward: '/a%00b' });
});

t.test('what cannot be made canonical safely is refused', async (t) => {
  const refused: Array<[string, RegExp]> = [
    ['/admin%2Fx', /encoded slash/],
    ['/admin%2fx', /encoded slash/],
    ['/%2Fadmin', /encoded slash/],
    ['/admin%5Cx', /encoded slash/],
    ['/admin\\x', /backslash/],
    ['/a%zz', /broken percent-encoding/],
    ['/a%2', /broken percent-encoding/],
    ['/a%', /broken percent-encoding/],
    ['/a#frag', /fragment/],
    ['/a?x#frag', /fragment/],
    ['/public/..;/admin', /dot segment with parameters/],
    ['/public/.;/admin', /dot segment with parameters/],
    ['/public/..;jsessionid=1/admin', /dot segment with parameters/],
    ['/;x/admin', /parameters only/],
    ['/;/admin', /parameters only/],
    ['/public/;jsessionid=1/../admin', /parameters only/],
    ['admin', /not a path/],
    ['/a b', /space/],
    ['/a?b c', /space/],
    ['/a\x7f', /control/],
    ['/a\u00e9', /non-ASCII/],
    ['/a\tb', /control/],
  ];
  for (const [p, why] of refused) {
    const r = norm(p);
    t.type(r, 'string', p);
    t.match(r, why, p);
  }
  t.same(norm('/a/..x/b'), { path: '/a/..x/b', forward: '/a/..x/b' }, '"..x" is an ordinary segment');
  // routes see the path as servlet containers dispatch it (parameters dropped); it is forwarded with them
  t.same(norm('/;jsessionid=1'), { path: '/', forward: '/;jsessionid=1' }, 'parameters alone as the last segment: a trailing slash to servlet containers');
  t.same(norm('/a/b;v=1/c'), { path: '/a/b/c', forward: '/a/b;v=1/c' }, 'parameters after a name');
  t.same(norm('/a;b=c'), { path: '/a', forward: '/a;b=c' });
  t.same(norm('/admin;x/secret?q=;y'), { path: '/admin/secret', forward: '/admin;x/secret?q=;y' }, 'the query keeps its semicolons');
});

t.test('escapedSlashes: keep and unescape', async (t) => {
  const keep: PathPolicy = { ...STRICT, escapedSlashes: 'keep' };
  const unescape: PathPolicy = { ...STRICT, escapedSlashes: 'unescape' };
  t.same(norm('/admin%2fx', keep), { path: '/admin%2Fx', forward: '/admin%2Fx' });
  t.same(norm('/admin%2Fx', unescape), { path: '/admin/x', forward: '/admin/x' });
  t.same(norm('/x%2F..%2Fadmin', unescape), { path: '/admin', forward: '/admin' }, 'dot segments are removed after unescaping');
  t.same(norm('/x\\..\\admin', unescape), { path: '/admin', forward: '/admin' });
});

t.test('normalizePath and mergeSlashes off', async (t) => {
  const raw: PathPolicy = { normalizePath: false, mergeSlashes: false, escapedSlashes: 'keep' };
  t.same(norm('/./a//%61', raw), { path: '/./a//%61', forward: '/./a//%61' });
  const mergeOnly: PathPolicy = { normalizePath: false, mergeSlashes: true, escapedSlashes: 'keep' };
  t.same(norm('/./a//b', mergeOnly), { path: '/./a/b', forward: '/./a/b' });
  const noMerge: PathPolicy = { ...STRICT, mergeSlashes: false };
  t.same(norm('/a//b/./c', noMerge), { path: '/a//b/c', forward: '/a//b/c' });
});

t.test('authorities', async (t) => {
  const ok: Array<[string, string, string, string]> = [
    ['admin.internal', 'admin.internal', '', 'admin.internal'],
    ['Admin.Internal', 'admin.internal', '', 'admin.internal'],
    ['admin.internal.', 'admin.internal', '', 'admin.internal'],
    ['admin.internal.:8080', 'admin.internal', '8080', 'admin.internal:8080'],
    ['ADMIN.internal:80', 'admin.internal', '80', 'admin.internal:80'],
    ['10.0.0.1:8080', '10.0.0.1', '8080', '10.0.0.1:8080'],
    ['[::1]:8080', '::1', '8080', '[::1]:8080'],
    ['[2001:DB8::1]', '2001:db8::1', '', '[2001:db8::1]'],
    ['my_host', 'my_host', '', 'my_host'],
    ['a:', 'a', '', 'a'],
    ['', '', '', ''],
  ];
  for (const [v, host, port, canonical] of ok) t.same(parseAuthority(v), { host, port, canonical }, JSON.stringify(v));
  const bad = [
    'a.test evil.test', 'user@evil.test', 'x@admin.internal', 'a.test,evil.test', '%61dmin.internal', 'a..b', '.a', 'a..',
    '.', 'a.test:80:80', 'a.test:99999', 'a.test:123456', 'a.test:8x', '[::1', '[::g]', '[fe80::1%25eth0]', '[::1]x', ':80',
    'a\tb', 'a/b', 'a?b', 'a#b', 'ä.test', '[v1.x]',
  ];
  for (const v of bad) t.equal(parseAuthority(v), null, JSON.stringify(v));
});

t.test('absolute-form targets', async (t) => {
  t.same(splitAbsolute('http://admin.internal/x?y'), { authority: 'admin.internal', rest: '/x?y' });
  t.same(splitAbsolute('HTTP://admin.internal'), { authority: 'admin.internal', rest: '/' });
  t.same(splitAbsolute('http://a:81?q'), { authority: 'a:81', rest: '/?q' });
  t.same(splitAbsolute('https://u@a/x'), { authority: 'u@a', rest: '/x' }, 'userinfo is left for parseAuthority to refuse');
  t.equal(splitAbsolute('ftp://a/x'), null);
  t.equal(splitAbsolute('/x'), null);
});

t.test('the service and path a route sees (formerly hostOnly and pathOf)', async (t) => {
  t.equal(parseAuthority('Api.Local:8080')!.host, 'api.local');
  t.equal(parseAuthority('api.local')!.host, 'api.local');
  t.equal(parseAuthority('[2001:DB8::1]:443')!.host, '2001:db8::1');
  t.equal(parseAuthority('[::1]')!.host, '::1');
  const path = (target: string) => {
    const abs = splitAbsolute(target);
    return (norm(abs ? abs.rest : target) as Target).path;
  };
  t.equal(path('/a/b?x=1'), '/a/b');
  t.equal(path('/a/b'), '/a/b');
  t.equal(path('http://h:1/p/q?z'), '/p/q');
  t.equal(path('http://h:1'), '/');
  t.equal(path('http://h:1?next=/admin'), '/', 'a slash in the query is not the path');
  t.equal(path('*'), '*');
});
