/**
 * A cluster's endpoints replaced on their own (PUT /clusters/<name>/endpoints), without a config
 * reload: from the moment the answer comes, every request (new connections on every worker,
 * keep-alive connections opened before, HTTP/1.1, HTTP/2, Dubbo) goes to the new list; label
 * subsets follow; requests in flight to a removed endpoint finish and its connections close;
 * a replaced worker starts with the new list; DELETE goes back to the config's.
 */
import http from 'node:http';
import t from 'tap';
import { adminPost, adminRequest, get, httpUpstream, run, startSluice, stats, waitFor, type RunningSluice, type Upstream } from '../helpers/harness';
import { Consumer, rawProvider, str, type Provider } from './dubbo-peers';

const tags = new Map<number, string>();
const held: Array<() => void> = [];
let A: Upstream, B: Upstream, C: Upstream, D: Upstream;
let PA: Provider, PB: Provider;
let s: RunningSluice;

async function tagged(tag: string): Promise<Upstream> {
  const u = await httpUpstream((req, res) => {
    const answer = () => { res.setHeader('content-type', 'text/plain'); res.end(tag); };
    if (req.url === '/hold') held.push(answer);
    else answer();
  });
  tags.set(u.port, tag);
  return u;
}

const ep = (u: Upstream | Provider, group?: string) => (group ? { address: `127.0.0.1:${u.port}`, labels: { group } } : `127.0.0.1:${u.port}`);

function doc(extraRoute = false, web = 'web') {
  return {
    listeners: [
      { name: 'web', address: '127.0.0.1:0', cluster: web, protocol: 'http' },
      { name: 'rpc', address: '127.0.0.1:0', cluster: 'rpc', protocol: 'dubbo' },
    ],
    routes: [
      { name: 'g2', match: { listener: 'web', headers: { 'x-group': 'g2' } }, action: { cluster: web, labels: { group: 'g2' } } },
      ...(extraRoute ? [{ name: 'extra', match: { listener: 'web', path: { exact: '/extra' } }, action: { directResponse: { status: 200, body: 'extra' } } }] : []),
      { name: 'g1', match: { listener: 'web' }, action: { cluster: web, labels: { group: 'g1' } } },
    ],
    clusters: [
      { name: web, protocol: 'http1', endpoints: [ep(A, 'g1'), ep(C, 'g2')] },
      { name: 'rpc', endpoints: [ep(PA)] },
    ],
  };
}

/** `n` requests, each on a new connection (curl), answered by which upstreams. */
async function curlMany(n: number, args: string[] = []): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await run('curl', ['-s', '--max-time', '5', ...args, `http://127.0.0.1:${s.port('web')}/x`]);
    out.push(r.code === 0 ? r.stdout : `curl exit ${r.code}`);
  }
  return out;
}

const put = (cluster: string, body: unknown, auth?: string | null) =>
  adminRequest(s.admin, 'PUT', `/clusters/${cluster}/endpoints`, typeof body === 'string' ? body : JSON.stringify(body), auth);

async function connectionsTo(u: Upstream): Promise<number> {
  return new Promise((resolve) => (u.server as http.Server).getConnections((_e, n) => resolve(n)));
}

t.before(async () => {
  A = await tagged('A'); B = await tagged('B'); C = await tagged('C'); D = await tagged('D');
  PA = await rawProvider(); PB = await rawProvider();
  s = await startSluice(doc());
});
t.teardown(async () => {
  for (const h of held.splice(0)) h();
  await s?.stop();
  for (const u of [A, B, C, D]) await u?.close();
  await PA?.close(); await PB?.close();
});

t.test('the config list serves until it is replaced', async (t) => {
  t.same(new Set(await curlMany(6)), new Set(['A']), 'every request at A');
  t.same(new Set(await curlMany(3, ['-H', 'x-group: g2'])), new Set(['C']), 'the g2 subset at C');
  const cl = JSON.parse((await get(`${s.admin}/clusters`)).body).clusters.find((c: { name: string }) => c.name === 'web');
  t.equal(cl.endpointSource, 'config');
});

t.test('PUT replaces the list on every worker at once, routes and config untouched', async (t) => {
  const versionBefore = JSON.parse((await get(`${s.admin}/config_dump`)).body).version;
  // a keep-alive connection opened on the old list, and a request held in flight at A
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const viaAgent = (p: string) => new Promise<string>((resolve, reject) => {
    http.get(`http://127.0.0.1:${s.port('web')}${p}`, { agent }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  t.equal(await viaAgent('/x'), 'A', 'the keep-alive client starts at A');
  const inFlight = new Promise<string>((resolve, reject) => {
    http.get(`http://127.0.0.1:${s.port('web')}/hold`, { agent: false }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve(`${res.statusCode} ${b}`));
    }).on('error', reject);
  });
  await waitFor(() => held.length === 1, 5000, 'the held request at A');

  const r = await put('web', { endpoints: [ep(B, 'g1'), ep(D, 'g2')] });
  t.equal(r.status, 200, r.body);
  const body = JSON.parse(r.body);
  t.equal(body.source, 'api');
  t.ok(body.version > 0, 'a version');
  t.same(body.emptySubsets, [], 'the g2 route still has endpoints');

  // checked at once, no sleep: the answer means workers use the list from their next request
  t.same(new Set(await curlMany(10)), new Set(['B']), 'new HTTP/1.1 connections: B only');
  t.same(new Set(await curlMany(4, ['--http2-prior-knowledge'])), new Set(['B']), 'HTTP/2: B only');
  t.same(new Set(await curlMany(4, ['-H', 'x-group: g2'])), new Set(['D']), 'the label subset was rebuilt: D');
  t.equal(await viaAgent('/x'), 'B', 'the keep-alive connection opened before: B');

  held.shift()!();
  t.equal(await inFlight, '200 A', 'the request in flight at A finished');
  await waitFor(async () => (await connectionsTo(A)) === 0, 5000, 'the connections to A closed');
  t.pass('A has no connection from Sluice once its request ended');

  t.equal(JSON.parse((await get(`${s.admin}/config_dump`)).body).version, versionBefore, 'no config reload');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_cluster_endpoints{cluster="web"}'), 2);
  t.equal(st.get('sluice_cluster_endpoint_updates_total{cluster="web"}'), 1);
  const cl = JSON.parse((await get(`${s.admin}/clusters`)).body).clusters.find((c: { name: string }) => c.name === 'web');
  t.equal(cl.endpointSource, 'api');
  t.same(cl.endpoints.map((e: { address: string }) => e.address), [`127.0.0.1:${B.port}`, `127.0.0.1:${D.port}`]);
});

t.test('a worker started after the change uses the new list', async (t) => {
  const killed = await adminPost(s.admin, '/debug/kill_worker');
  t.equal(killed.status, 200);
  await waitFor(async () => (await get(`${s.admin}/ready`)).status === 200, 10_000, 'the replacement worker');
  t.same(new Set(await curlMany(10)), new Set(['B']), 'B on both workers, the new one included');
});

t.test('Dubbo: calls on a connection opened before go to the new provider', async (t) => {
  const c = await Consumer.connect(s.port('rpc'));
  t.teardown(() => c.close());
  const first = await c.call('greet', [str('x')]);
  t.match(first, { status: 20 });
  t.equal(PA.conns.length, 1, 'the first call went to PA');
  t.equal((await put('rpc', { endpoints: [ep(PB)] })).status, 200);
  const second = await c.call('greet', [str('y')]);
  t.match(second, { status: 20, value: /^0:greet:y$/ });
  t.equal(PB.conns[0]?.calls.length, 1, 'the call after the change went to PB');
  t.equal(PA.conns[0].calls.length, 1, 'PA got nothing more');
  await waitFor(() => PA.conns.every((x) => x.closed), 5000, 'the idle connection to PA closed');
});

t.test('bad requests change nothing and say why', async (t) => {
  const bad = await put('web', { endpoints: ['127.0.0.1:1', { address: 'nohost', weight: 1 }, { address: '127.0.0.1:2', weight: 0 }] });
  t.equal(bad.status, 400);
  const issues = JSON.parse(bad.body).issues as Array<{ path: string; message: string }>;
  t.same(issues.map((i) => i.path), ['/endpoints/1/address', '/endpoints/2/weight'], bad.body);
  t.equal((await put('web', 'endpoints: [')).status, 400, 'YAML that does not parse');
  t.equal((await put('web', { hosts: [] })).status, 400, 'no endpoints field');
  t.equal((await put('nosuch', { endpoints: [] })).status, 404, 'unknown cluster');
  t.equal((await put('web', { endpoints: [ep(A)] }, null)).status, 401, 'no token');
  t.equal((await put('web', { endpoints: [ep(A)] }, 'Bearer wrong-token-wrong-token-wrong-token')).status, 401, 'wrong token');
  t.equal((await adminRequest(s.admin, 'POST', '/clusters/web/endpoints', '{"endpoints":[]}')).status, 405);
  t.same(new Set(await curlMany(4)), new Set(['B']), 'still B');
});

t.test('an empty list: the cluster answers 503 no_healthy_upstream; a subset left empty is reported', async (t) => {
  const r = await put('web', { endpoints: [ep(B, 'g1')] });
  t.same(JSON.parse(r.body).emptySubsets, ['g2'], 'the g2 route has no endpoint now');
  const res = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'x-group: g2', `http://127.0.0.1:${s.port('web')}/x`]);
  t.equal(res.stdout, '503');
  t.equal((await put('web', { endpoints: [] })).status, 200);
  const none = await run('curl', ['-s', '-D', '-', `http://127.0.0.1:${s.port('web')}/x`]);
  t.match(none.stdout, /^HTTP\/1.1 503/);
  t.match(none.stdout, /x-sluice-reason: no_healthy_upstream/);
});

t.test('a config reload keeps the replaced list; DELETE goes back to the config; a config without the cluster drops it', async (t) => {
  t.equal((await put('web', { endpoints: [ep(B, 'g1'), ep(D, 'g2')] })).status, 200);
  const { default: YAML } = await import('yaml');
  const reload = await adminPost(s.admin, '/config', YAML.stringify(doc(true)));
  t.equal(reload.status, 200, reload.body);
  t.same(new Set(await curlMany(4)), new Set(['B']), 'after the reload: still the replaced list');
  const del = await adminRequest(s.admin, 'DELETE', '/clusters/web/endpoints');
  t.equal(del.status, 200);
  t.equal(JSON.parse(del.body).source, 'config');
  t.same(new Set(await curlMany(4)), new Set(['A']), 'back to the config list');

  t.equal((await put('web', { endpoints: [ep(B, 'g1'), ep(D, 'g2')] })).status, 200);
  t.equal((await adminPost(s.admin, '/config', YAML.stringify(doc(false, 'web2')))).status, 200);
  t.equal((await adminPost(s.admin, '/config', YAML.stringify(doc()))).status, 200);
  t.same(new Set(await curlMany(4)), new Set(['A']), 'a cluster that left the config and came back starts from its config list');
});

