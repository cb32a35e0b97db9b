/**
 * Service discovery through Sluice, against a real ZooKeeper: providers registered the way Dubbo
 * registers them (ephemeral nodes named by URL-encoded dubbo:// URLs) in front of real Dubbo
 * providers, consumers calling through an explicit (low-intrusion) listener that names no cluster: every call finds its providers by
 * service name, subscribed on its first call.
 */
import t from 'tap';
import { run, startSluice, stats, waitFor } from '../helpers/harness';
import { parseWchp } from '../helpers/zookeeper';
import { Consumer, rawProvider, SERVICE, str } from './dubbo-peers';
import { callsOf, CLUSTER, clusters, register, registryConfig, zookeeperForFile } from './registry-peers';

const f = zookeeperForFile();

t.test('calls spread over every provider of their own group and version, weights applied, subscribed on the first call', async (t) => {
  const [a, b, g2, v2, zero, heavy] = await Promise.all(Array.from({ length: 6 }, () => rawProvider()));
  t.teardown(() => Promise.all([a, b, g2, v2, zero, heavy].map((p) => p.close())));
  const nodes = [
    await register(f, a, { version: '1.0.0' }),
    await register(f, b, { version: '1.0.0', weight: 100 }),
    await register(f, g2, { version: '1.0.0', group: 'g2' }),
    await register(f, v2, { version: '2.0.0' }),
    await register(f, zero, { version: '1.0.0', weight: 0 }),
  ];
  t.teardown(() => Promise.all(nodes.map((n) => f.writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig(f, ));
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
  const heavyNode = await register(f, heavy, { version: '1.0.0', weight: 300, group: 'w' });
  nodes.push(heavyNode);
  const light = await rawProvider();
  t.teardown(() => light.close());
  nodes.push(await register(f, light, { version: '1.0.0', weight: 100, group: 'w' }));
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
  const na = await register(f, a, { version: '1.0.0' });
  const nb = await register(f, b, { version: '1.0.0' });
  t.teardown(() => Promise.all([na, nb].map((n) => f.writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig(f, ));
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
  await f.writer.remove(nb);
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
  const na = await register(f, a, {}, f.writer, iface);
  t.teardown(() => f.writer.remove(na).catch(() => {}));
  const s = await startSluice(registryConfig(f, { idleUnsubscribeMs: 1000 }));
  t.teardown(() => s.stop());
  const configurators = `/dubbo/${iface}/configurators`;
  const watchers = async () => parseWchp(await f.zk.fourLetter('wchp')).get(configurators) ?? [];
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
  const s = await startSluice(registryConfig(f, ));
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


t.test('past registry.maxServices a new service is refused at once (Dubbo and HTTP), counted, and the services in use keep serving', async (t) => {
  const a = await rawProvider();
  t.teardown(() => a.close());
  const na = await register(f, a, { version: '1.0.0' });
  t.teardown(() => f.writer.remove(na).catch(() => {}));
  // firstListTimeoutMs far above what the refusal may take: a refused call is not held for it
  const s = await startSluice(registryConfig(f, { maxServices: 1, firstListTimeoutMs: 8000 }));
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  t.equal((await c.call('transfer', [str('first')])).status, 20, 'the first service is subscribed and served');

  const t0 = Date.now();
  const over = await c.call('transfer', [str('x')], {}, 20_000, 'com.example.Other:1.0.0');
  const took = Date.now() - t0;
  t.equal(over.status, 70, `SERVICE_ERROR: ${JSON.stringify(over)}`);
  t.match(over.error, /sluice: registry_full: dubbo service com\.example\.Other not subscribed: registry\.maxServices/);
  t.ok(took < 2000, `answered at once, not after firstListTimeoutMs (${took} ms)`);

  const curl = await run('curl', ['-sS', '-o', '/dev/null', '-D', '-', '--max-time', '10', '-H', 'host: orders', `http://127.0.0.1:${s.port('web')}/x`]);
  t.match(curl.stdout, /^HTTP\/1\.1 503/, curl.stdout + curl.stderr);
  t.match(curl.stdout, /x-sluice-reason: registry_full/i);

  t.equal((await c.call('transfer', [str('again')])).status, 20, 'the subscribed service keeps serving');
  const st = await stats(s.admin);
  t.ok((st.get('sluice_registry_subscriptions_refused_total') ?? 0) >= 2, `refusals counted: ${st.get('sluice_registry_subscriptions_refused_total')}`);
  t.equal(st.get('sluice_registry_subscriptions{registry="zk"}'), 1, 'still one subscription');
  t.same((await clusters(s)).clusters.filter((x) => x.name.includes('/')).map((x) => x.name), [CLUSTER], 'no cluster for the refused names');
});

t.test('a provider that just registered warms up: its weight grows to its own over its warm-up, as Dubbo weighs it', async (t) => {
  const [old, fresh] = await Promise.all([rawProvider(), rawProvider()]);
  t.teardown(() => Promise.all([old.close(), fresh.close()]));
  // Dubbo's warm-up weight: its own weight × the time since it registered ÷ the warm-up (at least 1)
  const WARMUP_MS = 20_000;
  const registeredAt = Date.now() - 1000;
  const nodes = [
    await register(f, old, { version: '1.0.0' }), // timestamp in 2023: warm long ago
    await register(f, fresh, { version: '1.0.0', timestamp: registeredAt, warmup: WARMUP_MS }),
  ];
  t.teardown(() => Promise.all(nodes.map((n) => f.writer.remove(n).catch(() => {}))));
  const s = await startSluice(registryConfig(f));
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  t.equal((await c.call('transfer', [str('first')])).status, 20);
  const endpointOf = async () => (await clusters(s)).clusters.find((x) => x.name === CLUSTER)!.endpoints
    .find((e: { address: string }) => e.address === `127.0.0.1:${fresh.port}`) as { weight: number; registryWeight?: number };
  const weightOf = async () => (await endpointOf()).weight;
  const first = await endpointOf();
  const early = first.weight;
  // as far into the warm-up as this machine took to start Sluice, and no further
  const into = Date.now() - registeredAt;
  const most = Math.min(99, Math.ceil((100 * into) / WARMUP_MS) + 1);
  t.ok(early >= 1 && early <= most, `${into} ms into a ${WARMUP_MS} ms warm-up, weight ${early} of 100 (at most ${most})`);
  t.equal(first.registryWeight, 100, '/clusters shows the provider\'s own weight beside the one in force');
  const before = callsOf(fresh);
  await Promise.all(Array.from({ length: 40 }, (_, i) => c.call('transfer', [str(`w${i}`)])));
  const share = callsOf(fresh) - before;
  t.ok(share < 20, `the warming provider takes less than the warm one: ${share} of 40`);
  const later = await waitFor(async () => { const w = await weightOf(); return w > early ? w : null; }, 5000, 'the weight grows');
  t.ok(later > early, `weight ${early} → ${later}`);
  await waitFor(async () => (await weightOf()) === 100, WARMUP_MS + 5000, 'full weight once the warm-up is over');
  t.equal((await endpointOf()).registryWeight, undefined, 'warm: one weight');
  t.equal((await clusters(s)).clusters.find((x) => x.name === CLUSTER)!.endpoints.find((e: { address: string }) => e.address === `127.0.0.1:${old.port}`).weight, 100);
});

t.test('registry.dubboWarmup: false gives a new provider its full weight at once', async (t) => {
  const fresh = await rawProvider();
  t.teardown(() => fresh.close());
  const node = await register(f, fresh, { version: '1.0.0', timestamp: Date.now(), warmup: 600000 });
  t.teardown(() => f.writer.remove(node).catch(() => {}));
  const s = await startSluice(registryConfig(f, { dubboWarmup: false }));
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('dubbo'));
  t.teardown(() => c.close());
  t.equal((await c.call('transfer', [str('first')])).status, 20);
  t.equal((await clusters(s)).clusters.find((x) => x.name === CLUSTER)!.endpoints[0].weight, 100);
});
