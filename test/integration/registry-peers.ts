/** Shared by the registry integration tests: a real ZooKeeper per file, providers registered as Dubbo registers them. */
import t from 'tap';
import { get, type RunningSluice } from '../helpers/harness';
import { CreateMode, dubboProviderNode, startZooKeeper, zookeeperInstalled, ZkWriter, type ZooKeeperServer } from '../helpers/zookeeper';
import { SERVICE, type Provider } from './dubbo-peers';

export interface ZkFixture { zk: ZooKeeperServer; writer: ZkWriter }

/** One ZooKeeper for the test file, with a writer client; both gone at its end. */
export function zookeeperForFile(): ZkFixture {
  if (!zookeeperInstalled()) {
    t.fail('ZooKeeper is not installed: run scripts/install-test-deps.sh');
    process.exit(1);
  }
  const f = {} as ZkFixture;
  t.before(async () => {
    f.zk = await startZooKeeper();
    f.writer = await ZkWriter.connect(f.zk.connectString);
  });
  t.teardown(async () => {
    f.writer?.close();
    await f.zk?.destroy();
  });
  return f;
}

export const CLUSTER = `dubbo/${SERVICE}`;

/** A Dubbo provider registered as Dubbo registers it (an ephemeral node of `w`'s session); returns its node. */
export async function register(f: ZkFixture, p: Provider, params: Record<string, string | number>, w: ZkWriter = f.writer, iface = SERVICE): Promise<string> {
  await f.writer.mkdirp(`/dubbo/${iface}/providers`);
  const node = `/dubbo/${iface}/providers/${dubboProviderNode('127.0.0.1', p.port, iface, params)}`;
  await w.create(node, undefined, CreateMode.EPHEMERAL);
  return node;
}

export const callsOf = (p: Provider) => p.conns.reduce((n, c) => n + c.calls.length, 0);

/** Sluice with an explicit Dubbo listener and an HTTP one, neither naming a cluster, and the file's ZooKeeper. */
export function registryConfig(f: ZkFixture, registry: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: [{ name: 'dubbo', address: '127.0.0.1:0', protocol: 'dubbo' }, { name: 'web', address: '127.0.0.1:0', protocol: 'http' }],
    registries: [{ name: 'zk', type: 'zookeeper', address: f.zk.connectString, sessionTimeoutMs: 10_000 }],
    registry: { firstListTimeoutMs: 3000, ...registry },
    ...extra,
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function clusters(s: RunningSluice): Promise<{ clusters: Array<Record<string, any>>; registries: Array<Record<string, any>> }> {
  return JSON.parse((await get(`${s.admin}/clusters`)).body);
}
