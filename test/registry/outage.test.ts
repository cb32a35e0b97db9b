/**
 * Never worse than no registry: ZooKeeper stopped and restarted, the connection cut for less and
 * for more than the session timeout, a server that stops answering. The last list keeps serving
 * (stale), then the watches are re-armed and the lists re-read.
 */
import t from 'tap';
import { CreateMode, dubboProviderNode, startZooKeeper, until, zookeeperInstalled, ZkWriter, type ZooKeeperServer } from '../helpers/zookeeper';
import { addresses, makeRegistries, TcpProxy, waitFor, type TestRegistries } from './helpers';

if (!zookeeperInstalled()) {
  t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
  process.exit(1);
}

let zk: ZooKeeperServer;
let writer: ZkWriter;
const cleanup: Array<() => Promise<void> | void> = [];

t.before(async () => {
  zk = await startZooKeeper();
  // a long session: the providers' ephemeral nodes outlive a server restart
  writer = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 60_000 });
});
t.teardown(async () => {
  for (const c of cleanup.reverse()) await c();
  writer?.close();
  await zk?.destroy();
});

function registries(address: string, sessionTimeoutMs: number): TestRegistries {
  const r = makeRegistries({
    registries: [{ name: 'zk', type: 'zookeeper', address, sessionTimeoutMs }],
    registry: { firstListTimeoutMs: 5000, zeroInstanceHoldMs: 0 },
  });
  cleanup.push(() => r.registries.close());
  return r;
}

async function provider(iface: string, host: string, w: ZkWriter = writer): Promise<string> {
  await w.mkdirp(`/dubbo/${iface}/providers`);
  const node = `/dubbo/${iface}/providers/${dubboProviderNode(host, 20880, iface, {})}`;
  await w.create(node, undefined, CreateMode.EPHEMERAL);
  return node;
}

const stale = (r: TestRegistries) => r.stat('sluice_registry_stale_services', { registry: 'zk' });

t.test('ZooKeeper stopped: the last list keeps serving, stale; restarted: fresh, and the watches work again', async (t) => {
  const iface = 'com.acme.Restart';
  await provider(iface, '10.0.0.1');
  await provider(iface, '10.0.0.2');
  const r = registries(zk.connectString, 4000);
  const sub = r.registries.subscribe('dubbo', iface);
  const spring = r.registries.subscribe('spring', 'restart-svc');
  await Promise.all([sub.ready, spring.ready]);
  t.equal(stale(r), 0);

  await zk.stop();
  await waitFor(sub, 'stale', (s) => s.stale, 5000, 'stale');
  t.same(addresses(sub), ['10.0.0.1:20880', '10.0.0.2:20880'], 'the last known providers keep serving');
  t.equal(stale(r), 2, 'sluice_registry_stale_services counts both services');
  t.equal(r.stat('sluice_registry_connected', { registry: 'zk' }), 0);
  t.ok(r.stat('sluice_registry_errors_total', { registry: 'zk' }) >= 1);
  t.match(r.render(), /sluice_registry_stale_services\{registry="zk"\} 2/);
  t.ok(r.log.lines.some((l) => l.level === 'warn' && /connection lost/.test(l.msg)), 'logged');

  const readsBefore = r.stat('sluice_registry_reads_total', { registry: 'zk' });
  await zk.start();
  await waitFor(sub, 'fresh again', (s) => !s.stale, 15_000, 'stale');
  await waitFor(spring, 'spring fresh again', (s) => !s.stale, 5000, 'stale');
  t.equal(stale(r), 0);
  t.equal(r.stat('sluice_registry_connected', { registry: 'zk' }), 1);
  t.ok(r.stat('sluice_registry_reads_total', { registry: 'zk' }) >= readsBefore + 3, 'every path read again (providers, configurators, the spring service)');
  t.same(addresses(sub), ['10.0.0.1:20880', '10.0.0.2:20880']);

  // a writer of its own: the test's writer uses the same client library, which may wait on a
  // connection it opened while the server was starting (the registry starts over; this test does not)
  const fresh = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 60_000 });
  await provider(iface, '10.0.0.3', fresh);
  await waitFor(sub, 'a change after the restart: the watch was re-armed', (s) => s.endpoints.length === 3);
  writer.close();
  writer = fresh;
});

t.test('connection cut for less than the session timeout: same session; what changed meanwhile is read on return', async (t) => {
  const iface = 'com.acme.Cut';
  const a = await provider(iface, '10.1.0.1');
  await provider(iface, '10.1.0.2');
  const proxy = await new TcpProxy(zk.port).listen();
  cleanup.push(() => proxy.close());
  const r = registries(`127.0.0.1:${proxy.port}`, 8000);
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;
  const session = r.registries.status().registries[0].sessionId;

  proxy.cut();
  await waitFor(sub, 'stale', (s) => s.stale, 5000, 'stale');
  await writer.remove(a);
  await provider(iface, '10.1.0.3');
  await new Promise((res) => setTimeout(res, 300));
  t.same(addresses(sub), ['10.1.0.1:20880', '10.1.0.2:20880'], 'unreachable: the last list, stale');
  proxy.restore();
  await waitFor(sub, 'the changes made while cut off', (s) => !s.stale && addresses(s).join() === '10.1.0.2:20880,10.1.0.3:20880', 10_000);
  t.equal(r.registries.status().registries[0].sessionId, session, 'the session survived');
  t.equal(r.stat('sluice_registry_sessions_expired_total', { registry: 'zk' }), 0);
});

t.test('connection cut for longer than the session timeout: expired; a new session re-reads every list', async (t) => {
  const iface = 'com.acme.Expire';
  const a = await provider(iface, '10.2.0.1');
  await provider(iface, '10.2.0.2');
  const proxy = await new TcpProxy(zk.port).listen();
  cleanup.push(() => proxy.close());
  const r = registries(`127.0.0.1:${proxy.port}`, 2000);
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;
  const session = r.registries.status().registries[0].sessionId!;

  proxy.cut();
  await waitFor(sub, 'stale', (s) => s.stale, 5000, 'stale');
  await until('ZooKeeper expired the session', async () => !(await zk.fourLetter('dump')).includes(session), 10_000, 100);
  await writer.remove(a);
  await provider(iface, '10.2.0.3');
  t.same(addresses(sub), ['10.2.0.1:20880', '10.2.0.2:20880'], 'the last list keeps serving');
  proxy.restore();
  await waitFor(sub, 'the list of the new session', (s) => !s.stale && addresses(s).join() === '10.2.0.2:20880,10.2.0.3:20880', 10_000);
  t.not(r.registries.status().registries[0].sessionId, session, 'a new session');
  t.equal(r.stat('sluice_registry_sessions_expired_total', { registry: 'zk' }), 1);
  await provider(iface, '10.2.0.4');
  await waitFor(sub, 'watched in the new session', (s) => s.endpoints.length === 3);
});

t.test('a server that stops answering but keeps the connection: stale within the session timeout, fresh when it answers again', async (t) => {
  const iface = 'com.acme.Silent';
  await provider(iface, '10.3.0.1');
  const proxy = await new TcpProxy(zk.port).listen();
  cleanup.push(() => proxy.close());
  const r = registries(`127.0.0.1:${proxy.port}`, 1500);
  const sub = r.registries.subscribe('dubbo', iface);
  await sub.ready;

  proxy.blackhole();
  const after = await waitFor(sub, 'stale', (s) => s.stale, 5000, 'stale');
  t.ok(after <= 2500, `noticed after ${after} ms (session timeout 1500 ms)`);
  t.ok(r.log.lines.some((l) => l.fields.why === 'no answer to a probe'), 'the probe said so');
  t.same(addresses(sub), ['10.3.0.1:20880']);
  proxy.restore();
  await waitFor(sub, 'fresh again', (s) => !s.stale, 15_000, 'stale');
  await provider(iface, '10.3.0.2');
  await waitFor(sub, 'watched again', (s) => s.endpoints.length === 2);
});
