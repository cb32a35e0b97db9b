/**
 * Service discovery through Sluice, against a real ZooKeeper: providers registered the way Dubbo
 * registers them (ephemeral nodes named by URL-encoded dubbo:// URLs) in front of real Dubbo
 * providers, Spring Cloud instances in front of HTTP servers, consumers calling through an
 * explicit (low-intrusion) listener that names no cluster: every call finds its providers by
 * service name, subscribed on its first call.
 */
import http from 'node:http';
import t from 'tap';
import { adminPost, get, httpUpstream, startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';
import {
  CreateMode, dubboProviderNode, parseWchp, springInstance, startZooKeeper, zookeeperInstalled, ZkWriter, type ZooKeeperServer,
} from '../helpers/zookeeper';
import { Consumer, rawProvider, SERVICE, str, type Provider } from './dubbo-peers';
import YAML from 'yaml';

if (!zookeeperInstalled()) {
  t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
  process.exit(1);
}

let zk: ZooKeeperServer;
let writer: ZkWriter;
t.before(async () => {
  zk = await startZooKeeper();
  writer = await ZkWriter.connect(zk.connectString);
});
t.teardown(async () => {
  writer?.close();
  await zk?.destroy();
});

const PROVIDERS = `/dubbo/${SERVICE}/providers`;
const CLUSTER = `dubbo/${SERVICE}`;

/** A Dubbo provider registered as Dubbo registers it; returns its node. */
async function register(p: Provider, params: Record<string, string | number>, w: ZkWriter = writer, iface = SERVICE): Promise<string> {
  await writer.mkdirp(`/dubbo/${iface}/providers`);
  const node = `/dubbo/${iface}/providers/${dubboProviderNode('127.0.0.1', p.port, iface, params)}`;
  await w.create(node, undefined, CreateMode.EPHEMERAL);
  return node;
}

const callsOf = (p: Provider) => p.conns.reduce((n, c) => n + c.calls.length, 0);

function registryConfig(registry: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: [{ name: 'dubbo', address: '127.0.0.1:0', protocol: 'dubbo' }, { name: 'web', address: '127.0.0.1:0', protocol: 'http' }],
    registries: [{ name: 'zk', type: 'zookeeper', address: zk.connectString, sessionTimeoutMs: 10_000 }],
    registry: { firstListTimeoutMs: 3000, ...registry },
    ...extra,
  };
}

async function clusters(s: RunningSluice): Promise<{ clusters: Array<Record<string, any>>; registries: Array<Record<string, any>> }> {
  return JSON.parse((await get(`${s.admin}/clusters`)).body);
}

t.test('calls spread over every provider of their own group and version, weights applied, subscribed on the first call', async (t) => {
  const [a, b, g2, v2, zero, heavy] = await Promise.all(Array.from({ length: 6 }, () => rawProvider()));
  t.teardown(() => Promise.all([a, b, g2, v2, zero, heavy].map((p) => p.close())));
  const nodes = [
    await register(a, { version: '1.0.0' }),
    await register(b, { version: '1.0.0', weight: 100 }),
    await register(g2, { version: '1.0.0', group: 'g2' }),
    await register(v2, { version: '2.0.0' }),
    await register(zero, { version: '1.0.0', weight: 0 }),
  ];
  t.teardown(() => Promise.all(nodes.map((n) => writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());

  t.notOk((await clusters(s)).clusters.some((c) => c.name === CLUSTER), 'nothing is subscribed before the first call');
  const consumer = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => consumer.close());
  const first = await consumer.call('transfer', [str('first')]);
  t.equal(first.status, 20, `the first call is held until the providers arrive, then answered: ${JSON.stringify(first)}`);

  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => consumer.call('transfer', [str(`c${i}`)])));
  t.same(answers.filter((x) => x.status !== 20), [], 'every call answered');
  t.ok(callsOf(a) >= 15 && callsOf(b) >= 15, `both providers of version 1.0.0 and no group share the calls: ${callsOf(a)} / ${callsOf(b)}`);
  t.equal(callsOf(a) + callsOf(b), 41);
  t.equal(callsOf(g2), 0, 'another group gets none');
  t.equal(callsOf(v2), 0, 'another version gets none');
  t.equal(callsOf(zero), 0, 'weight 0 gets none');

  const grouped = await Promise.all(Array.from({ length: 6 }, (_, i) => consumer.call('transfer', [str(`g${i}`)], { group: 'g2' })));
  t.same(grouped.map((x) => x.status), [20, 20, 20, 20, 20, 20]);
  t.equal(callsOf(g2), 6, 'a call of group g2 goes to the g2 provider only');
  const versioned = await consumer.call('transfer', [str('v')], {}, 20_000, `${SERVICE}:2.0.0`);
  t.equal(versioned.status, 20);
  t.equal(callsOf(v2), 1, 'a call of version 2.0.0 goes to the 2.0.0 provider');
  const none = await consumer.call('transfer', [str('x')], { group: 'nope' });
  t.equal(none.status, 60, 'no provider of that group: SERVICE_NOT_FOUND');
  t.match(none.error, /no provider of com\.example\.TransferService \(group "nope", version "1\.0\.0"\)/);

  // weights: 300 against 100 takes three calls in four
  const heavyNode = await register(heavy, { version: '1.0.0', weight: 300, group: 'w' });
  nodes.push(heavyNode);
  const light = await rawProvider();
  t.teardown(() => light.close());
  nodes.push(await register(light, { version: '1.0.0', weight: 100, group: 'w' }));
  await waitFor(async () => ((await clusters(s)).clusters.find((c) => c.name === CLUSTER)?.endpoints.length ?? 0) === 7, 5000, 'the new providers listed');
  await Promise.all(Array.from({ length: 40 }, (_, i) => consumer.call('transfer', [str(`w${i}`)], { group: 'w' })));
  t.equal(callsOf(heavy), 30, 'weight 300 of 400: 30 calls of 40');
  t.equal(callsOf(light), 10);

  const view = (await clusters(s)).clusters.find((c) => c.name === CLUSTER)!;
  t.equal(view.endpointSource, 'registry');
  t.match(view.registry, { kind: 'dubbo', service: SERVICE, state: 'ready', stale: false });
  const ea = view.endpoints.find((e: { address: string }) => e.address === `127.0.0.1:${a.port}`);
  t.match(ea, { weight: 100, source: 'zookeeper:zk', labels: { version: '1.0.0', group: '', application: 'demo-provider', side: 'provider' } });
  t.equal(ea.id, `dubbo://127.0.0.1:${a.port}/com.example.TransferService`);
  t.equal(view.endpoints.find((e: { address: string }) => e.address === `127.0.0.1:${zero.port}`).weight, 0);
  t.match((await clusters(s)).registries, [{ name: 'zk', connected: true, services: 1 }]);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_registry_subscriptions{registry="zk"}'), 1);
  t.equal(st.get('sluice_registry_subscribe_total{registry="zk"}'), 1);
  t.equal(st.get('sluice_registry_connected{registry="zk"}'), 1);
  t.ok((st.get(`sluice_upstream_rq_total{cluster="${CLUSTER}"}`) ?? 0) === 88, 'the discovered cluster counts its requests');
  t.equal(st.get(`sluice_cluster_endpoints{cluster="${CLUSTER}"}`), 7);
});

t.test('a provider that leaves stops getting calls within a second, with no failed call, and its connections are drained', async (t) => {
  const [a, b] = await Promise.all([rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const na = await register(a, { version: '1.0.0' });
  const nb = await register(b, { version: '1.0.0' });
  t.teardown(() => Promise.all([na, nb].map((n) => writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());
  const consumers = await Promise.all([Consumer.connect(s.port('dubbo')), Consumer.connect(s.port('dubbo'))]);
  t.teardown(() => consumers.forEach((c) => c.close()));

  let last = 0;
  b.events.on('call', () => { last = Date.now(); });
  let failed = 0;
  let done = 0;
  let stop = false;
  let removedAt = 0;
  const load = consumers.map(async (c) => {
    for (let i = 0; !stop && i < 5000; i++) {
      const r = await c.call('transfer', [str(`l${i}`)]);
      if (r.status !== 20) failed++;
      done++;
      await new Promise((r) => setTimeout(r, 2));
    }
  });
  await waitFor(() => callsOf(b) > 20, 10_000, 'b serving');
  removedAt = Date.now();
  await writer.remove(nb);
  await new Promise((r) => setTimeout(r, 2000));
  stop = true;
  await Promise.all(load);
  t.equal(failed, 0, `no failed call of ${done}`);
  t.ok(last - removedAt < 1000, `b's last call came ${last - removedAt} ms after its node was removed`);
  await waitFor(() => b.conns.every((c) => c.closed), 5000, 'the connections to b closed (pool drained)');
  t.pass('pooled connections to the provider that left were closed');
  const callsA = callsOf(a);
  t.ok(callsA > 0);
});

t.test('on-demand subscription and idle unsubscription, as ZooKeeper sees its watches', async (t) => {
  const iface = 'com.example.IdleService';
  const a = await rawProvider();
  t.teardown(() => a.close());
  const na = await register(a, {}, writer, iface);
  t.teardown(() => writer.remove(na).catch(() => {}));
  const s = await startSluice(registryConfig({ idleUnsubscribeMs: 1000 }));
  t.teardown(() => s.stop());
  const configurators = `/dubbo/${iface}/configurators`;
  const watchers = async () => parseWchp(await zk.fourLetter('wchp')).get(configurators) ?? [];
  t.same(await watchers(), [], 'not watched before it is called');
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  const r = await c.call('hello', [str('x')], {}, 20_000, iface);
  t.equal(r.status, 20, JSON.stringify(r));
  const session = (await clusters(s)).registries[0].sessionId as string;
  t.same(await watchers(), [session], 'called: watched by Sluice\'s session');
  // idle: unsubscribed, its cluster and pools gone, and with nothing subscribed the session ends with its watches
  await waitFor(async () => !(await clusters(s)).clusters.some((x) => x.name === `dubbo/${iface}`), 5000, 'the idle service unsubscribed');
  await waitFor(async () => (await watchers()).length === 0, 5000, 'its watch gone from ZooKeeper');
  await waitFor(() => a.conns.every((x) => x.closed), 5000, 'the connections to its provider closed');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_registry_unsubscribe_total{registry="zk"}'), 1);
  t.equal(st.get('sluice_registry_subscriptions{registry="zk"}'), 0);
  // called again: subscribed again
  t.equal((await c.call('hello', [str('y')], {}, 20_000, iface)).status, 20);
  t.equal((await stats(s.admin)).get('sluice_registry_subscribe_total{registry="zk"}'), 2);
});

t.test('no registry answer within firstListTimeoutMs: the call fails clearly; a service with no provider too', async (t) => {
  const s = await startSluice({
    listeners: [{ name: 'dubbo', address: '127.0.0.1:0', protocol: 'dubbo' }],
    // nothing listens there: the registry never answers
    registries: [{ name: 'down', type: 'zookeeper', address: '127.0.0.1:1', sessionTimeoutMs: 4000 }],
    registry: { firstListTimeoutMs: 500 },
  });
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  const t0 = Date.now();
  const r = await c.call('transfer', [str('x')]);
  const took = Date.now() - t0;
  t.equal(r.status, 70, 'SERVICE_ERROR');
  t.match(r.error, /sluice: registry_timeout: no registry answered for dubbo service com\.example\.TransferService/);
  t.ok(took >= 450 && took < 3000, `answered after the registry's time (${took} ms)`);
  const again = Date.now();
  t.equal((await c.call('transfer', [str('y')])).status, 70);
  t.ok(Date.now() - again < 400, 'later calls fail at once while the registry stays silent');
  t.equal((await stats(s.admin)).get('sluice_registry_ready_timeout_total'), 1);
});

t.test('an interface nobody provides: SERVICE_NOT_FOUND with the reason', async (t) => {
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  const r = await c.call('transfer', [str('x')], {}, 20_000, 'com.example.Nobody:1.0.0');
  t.equal(r.status, 60);
  t.match(r.error, /no provider of com\.example\.Nobody/);
  // a name that is no ZooKeeper path segment never reaches ZooKeeper: no route, as without a registry
  for (const bad of ['../../zookeeper', 'com.example.A/providers', 'a b']) {
    const x = await c.call('transfer', [str('x')], {}, 20_000, `${bad}:1.0.0`);
    t.equal(x.status, 60, `${bad}: SERVICE_NOT_FOUND`);
    t.match(x.error, /sluice: no_route/);
  }
  t.same((await clusters(s)).clusters.map((x) => x.name), ['dubbo/com.example.Nobody'], 'only the well-formed name was subscribed');
  t.equal((await stats(s.admin)).get('sluice_registry_subscribe_total{registry="zk"}'), 1);
});

t.test('Spring Cloud services: an HTTP host finds the instances under /services/<name>', async (t) => {
  const seen: string[] = [];
  const ups = await Promise.all([1, 2].map((i) => httpUpstream((req, res) => { seen.push(`u${i}`); res.end(`u${i} ${req.url}`); })));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  await writer.mkdirp('/services/orders');
  const nodes = await Promise.all(ups.map((u, i) => writer.create(`/services/orders/id-${i}`, springInstance('orders', `id-${i}`, '127.0.0.1', u.port, { zone: `z${i}` }), CreateMode.EPHEMERAL)));
  t.teardown(() => Promise.all(nodes.map((n) => writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());
  const call = (host: string) => new Promise<{ status: number; body: string; reason?: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: s.port('web'), path: '/o', headers: { host }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body, reason: res.headers['x-sluice-reason'] as string | undefined }));
    });
    req.on('error', reject);
    req.end();
  });
  for (let i = 0; i < 10; i++) t.equal((await call('orders')).status, 200);
  t.same(new Set(seen), new Set(['u1', 'u2']), 'both instances serve');
  const view = (await clusters(s)).clusters.find((c) => c.name === 'spring/orders')!;
  t.same(view.endpoints.map((e: { labels: Record<string, string> }) => e.labels.zone).sort(), ['z0', 'z1'], 'metadata are labels');
  const missing = await call('nobody');
  t.equal(missing.status, 503);
  t.equal(missing.reason, 'no_healthy_upstream');
  t.match(missing.body, /no instance of nobody/);
  const ip = await call('127.0.0.1');
  t.equal(ip.status, 404, 'an address is no service name: no route, as without a registry');
});

t.test('hot reload: registries changed, added and removed; the services in use keep serving', async (t) => {
  const a = await rawProvider();
  t.teardown(() => a.close());
  const na = await register(a, { version: '1.0.0' });
  t.teardown(() => writer.remove(na).catch(() => {}));
  const doc = registryConfig();
  const s = await startSluice(doc);
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  t.equal((await c.call('transfer', [str('1')])).status, 20);
  const push = async (d: Record<string, unknown>) => {
    const r = await adminPost(s.admin, '/config', YAML.stringify({ ...d, admin: { address: '127.0.0.1:0' }, workers: { threads: 2 } }));
    t.equal(r.status, 200, r.body);
  };
  const session = (await clusters(s)).registries[0].sessionId;
  // the same registries, another unrelated change: the subscription and session stay
  await push({ ...doc, logLevel: 'warn', listeners: [{ name: 'dubbo', address: `127.0.0.1:${s.port('dubbo')}`, protocol: 'dubbo' }] });
  t.equal((await clusters(s)).registries[0].sessionId, session, 'unchanged registries: same session');
  t.equal((await c.call('transfer', [str('2')])).status, 20);
  // the registry renamed (a change): subscribed again there, serving meanwhile
  const renamed = { ...doc, listeners: [{ name: 'dubbo', address: `127.0.0.1:${s.port('dubbo')}`, protocol: 'dubbo' }], registries: [{ name: 'zk2', type: 'zookeeper', address: zk.connectString }] };
  await push(renamed);
  t.equal((await c.call('transfer', [str('3')])).status, 20, 'served across the change');
  await waitFor(async () => (await clusters(s)).clusters.find((x) => x.name === CLUSTER)?.endpoints[0]?.source === 'zookeeper:zk2', 5000, 'the list from the new registry');
  t.equal((await stats(s.admin)).get('sluice_registry_subscriptions{registry="zk2"}'), 1);
  // registries removed: the discovered service goes; the call has no route now
  await push({ listeners: [{ name: 'dubbo', address: `127.0.0.1:${s.port('dubbo')}`, protocol: 'dubbo', cluster: 'static' }], clusters: [{ name: 'static', endpoints: [`127.0.0.1:${a.port}`] }] });
  t.notOk((await clusters(s)).clusters.some((x) => x.name === CLUSTER), 'no discovered cluster without registries');
  t.equal((await c.call('transfer', [str('4')])).status, 20, 'the static cluster serves');
  const dump = JSON.parse((await get(`${s.admin}/config_dump`)).body);
  t.same(dump.config.registries, []);
});

t.test('/config_dump does not show a registry password', async (t) => {
  const s = await startSluice({ ...registryConfig(), registries: [{ name: 'zk', type: 'zookeeper', address: zk.connectString, auth: { digest: 'sluice:s3cret-pass' } }] });
  t.teardown(() => s.stop());
  const body = (await get(`${s.admin}/config_dump`)).body;
  t.notMatch(body, /s3cret-pass/);
  t.same(JSON.parse(body).config.registries[0].auth, { digest: 'sluice:<redacted>' });
});

t.test('mesh and non-mesh side by side: a consumer reading ZooKeeper itself and one through Sluice reach the same providers', async (t) => {
  const iface = 'com.example.SideBySide';
  const ps = await Promise.all([rawProvider(), rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all(ps.map((p) => p.close())));
  const nodes = await Promise.all(ps.map((p) => register(p, { version: '1.0.0' }, writer, iface)));
  t.teardown(() => Promise.all(nodes.map((n) => writer.remove(n).catch(() => {}))));
  // the non-mesh consumer: its own ZooKeeper session, the provider URLs decoded by Node's own URL parser
  const reader = await ZkWriter.connect(zk.connectString);
  t.teardown(() => reader.close());
  const urls = (await reader.children(`/dubbo/${iface}/providers`)).map((n) => new URL(decodeURIComponent(n.replace(/\+/g, ' '))));
  t.equal(urls.length, 3);
  const direct = new Set<number>();
  for (const u of urls) {
    const c = await Consumer.connect(Number(u.port));
    const r = await c.call('who', [str('direct')], {}, 20_000, `${u.pathname.slice(1)}:${u.searchParams.get('version')}`);
    c.close();
    t.equal(r.status, 20);
    direct.add(Number(u.port));
  }
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());
  const mesh = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => mesh.close());
  const before = ps.map(callsOf);
  for (let i = 0; i < 30; i++) t.equal((await mesh.call('who', [str('mesh')], {}, 20_000, `${iface}:1.0.0`)).status, 20);
  const reached = new Set(ps.filter((p, i) => callsOf(p) > before[i]).map((p) => p.port));
  t.same([...reached].sort(), [...direct].sort(), 'the same providers');
  t.same((await reader.children(`/dubbo/${iface}/providers`)).length, 3, 'the registrations are as Dubbo wrote them: Sluice adds nothing to ZooKeeper');
});

t.test('ZooKeeper stopped and restarted under load: the last lists keep serving (stale), zero failed calls', async (t) => {
  // last in this file: the providers' own session outlives the restart (as a Dubbo provider's would)
  const w = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 60_000 });
  t.teardown(() => w.close());
  const [a, b] = await Promise.all([rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await register(a, { version: '1.0.0' }, w);
  await register(b, { version: '1.0.0' }, w);
  const s = await startSluice(registryConfig());
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  let failed = 0;
  let done = 0;
  let stop = false;
  const deadline = Date.now() + 60_000;
  const load = (async () => {
    for (let i = 0; !stop && Date.now() < deadline; i++) {
      const r = await c.call('transfer', [str(`z${i}`)]);
      if (r.status !== 20) failed++;
      done++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await waitFor(() => done > 20, 10_000, 'calls flowing');
  await zk.stop();
  await waitFor(async () => (await stats(s.admin)).get('sluice_registry_stale_services{registry="zk"}') === 1, 10_000, 'the service marked stale');
  const during = done;
  await new Promise((r) => setTimeout(r, 1000));
  t.ok(done > during, 'calls go on while ZooKeeper is down');
  await zk.start();
  await waitFor(async () => (await stats(s.admin)).get('sluice_registry_stale_services{registry="zk"}') === 0, 30_000, 'fresh again after the restart');
  const after = done;
  await waitFor(() => done > after + 20, 10_000, 'calls after the restart');
  stop = true;
  await load;
  t.equal(failed, 0, `no failed call of ${done}`);
  t.ok(callsOf(a) > 0 && callsOf(b) > 0, 'both providers served throughout');
});
