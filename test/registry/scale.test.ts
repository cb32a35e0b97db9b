/**
 * Scale: 10,000 Dubbo interfaces × 48 providers in ZooKeeper (half a million nodes, written in
 * multi-ops), and a sidecar that calls 20 of them holds 20 subscriptions and 40 watches: a child
 * watch on each providers list and an existence watch on each (absent) configurators path. The
 * memory of a subscriber to 20 against one to all 10,000 is measured by
 * bench/registry/subscriptions.ts, not asserted here.
 */
import t from 'tap';
import { parseWchc, populateDubbo, scaleInterface, startZooKeeper, zookeeperInstalled, ZkWriter, type ZooKeeperServer } from '../helpers/zookeeper';
import { makeRegistries } from './helpers';

if (!zookeeperInstalled()) {
  t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
  process.exit(1);
}

const INTERFACES = 10_000;
const PROVIDERS = 48;
const CALLED = 20;

let zk: ZooKeeperServer;
let writer: ZkWriter;
t.before(async () => {
  zk = await startZooKeeper({ heapMb: 2048 });
  writer = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 60_000 });
});
t.teardown(async () => {
  await zk?.destroy(); // first: ending the writer's session would delete half a million ephemeral nodes one by one
  writer?.close();
});

t.test(`${INTERFACES} interfaces × ${PROVIDERS} providers; a subscriber to ${CALLED} holds ${CALLED} subscriptions and ${2 * CALLED} watches`, async (t) => {
  const start = Date.now();
  const created = await populateDubbo(writer, INTERFACES, PROVIDERS);
  const wrote = Date.now() - start;
  t.equal(created, INTERFACES * (PROVIDERS + 2));
  t.equal((await writer.children('/dubbo')).length, INTERFACES, 'every interface is there');
  t.equal((await writer.children(`/dubbo/${scaleInterface(INTERFACES - 1)}/providers`)).length, PROVIDERS, 'with its providers');
  t.comment(`wrote ${created} nodes in ${wrote} ms (${Math.round(created / (wrote / 1000))} nodes/s)`);

  const r = makeRegistries({ registries: [{ name: 'zk', type: 'zookeeper', address: zk.connectString, sessionTimeoutMs: 30_000 }] });
  t.teardown(() => r.registries.close());
  const called = Array.from({ length: CALLED }, (_, i) => scaleInterface(Math.floor((i * INTERFACES) / CALLED) + 7));
  const t0 = Date.now();
  const subs = called.map((iface) => r.registries.subscribe('dubbo', iface));
  await Promise.all(subs.map((s) => s.ready));
  t.comment(`${CALLED} subscriptions ready in ${Date.now() - t0} ms`);
  for (const s of subs) {
    if (s.endpoints.length !== PROVIDERS || s.stale) t.fail(`${s.service}: ${s.endpoints.length} endpoints, stale ${s.stale}`);
  }
  t.ok(subs.every((s) => s.endpoints.every((e) => e.weight === 100 && e.labels.version === '1.0.0')), 'every provider parsed');

  const status = r.registries.status().registries[0];
  t.equal(status.services, CALLED, `${CALLED} subscriptions`);
  t.equal(r.stat('sluice_registry_subscriptions', { registry: 'zk' }), CALLED);
  t.equal(r.stat('sluice_registry_watches', { registry: 'zk' }), 2 * CALLED, 'our count of watches');
  t.equal(r.stat('sluice_registry_endpoints', { registry: 'zk' }), CALLED * PROVIDERS);
  const mntr = await zk.fourLetter('mntr');
  t.match(mntr, new RegExp(`zk_watch_count\\s+${2 * CALLED}\\b`), `ZooKeeper counts ${2 * CALLED} watches in all`);
  const ours = parseWchc(await zk.fourLetter('wchc')).get(status.sessionId!) ?? [];
  t.same(ours.sort(), called.map((i) => `/dubbo/${i}/configurators`).sort(), 'wchc lists our session on exactly the called services (existence watches; child watches are counted, not listed)');
  t.equal(r.stat('sluice_registry_entries_skipped_total', { registry: 'zk', reason: 'malformed' }), 0);
});
