/**
 * Service discovery through Sluice, as an operator lives with it: Spring Cloud services, config
 * reloads, redacted passwords, a non-mesh consumer beside a mesh one, and ZooKeeper restarted
 * under load. A real ZooKeeper; providers registered the way Dubbo registers them.
 */
import http from 'node:http';
import t from 'tap';
import YAML from 'yaml';
import { adminPost, get, httpUpstream, startSluice, stats, waitFor } from '../helpers/harness';
import { CreateMode, springInstance, ZkWriter } from '../helpers/zookeeper';
import { Consumer, rawProvider, str } from './dubbo-peers';
import { callsOf, CLUSTER, clusters, register, registryConfig, zookeeperForFile } from './registry-peers';

const f = zookeeperForFile();

t.test('Spring Cloud services: an HTTP host finds the instances under /services/<name>', async (t) => {
  const seen: string[] = [];
  const ups = await Promise.all([1, 2].map((i) => httpUpstream((req, res) => { seen.push(`u${i}`); res.end(`u${i} ${req.url}`); })));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  await f.writer.mkdirp('/services/orders');
  const nodes = await Promise.all(ups.map((u, i) => f.writer.create(`/services/orders/id-${i}`, springInstance('orders', `id-${i}`, '127.0.0.1', u.port, { zone: `z${i}` }), CreateMode.EPHEMERAL)));
  t.teardown(() => Promise.all(nodes.map((n) => f.writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig(f, ));
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
  const na = await register(f, a, { version: '1.0.0' });
  t.teardown(() => f.writer.remove(na).catch(() => {}));
  const doc = registryConfig(f, );
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
  const renamed = { ...doc, listeners: [{ name: 'dubbo', address: `127.0.0.1:${s.port('dubbo')}`, protocol: 'dubbo' }], registries: [{ name: 'zk2', type: 'zookeeper', address: f.zk.connectString }] };
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
  const s = await startSluice({ ...registryConfig(f, ), registries: [{ name: 'zk', type: 'zookeeper', address: f.zk.connectString, auth: { digest: 'sluice:s3cret-pass' } }] });
  t.teardown(() => s.stop());
  const body = (await get(`${s.admin}/config_dump`)).body;
  t.notMatch(body, /s3cret-pass/);
  t.same(JSON.parse(body).config.registries[0].auth, { digest: 'sluice:<redacted>' });
});

t.test('mesh and non-mesh side by side: a consumer reading ZooKeeper itself and one through Sluice reach the same providers', async (t) => {
  const iface = 'com.example.SideBySide';
  const ps = await Promise.all([rawProvider(), rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all(ps.map((p) => p.close())));
  const nodes = await Promise.all(ps.map((p) => register(f, p, { version: '1.0.0' }, f.writer, iface)));
  t.teardown(() => Promise.all(nodes.map((n) => f.writer.remove(n).catch(() => {}))));
  // the non-mesh consumer: its own ZooKeeper session, the provider URLs decoded by Node's own URL parser
  const reader = await ZkWriter.connect(f.zk.connectString);
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
  const s = await startSluice(registryConfig(f, ));
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
  const w = await ZkWriter.connect(f.zk.connectString, { sessionTimeoutMs: 60_000 });
  t.teardown(() => w.close());
  const [a, b] = await Promise.all([rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await register(f, a, { version: '1.0.0' }, w);
  await register(f, b, { version: '1.0.0' }, w);
  const s = await startSluice(registryConfig(f, ));
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
  await f.zk.stop();
  await waitFor(async () => (await stats(s.admin)).get('sluice_registry_stale_services{registry="zk"}') === 1, 10_000, 'the service marked stale');
  const during = done;
  await new Promise((r) => setTimeout(r, 1000));
  t.ok(done > during, 'calls go on while ZooKeeper is down');
  await f.zk.start();
  await waitFor(async () => (await stats(s.admin)).get('sluice_registry_stale_services{registry="zk"}') === 0, 30_000, 'fresh again after the restart');
  const after = done;
  await waitFor(() => done > after + 20, 10_000, 'calls after the restart');
  stop = true;
  await load;
  t.equal(failed, 0, `no failed call of ${done}`);
  t.ok(callsOf(a) > 0 && callsOf(b) > 0, 'both providers served throughout');
});
