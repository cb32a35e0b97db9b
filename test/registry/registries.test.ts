/**
 * The registries against a real ZooKeeper (one server for the file): Dubbo providers and
 * overrides as Dubbo writes them, Spring Cloud instances as Curator writes them, on-demand
 * subscription, idle unsubscription seen in ZooKeeper's own watch list, zero-instance
 * protection, chroot and digest auth, several servers in the address.
 */
import t from 'tap';
import {
  CreateMode, digestAcl, dubboProviderNode, encodeJava, freePort, parseWchc, parseWchp, springInstance, startZooKeeper, until,
  zookeeperInstalled, ZkWriter, type ZooKeeperServer,
} from '../helpers/zookeeper';
import { addresses, makeRegistries, waitFor, type TestRegistries } from './helpers';

if (!zookeeperInstalled()) {
  t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
  process.exit(1);
}

let zk: ZooKeeperServer;
let writer: ZkWriter;
const open: TestRegistries[] = [];

t.before(async () => {
  zk = await startZooKeeper();
  writer = await ZkWriter.connect(zk.connectString);
});
t.teardown(async () => {
  for (const r of open) await r.registries.close();
  writer?.close();
  await zk?.destroy();
});

function registries(extra: Record<string, unknown> = {}, registry: Record<string, unknown> = {}): TestRegistries {
  const r = makeRegistries({
    registries: [{ name: 'zk', type: 'zookeeper', address: zk.connectString, sessionTimeoutMs: 4000, ...extra }],
    registry: { firstListTimeoutMs: 3000, zeroInstanceHoldMs: 0, ...registry },
  });
  open.push(r);
  return r;
}

const providersOf = (iface: string) => `/dubbo/${iface}/providers`;
async function provider(iface: string, host: string, port: number, params: Record<string, string | number> = {}, w: ZkWriter = writer): Promise<string> {
  await writer.mkdirp(providersOf(iface));
  const node = `${providersOf(iface)}/${dubboProviderNode(host, port, iface, params)}`;
  await w.create(node, undefined, CreateMode.EPHEMERAL);
  return node;
}
async function override(iface: string, url: string): Promise<string> {
  await writer.mkdirp(`/dubbo/${iface}/configurators`);
  const node = `/dubbo/${iface}/configurators/${encodeJava(url)}`;
  await writer.create(node);
  return node;
}

t.test('Dubbo providers: every parameter a label, group and version always, weights, malformed and unknown entries skipped and counted', async (t) => {
  const iface = 'com.acme.OrderService';
  await provider(iface, '10.0.0.1', 20880, { group: 'Group_1', version: '1.0.0', weight: 50, methods: 'get,put', timeout: 3000 });
  await provider(iface, '10.0.0.2', 20880, { group: 'Group_2', version: '1.0.0' });
  await provider(iface, '10.0.0.3', 20881, { version: '2.0.0', enabled: 'false' });
  await provider(iface, '10.0.0.4', 20880, {});
  await writer.create(`${providersOf(iface)}/not-a-url`, undefined, CreateMode.EPHEMERAL);
  await writer.create(`${providersOf(iface)}/dubbo%3A%2F%2F10.0.0.9%3Axx%2Fcom.acme.OrderService`, undefined, CreateMode.EPHEMERAL);
  await writer.create(`${providersOf(iface)}/bad%zzescape`, undefined, CreateMode.EPHEMERAL);
  await writer.create(`${providersOf(iface)}/${encodeJava(`tri://10.0.0.5:50051/${iface}?interface=${iface}`)}`, undefined, CreateMode.EPHEMERAL);
  await writer.create(`${providersOf(iface)}/${encodeJava(`dubbo://10.0.0.6:20880/${iface}?weight=heavy`)}`, undefined, CreateMode.EPHEMERAL);

  const r = registries();
  const sub = r.registries.subscribe('dubbo', iface);
  t.equal(r.registries.subscribe('dubbo', iface), sub, 'one subscription per service');
  await sub.ready;
  t.same(addresses(sub), ['10.0.0.1:20880', '10.0.0.2:20880', '10.0.0.4:20880'], 'enabled=false is out; malformed and tri:// skipped');
  const e1 = sub.endpoints.find((e) => e.address === '10.0.0.1:20880')!;
  t.equal(e1.weight, 50);
  t.equal(e1.source, 'zookeeper:zk');
  t.match(e1.labels, { group: 'Group_1', version: '1.0.0', methods: 'get,put', timeout: '3000', application: 'demo-provider', interface: iface, side: 'provider' });
  const e4 = sub.endpoints.find((e) => e.address === '10.0.0.4:20880')!;
  t.equal(e4.weight, 100, "Dubbo's default weight");
  t.equal(e4.labels.group, '', 'no group: an empty group label, so a route can select it');
  t.equal(e4.labels.version, '');
  t.ok(Object.isFrozen(sub.endpoints) && Object.isFrozen(e1) && Object.isFrozen(e1.labels), 'frozen');
  t.equal(sub.stale, false);

  t.same(sub.dubboProviders('Group_2', '1.0.0').map((e) => e.address), ['10.0.0.2:20880'], 'a call goes only to its own group and version');
  t.same(sub.dubboProviders(undefined, undefined).map((e) => e.address), ['10.0.0.4:20880'], 'no group, no version: only such providers');
  t.same(sub.dubboProviders('*', '1.0.0').map((e) => e.address).sort(), ['10.0.0.1:20880', '10.0.0.2:20880'], 'group * takes any group');
  t.same(sub.dubboProviders('Group_1,Group_2', '*').map((e) => e.address).sort(), ['10.0.0.1:20880', '10.0.0.2:20880'], 'a group list takes either');

  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'malformed' }), 4, 'not a URL, bad port, bad %-escape, bad weight');
  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'unsupported' }), 1, 'tri://');
  t.ok(r.log.lines.some((l) => l.msg === 'registry entry skipped' && l.fields.registry === 'zk'), 'skipped entries are logged');
  t.equal(r.stat('sluice_registry_subscriptions', { registry: 'zk' }), 1);
  t.equal(r.stat('sluice_registry_subscribe_total', { registry: 'zk' }), 1);
  t.equal(r.stat('sluice_registry_connected', { registry: 'zk' }), 1);
  t.equal(r.stat('sluice_registry_endpoints', { registry: 'zk' }), 3);
  t.equal(r.stat('sluice_registry_stale_services', { registry: 'zk' }), 0);
  t.match(r.render(), /sluice_registry_entries_skipped_total\{registry="zk",reason="malformed"\} 4/);

  // a new malformed entry is counted; re-reading the old ones counts nothing again
  await provider(iface, '10.0.0.7', 20880, {});
  await waitFor(sub, 'the new provider', (s) => addresses(s).includes('10.0.0.7:20880'));
  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'malformed' }), 4, 'each skipped entry counted once');
  t.ok(r.stat('sluice_registry_watch_events_total', { registry: 'zk' }) >= 1);
});

t.test('overrides in configurators: disabled=true for one provider, 0.0.0.0 for all, enabled=false ignored, removal restores', async (t) => {
  const iface = 'com.acme.PayService';
  await provider(iface, '10.1.0.1', 20880, {});
  await provider(iface, '10.1.0.2', 20880, {});
  await provider(iface, '10.1.0.3', 20880, {});
  const r = registries();
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;
  t.same(addresses(sub), ['10.1.0.1:20880', '10.1.0.2:20880', '10.1.0.3:20880']);

  const off = await override(iface, `override://10.1.0.2:20880/${iface}?category=configurators&disabled=true&dynamic=false&enabled=true`);
  await waitFor(sub, 'provider 2 disabled', (s) => !addresses(s).includes('10.1.0.2:20880'));
  t.same(addresses(sub), ['10.1.0.1:20880', '10.1.0.3:20880']);

  await override(iface, `override://0.0.0.0/${iface}?category=configurators&dynamic=false&weight=200`);
  await waitFor(sub, 'weight 200 everywhere', (s) => s.endpoints.every((e) => e.weight === 200));
  await override(iface, `override://10.1.0.3:20880/${iface}?category=configurators&dynamic=false&weight=7`);
  await waitFor(sub, 'the host override wins over 0.0.0.0', (s) => s.endpoints.find((e) => e.address === '10.1.0.3:20880')?.weight === 7);
  t.equal(sub.endpoints.find((e) => e.address === '10.1.0.1:20880')!.weight, 200);

  const inactive = await override(iface, `override://10.1.0.1:20880/${iface}?category=configurators&disabled=true&enabled=false`);
  await override(iface, `override://10.1.0.1:20880/${iface}?category=configurators&disabled=true&application=someone-else`);
  await override(iface, `override://0.0.0.0/${iface}?category=configurators&disabled=true&group=other-group`);
  await writer.create(`/dubbo/${iface}/configurators/garbage%`);
  await until('the overrides were read', () => r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'malformed' }) === 1);
  t.ok(addresses(sub).includes('10.1.0.1:20880'), 'an override with enabled=false, or for another application or group, changes nothing');

  await writer.remove(off);
  await writer.remove(inactive);
  await waitFor(sub, 'provider 2 back', (s) => addresses(s).includes('10.1.0.2:20880'));
});

t.test('Spring Cloud instances: metadata as labels, OUT_OF_SERVICE and enabled:false out, data changes seen, sslPort', async (t) => {
  await writer.mkdirp('/services/orders');
  await writer.create('/services/orders/id-1', springInstance('orders', 'id-1', '10.2.0.1', 8080, { zone: 'a', instance_status: 'UP' }), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-2', springInstance('orders', 'id-2', '10.2.0.2', 8080, { zone: 'b' }), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-3', springInstance('orders', 'id-3', '10.2.0.3', 8080, { instance_status: 'OUT_OF_SERVICE' }), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-4', springInstance('orders', 'id-4', '10.2.0.4', 8080, {}, { enabled: false }), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-5', springInstance('orders', 'id-5', '10.2.0.5', null, {}, { sslPort: 8443 }), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-6', Buffer.from('{not json'), CreateMode.EPHEMERAL);
  await writer.create('/services/orders/id-7', springInstance('orders', 'id-7', '', 8080), CreateMode.EPHEMERAL);

  const r = registries();
  const sub = r.registries.subscribe('spring', 'orders');
  await sub.ready;
  t.same(addresses(sub), ['10.2.0.1:8080', '10.2.0.2:8080'], 'TLS-only id-5 skipped: plaintext requests cannot go there');
  t.same(sub.endpoints.find((e) => e.address === '10.2.0.1:8080')!.labels, { zone: 'a', instance_status: 'UP' });
  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'unsupported' }), 1, 'the TLS-only instance');
  t.equal(sub.endpoints[0].weight, 1);
  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'malformed' }), 2, 'bad JSON, no address');

  await writer.setData('/services/orders/id-2', springInstance('orders', 'id-2', '10.2.0.2', 8080, { zone: 'b', instance_status: 'OUT_OF_SERVICE' }));
  await waitFor(sub, 'id-2 out of service', (s) => !addresses(s).includes('10.2.0.2:8080'));
  await writer.setData('/services/orders/id-3', springInstance('orders', 'id-3', '10.2.0.3', 8080, { instance_status: 'UP', zone: 'c' }));
  await waitFor(sub, 'id-3 back in service', (s) => s.endpoints.some((e) => e.address === '10.2.0.3:8080' && e.labels.zone === 'c'));
});

t.test('a provider that leaves disappears within a second: node deleted, or its session ended', async (t) => {
  const iface = 'com.acme.LeaveService';
  const other = await ZkWriter.connect(zk.connectString);
  const n1 = await provider(iface, '10.3.0.1', 20880);
  await provider(iface, '10.3.0.2', 20880, {}, other);
  await provider(iface, '10.3.0.3', 20880);
  const r = registries();
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;
  t.equal(sub.endpoints.length, 3);

  await writer.remove(n1);
  const deleted = await waitFor(sub, 'deleted provider gone', (s) => !addresses(s).includes('10.3.0.1:20880'), 1000);
  other.close(); // its session ends, and with it its ephemeral node
  const ended = await waitFor(sub, "provider of an ended session gone", (s) => !addresses(s).includes('10.3.0.2:20880'), 1000);
  t.same(addresses(sub), ['10.3.0.3:20880']);
  t.comment(`gone after ${deleted} ms (deleted), ${ended} ms (session closed)`);
});

t.test('a service not registered yet: ready with no endpoints, then its providers as they come', async (t) => {
  const r = registries();
  const sub = r.registries.subscribe('dubbo', 'com.acme.Later');
  await sub.ready;
  t.same(sub.endpoints, []);
  t.equal(sub.stale, false);
  await provider('com.acme.Later', '10.4.0.1', 20880);
  await waitFor(sub, 'the first provider', (s) => s.endpoints.length === 1);
  const spring = r.registries.subscribe('spring', 'later-svc');
  await spring.ready;
  await writer.mkdirp('/services/later-svc');
  await writer.create('/services/later-svc/x', springInstance('later-svc', 'x', '10.4.0.2', 80), CreateMode.EPHEMERAL);
  await waitFor(spring, 'the first instance', (s) => s.endpoints.length === 1);
});

t.test('zero-instance protection: an empty list is held back for the hold time, a provider back in time cancels it', async (t) => {
  const iface = 'com.acme.ZeroService';
  const a = await provider(iface, '10.5.0.1', 20880);
  const b = await provider(iface, '10.5.0.2', 20880);
  const r = registries({}, { zeroInstanceHoldMs: 1500 });
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;

  await writer.remove(a);
  await waitFor(sub, 'one removed (not every one: applied at once)', (s) => s.endpoints.length === 1);
  t.equal(sub.held, false);
  await writer.remove(b);
  await waitFor(sub, 'held', (s) => s.held, 2000, 'held');
  const heldAt = Date.now();
  t.same(addresses(sub), ['10.5.0.2:20880'], 'the last list keeps serving');
  t.equal(r.stat('sluice_registry_zero_instance_held'), 1);
  t.equal(r.stat('sluice_registry_zero_instance_protected_total'), 1);
  await waitFor(sub, 'the empty list applied after the hold', (s) => s.endpoints.length === 0, 4000);
  const waited = Date.now() - heldAt;
  t.ok(waited >= 1300, `held for ${waited} ms (hold 1500 ms)`);
  t.equal(sub.held, false);
  t.equal(r.stat('sluice_registry_zero_instance_held'), 0);

  // back within the hold: the empty list never shows
  await provider(iface, '10.5.0.3', 20880);
  await waitFor(sub, 'provider 3', (s) => s.endpoints.length === 1);
  const c = `${providersOf(iface)}/${dubboProviderNode('10.5.0.3', 20880, iface, {})}`;
  let sawEmpty = false;
  sub.on('change', (s) => { if (s.endpoints.length === 0) sawEmpty = true; });
  await writer.remove(c);
  await waitFor(sub, 'held again', (s) => s.held, 2000, 'held');
  await provider(iface, '10.5.0.4', 20880);
  await waitFor(sub, 'provider 4 replaces the held list', (s) => addresses(s).join() === '10.5.0.4:20880' && !s.held);
  t.equal(sawEmpty, false, 'never empty');
  t.equal(r.stat('sluice_registry_zero_instance_protected_total'), 2);
});

t.test('on demand: a service is watched from its first call; idle, it is unsubscribed and its watches leave ZooKeeper', async (t) => {
  // ZooKeeper's wchc/wchp list data and existence watches only (DataTree.dumpWatches); child
  // watches show in mntr's zk_watch_count. A service without configurators has an existence
  // watch on that path, which wchp lists by session; the totals come from zk_watch_count.
  for (const r of open.splice(0)) await r.registries.close();
  const used = 'com.acme.Busy';
  const idle = 'com.acme.Idle';
  await provider(used, '10.6.0.1', 20880);
  await provider(idle, '10.6.0.2', 20880);
  const watchersOf = async (p: string) => parseWchp(await zk.fourLetter('wchp')).get(p) ?? [];
  const watchCount = async () => Number(/zk_watch_count\s+(\d+)/.exec(await zk.fourLetter('mntr'))![1]);
  await until('no watches from earlier tests', async () => (await watchCount()) === 0, 5000);
  const r = registries({}, { idleUnsubscribeMs: 600 });
  t.same(await watchersOf(`/dubbo/${idle}/configurators`), [], 'nothing watched before the first call');

  const busy = r.registries.subscribe('dubbo', used);
  const quiet = r.registries.subscribe('dubbo', idle);
  await Promise.all([busy.ready, quiet.ready]);
  const session = r.registries.status().registries[0].sessionId!;
  t.same(await watchersOf(`/dubbo/${used}/configurators`), [session], 'a called service is watched, in wchp by our session');
  t.same(await watchersOf(`/dubbo/${idle}/configurators`), [session]);
  t.ok(parseWchc(await zk.fourLetter('wchc')).get(session)?.includes(`/dubbo/${idle}/configurators`), 'and in wchc');
  t.equal(await watchCount(), 4, 'two services: a child watch on providers and an existence watch on configurators each');
  t.equal(r.stat('sluice_registry_watches', { registry: 'zk' }), 4, 'the watches gauge agrees');

  const keepBusy = setInterval(() => busy.touch(), 50);
  try {
    let closed = false;
    quiet.on('closed', () => { closed = true; });
    await until('the idle service unsubscribed', () => closed, 5000);
    t.equal(r.registries.get('dubbo', idle), undefined);
    t.equal(r.registries.get('dubbo', used), busy, 'the touched one stays');
    await until('the idle service gone from the watch list', async () => (await watchersOf(`/dubbo/${idle}/configurators`)).length === 0, 5000);
    await until('two watches left in ZooKeeper', async () => (await watchCount()) === 2, 5000);
    const now = r.registries.status().registries[0];
    t.not(now.sessionId, session, 'a new session, which holds only what is still subscribed');
    t.same(await watchersOf(`/dubbo/${used}/configurators`), [now.sessionId]);
    t.equal(r.stat('sluice_registry_unsubscribe_total', { registry: 'zk' }), 1);
    t.equal(r.stat('sluice_registry_subscriptions', { registry: 'zk' }), 1);
    t.equal(r.stat('sluice_registry_watches', { registry: 'zk' }), 2);
    t.equal(busy.stale, false, 'never stale across the session change');
    await provider(used, '10.6.0.3', 20880);
    await waitFor(busy, 'a change after the session was replaced', (s) => s.endpoints.length === 2);
  } finally {
    clearInterval(keepBusy);
  }
  // nothing subscribed: no session at all
  r.registries.unsubscribe('dubbo', used);
  await until('no watches left', async () => (await watchCount()) === 0, 5000);
  t.equal(r.registries.status().registries[0].connected, false);
  t.equal(r.stat('sluice_registry_connected', { registry: 'zk' }), 0);

  // on demand again: a new subscription in a new session
  const again = r.registries.subscribe('dubbo', idle);
  await again.ready;
  t.same(addresses(again), ['10.6.0.2:20880']);
});

t.test('subscribeAtStart: subscribed by the constructor, never idle', async (t) => {
  await provider('com.acme.Pinned', '10.7.0.1', 20880);
  const r = registries({}, { idleUnsubscribeMs: 200, subscribeAtStart: { dubbo: ['com.acme.Pinned'] } });
  const sub = r.registries.get('dubbo', 'com.acme.Pinned')!;
  t.ok(sub && sub.pinned);
  await sub.ready;
  await new Promise((res) => setTimeout(res, 700)); // several sweeps
  t.equal(r.registries.get('dubbo', 'com.acme.Pinned'), sub);
  t.same(addresses(sub), ['10.7.0.1:20880']);
});

t.test('chroot and digest auth: a registry with the credentials reads, one without counts errors and times out', async (t) => {
  const acl = digestAcl('sluice', 's3cret');
  await writer.mkdirp('/apps/team-a/dubbo/com.acme.Secret/providers');
  const authWriter = await ZkWriter.connect(`${zk.connectString}/apps/team-a`, { digest: 'sluice:s3cret' });
  t.teardown(() => authWriter.close());
  await authWriter.create(`/dubbo/com.acme.Secret/providers/${dubboProviderNode('10.8.0.1', 20880, 'com.acme.Secret', {})}`, undefined, CreateMode.EPHEMERAL);
  // the list itself is readable only with the digest
  const secretDir = '/dubbo/com.acme.Secret/configurators';
  await authWriter.create(secretDir, undefined, CreateMode.PERSISTENT, acl);

  const ok = registries({ address: `${zk.connectString}/apps/team-a`, auth: { digest: 'sluice:s3cret' } });
  const sub = ok.registries.subscribe('dubbo', 'com.acme.Secret');
  await sub.ready;
  t.same(addresses(sub), ['10.8.0.1:20880']);

  const viaField = registries({ chroot: '/apps/team-a', auth: { digest: 'sluice:s3cret' } });
  t.same(addresses(await viaField.registries.subscribe('dubbo', 'com.acme.Secret').ready), ['10.8.0.1:20880'], 'chroot as its own field');

  const denied = registries({ address: `${zk.connectString}/apps/team-a` }, { firstListTimeoutMs: 1000 });
  const dsub = denied.registries.subscribe('dubbo', 'com.acme.Secret');
  await t.rejects(dsub.ready, { code: 'ERR_REGISTRY_TIMEOUT' });
  t.ok(denied.stat('sluice_registry_errors_total', { registry: 'zk' }) >= 1, 'NoAuth is a registry error');
  t.equal(denied.stat('sluice_registry_ready_timeout_total'), 1);
  t.ok(denied.log.lines.some((l) => l.msg.startsWith('registry read failed') && l.fields.code === -102), 'logged with its ZooKeeper code');
  t.equal(dsub.stale, true);
});

t.test('several servers in the address: a dead one is skipped', async (t) => {
  const dead = await freePort();
  await provider('com.acme.Multi', '10.9.0.1', 20880);
  const r = registries({ address: `127.0.0.1:${dead},${zk.connectString},127.0.0.1:${await freePort()}` });
  const sub = r.registries.subscribe('dubbo', 'com.acme.Multi');
  await sub.ready;
  t.same(addresses(sub), ['10.9.0.1:20880']);
});

t.test('an unreachable ensemble: ready fails clearly after firstListTimeoutMs, the subscription stays stale and waits', async (t) => {
  const r = registries({ address: `127.0.0.1:${await freePort()}` }, { firstListTimeoutMs: 500 });
  const sub = r.registries.subscribe('dubbo', 'com.acme.Nowhere');
  const start = Date.now();
  await t.rejects(sub.ready, { code: 'ERR_REGISTRY_TIMEOUT', message: /no registry \(zk\) answered within 500 ms/ });
  t.ok(Date.now() - start >= 450);
  t.equal(sub.stale, true);
  t.equal(r.stat('sluice_registry_connected', { registry: 'zk' }), 0);
  t.equal(r.stat('sluice_registry_stale_services', { registry: 'zk' }), 1);
});

t.test('subscribe refuses what cannot be a service, and kinds no registry serves', async (t) => {
  const r = registries({ kinds: ['dubbo'] });
  t.throws(() => r.registries.subscribe('dubbo', 'a/b'), { code: 'ERR_REGISTRY_BAD_SERVICE' });
  t.throws(() => r.registries.subscribe('dubbo', ''), { code: 'ERR_REGISTRY_BAD_SERVICE' });
  t.throws(() => r.registries.subscribe('spring', 'orders'), { code: 'ERR_REGISTRY_NO_REGISTRY' });
});

t.test('past registry.maxServices a new service is refused and counted; one that is subscribed stays; a dropped one makes room', async (t) => {
  const r = registries({}, { maxServices: 2 });
  const subs = [r.registries.subscribe('dubbo', 'com.acme.A'), r.registries.subscribe('spring', 'orders')];
  await Promise.all(subs.map((x) => x.ready));
  t.throws(() => r.registries.subscribe('dubbo', 'com.acme.C'), { code: 'ERR_REGISTRY_FULL', message: /registry\.maxServices \(2\)/ });
  t.throws(() => r.registries.subscribe('spring', 'payments'), { code: 'ERR_REGISTRY_FULL' });
  t.equal(r.stat('sluice_registry_subscriptions_refused_total'), 2);
  t.ok(r.registries.subscribe('dubbo', 'com.acme.A'), 'a subscribed service is found, not refused');
  t.equal(r.registries.subscriptions().length, 2);
  r.registries.unsubscribe('spring', 'orders');
  const c = r.registries.subscribe('dubbo', 'com.acme.C');
  t.ok(c, 'room again once one is gone');
  await c.ready;
  t.equal(r.stat('sluice_registry_subscriptions_refused_total'), 2);
  await r.registries.close();
  t.throws(() => r.registries.subscribe('dubbo', 'x'), { code: 'ERR_REGISTRY_CLOSED' });
});
