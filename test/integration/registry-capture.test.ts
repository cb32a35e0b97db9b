/**
 * Service discovery on captured traffic: a Dubbo consumer in a pod whose traffic the init
 * container's rules capture calls the provider it picked itself; Sluice (uid 1337, exempt from
 * capture) finds the interface's providers in ZooKeeper and balances every call over those of
 * its group and version.
 *
 *   pod 10.233.0.2 ──veth── remote 10.233.0.3: providers p0 :20880, p1 :20881, p2 :20882 (version 1.0.0),
 *     consumer → 10.233.0.3:20880                 g2 :20883 (group g2)
 *     Sluice (outbound 15001)
 *   pod 10.234.<n>.2 ──veth── this process 10.234.<n>.1: a relay to ZooKeeper on 127.0.0.1
 *
 * Every answer names the provider that gave it.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import t from 'tap';
import YAML from 'yaml';
import { ROOT, run, waitFor } from '../helpers/harness';
import { createNetns, nodeInNetns, parseStats, sluiceStarted, spawnSluiceInNetns, vethPair, type Netns, type NsProcess } from '../helpers/netns';
import { DUBBO_CONSUMER as CONSUMER, DUBBO_PROVIDER as PROVIDER, REMOTING } from '../helpers/dubbo-scripts';
import { CreateMode, dubboProviderNode, startZooKeeper, zookeeperInstalled, ZkWriter } from '../helpers/zookeeper';

if (!zookeeperInstalled()) {
  t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
  process.exit(1);
}

const SCRIPT = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables.sh');
const SERVICE = 'com.example.TransferService';

t.test('captured Dubbo calls are balanced over the providers ZooKeeper lists for their group and version', async (t) => {
  const zk = await startZooKeeper();
  const writer = await ZkWriter.connect(zk.connectString);
  const pod = await createNetns('rp');
  const remote = await createNetns('rr');
  const procs: NsProcess[] = [];
  const cfgDir = mkdtempSync(path.join(os.tmpdir(), 'sluice-regcap-'));
  let relay: net.Server | null = null;
  t.teardown(async () => {
    for (const p of procs) await p.kill();
    relay?.close();
    for (const ns of [pod, remote]) await ns.destroy();
    writer.close();
    await zk.destroy();
    rmSync(cfgDir, { recursive: true, force: true });
  });
  await vethPair(pod, '10.233.0.2', remote, '10.233.0.3');

  // ZooKeeper, reached from the pod through a veth into this namespace and a relay to loopback
  const n = 1 + (process.pid % 250);
  const hostAddr = `10.234.${n}.1`;
  const hostIf = `vz${process.pid % 100000}`.slice(0, 15);
  const podIf = `vy${process.pid % 100000}`.slice(0, 15);
  const mustHost = async (args: string[]) => { const r = await run('ip', args); if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`); };
  await mustHost(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', podIf, 'netns', pod.name]);
  await mustHost(['addr', 'add', `${hostAddr}/24`, 'dev', hostIf]);
  await mustHost(['link', 'set', hostIf, 'up']);
  await pod.must('ip', ['addr', 'add', `10.234.${n}.2/24`, 'dev', podIf]);
  await pod.must('ip', ['link', 'set', podIf, 'up']);
  relay = net.createServer((down) => {
    const up = net.connect(zk.port, '127.0.0.1');
    down.pipe(up).pipe(down);
    const end = () => { down.destroy(); up.destroy(); };
    down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end);
  });
  relay.listen(0, hostAddr);
  await once(relay, 'listening');
  const relayPort = (relay.address() as net.AddressInfo).port;

  const provider = async (port: number, name: string) => {
    const p = nodeInNetns(remote, ['-e', PROVIDER, REMOTING, '10.233.0.3', String(port), name]);
    procs.push(p);
    await waitFor(() => {
      if (p.proc.exitCode !== null) throw new Error(`provider ${name} exited: ${p.output()}`);
      return p.output().includes('listening');
    }, 10_000, `provider ${name}`);
  };
  await Promise.all([provider(20880, 'p0'), provider(20881, 'p1'), provider(20882, 'p2'), provider(20883, 'g2')]);
  await writer.mkdirp(`/dubbo/${SERVICE}/providers`);
  const reg = (port: number, params: Record<string, string>) =>
    writer.create(`/dubbo/${SERVICE}/providers/${dubboProviderNode('10.233.0.3', port, SERVICE, params)}`, undefined, CreateMode.EPHEMERAL);
  await reg(20880, { version: '1.0.0' });
  await reg(20881, { version: '1.0.0' });
  await reg(20882, { version: '1.0.0' });
  await reg(20883, { version: '1.0.0', group: 'g2' });

  const init = await pod.exec(SCRIPT, []);
  t.equal(init.code, 0, init.stderr);
  t.match(init.stdout, /capture works/);

  const cfg = path.join(cfgDir, 'sluice.yaml');
  writeFileSync(cfg, YAML.stringify({
    admin: { address: '127.0.0.1:15000' },
    workers: { threads: 2 },
    listeners: [
      { name: 'outbound', address: '0.0.0.0:15001', direction: 'outbound', capture: true },
      { name: 'inbound', address: '0.0.0.0:15006', direction: 'inbound', capture: true },
    ],
    // the fixed names: this alone makes captured Dubbo calls discovered and balanced
    registries: [{ name: 'zk', type: 'zookeeper', address: `${hostAddr}:${relayPort}` }],
    registry: { maxServices: 2 },
  }));
  chmodSync(cfgDir, 0o755);
  chmodSync(cfg, 0o644);
  const sluice = spawnSluiceInNetns(pod, ['start', '--config', cfg], { uid: 1337, gid: 1337 });
  procs.push(sluice);
  const started = await sluiceStarted(sluice);
  const stats = async () => {
    const r = await pod.exec('curl', ['-sS', '--max-time', '10', `${started.admin}/stats`], 15_000);
    return parseStats(r.stdout);
  };

  const calls = async (signature: string, count: number): Promise<Array<{ status: number; value?: string; error?: string }>> => {
    const p = nodeInNetns(pod, ['-e', CONSUMER, REMOTING, '10.233.0.3', '20880', signature, String(count)]);
    procs.push(p);
    await p.exited;
    const line = p.output().split('\n').find((l) => l.startsWith('['));
    if (!line) throw new Error(`consumer printed no answers: ${p.output()}`);
    return JSON.parse(line);
  };

  // the application picked p0; Sluice balances over p0, p1 and p2 (not g2: another group)
  const answers = await calls(`${SERVICE}:1.0.0`, 30);
  t.equal(answers.length, 30);
  t.same(answers.filter((a) => a.status !== 20), [], 'every call answered');
  const by = (name: string) => answers.filter((a) => a.value?.startsWith(`${name}:`)).length;
  t.ok(by('p0') >= 5 && by('p1') >= 5 && by('p2') >= 5, `spread over every provider of the group and version: p0 ${by('p0')}, p1 ${by('p1')}, p2 ${by('p2')}`);
  t.equal(by('g2'), 0, 'none to the provider of another group');
  const s = await waitFor(async () => {
    const cur = await stats();
    return (cur.get(`sluice_upstream_rq_total{cluster="dubbo/${SERVICE}"}`) ?? 0) >= 30 ? cur : null;
  }, 10_000, 'the discovered cluster\'s counter');
  t.equal(s.get(`sluice_upstream_rq_total{cluster="dubbo/${SERVICE}"}`), 30, 'every call went through the discovered cluster');
  t.equal(s.get('sluice_upstream_rq_total{cluster="original_dst"}') ?? 0, 0, 'none to the original destination');
  t.equal(s.get('sluice_registry_subscriptions{registry="zk"}'), 1);

  // an interface ZooKeeper lists no provider of: where the application sent it, as without a registry
  const unlisted = await calls('com.example.Unlisted:1.0.0', 3);
  t.same(unlisted.map((a) => a.value), ['p0:transfer:c1', 'p0:transfer:c2', 'p0:transfer:c3'], 'to the original destination');

  // a third service, past registry.maxServices (2): not subscribed and not held, where the application sent it
  const over = await calls('com.example.Third:1.0.0', 3);
  t.same(over.map((a) => a.value), ['p0:transfer:c1', 'p0:transfer:c2', 'p0:transfer:c3'], 'to the original destination');
  const after = await stats();
  t.ok((after.get('sluice_registry_subscriptions_refused_total') ?? 0) >= 1, 'the refusal counted');
  t.equal(after.get('sluice_registry_subscriptions{registry="zk"}'), 2, 'still two subscriptions');
  t.equal(after.get('sluice_registry_ready_timeout_total') ?? 0, 0, 'nothing waited for a list');
});
