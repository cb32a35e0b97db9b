/**
 * The headers filter on a fake request context: a route's edits compiled once (names lower case),
 * handed to the exchange per request as the same objects, and nothing for routes without them.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { CONTINUE } from '../../../src/exchange/filter';
import { HeadersFilter, compileEdits } from '../../../src/filters/headers/headers-filter';
import { FakeContext, view } from '../fake-context';

function route(extra: Record<string, unknown>): Record<string, unknown> {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    routes: [{ name: 'r', action: { cluster: 'web' }, ...extra }],
  });
  return config.routes[0] as unknown as Record<string, unknown>;
}

t.test('request and response edits, names lower case, in the order written', async (t) => {
  const f = new HeadersFilter();
  const s = f.compileRoute(route({
    requestHeaders: { set: { 'X-Env': 'prod', 'x-team': 'a b' }, remove: ['X-Debug', 'cookie'] },
    responseHeaders: { set: { 'X-Served-By': 'sluice' } },
  }))!;
  t.same(s.request, { set: [['x-env', 'prod'], ['x-team', 'a b']], remove: ['x-debug', 'cookie'] });
  t.same(s.response, { set: [['x-served-by', 'sluice']], remove: [] });
  t.ok(Object.isFrozen(s.request) && Object.isFrozen(s.request!.set) && Object.isFrozen(s.request!.set[0]), 'shared by every request: frozen');

  const a = new FakeContext(view('grpc'));
  const b = new FakeContext(view('dubbo'));
  t.equal(f.onRequest(a, s), CONTINUE);
  t.equal(f.onRequest(b, s), CONTINUE);
  t.equal(a.requestEdits[0], s.request, 'the compiled edits themselves, no copy per request');
  t.equal(b.requestEdits[0], s.request);
  t.same(a.responseEdits, [s.response]);
  t.same(a.replies, []);
  t.same(a.notes, {});
});

t.test('only one direction', async (t) => {
  const f = new HeadersFilter();
  const s = f.compileRoute(route({ responseHeaders: { remove: ['server'] } }))!;
  t.equal(s.request, null);
  const c = new FakeContext(view());
  f.onRequest(c, s);
  t.same(c.requestEdits, []);
  t.same(c.responseEdits, [{ set: [], remove: ['server'] }]);
});

t.test('a route without header sections does not meet the filter', async (t) => {
  t.equal(new HeadersFilter().compileRoute(route({})), null);
  t.equal(compileEdits(undefined), null);
});
