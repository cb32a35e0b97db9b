/**
 * The registries' config fragment: defaults, and every rule refusing a bad value with its path.
 * Also checks the fragment fits the Sluice schema as it stands (no clash with its sections).
 */
import t from 'tap';
import { configSchema } from '../../src/config/schema';
import { REGISTRY_FAMILIES, registryConfigSchema, registrySeries, validateRegistryConfig } from '../../src/registry';
import { registryConnection, type RegistryConfig } from '../../src/registry/config';
import { FAMILIES } from '../../src/stats/stats';

const issues = (doc: Record<string, unknown>) => validateRegistryConfig(doc).issues.map((i) => `${i.path}: ${i.message}`).sort();

t.test('defaults', async (t) => {
  const { config, issues: found } = validateRegistryConfig({ registries: [{ name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181' }] });
  t.same(found, []);
  t.same(config.registries[0], {
    name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181', sessionTimeoutMs: 30000, kinds: ['dubbo', 'spring'], dubboRoot: '/dubbo', springRoot: '/services',
  });
  const settings = {
    subscribeAtStart: { dubbo: [], spring: [] }, idleUnsubscribeMs: 600000, zeroInstanceHoldMs: 60000, firstListTimeoutMs: 5000, maxServices: 10000,
    balanceCaptured: true, cluster: { lbPolicy: 'round_robin', connectTimeoutMs: 5000, maxConnectionsPerEndpoint: 1024, maxPendingRequests: 1024 },
  };
  t.same(config.registry, settings);
  t.same(validateRegistryConfig({}).config, { registries: [], registry: settings }, 'both sections optional');
  t.same(registryConnection(config.registries[0]), { servers: '127.0.0.1:2181', chroot: '' });
  t.same(registryConnection({ ...config.registries[0], address: 'a,b:2/x' } as RegistryConfig), { servers: 'a:2181,b:2', chroot: '/x' });
  t.same(registryConnection({ ...config.registries[0], chroot: '/y/' } as RegistryConfig), { servers: '127.0.0.1:2181', chroot: '/y' });
});

t.test('every rule, with its path', async (t) => {
  t.same(issues({
    registries: [
      { name: 'zk', type: 'zookeeper', address: 'a:1,,b' },
      { name: 'zk', type: 'etcd', address: '[::1]:2181', extra: 1 },
      { type: 'zookeeper', address: 'a:99999', sessionTimeoutMs: 10 },
      { name: 'c', type: 'zookeeper', address: 'a:1/x', chroot: '/y' },
      { name: 'd', type: 'zookeeper', address: 'a:1', chroot: 'rel', auth: { digest: 'nouser' }, dubboRoot: '/', springRoot: 'x' },
      { name: 'e f', type: 'zookeeper', address: 'a', kinds: [], auth: {} },
      { name: 'g', type: 'zookeeper', address: 'a', kinds: ['dubbo', 'http'], auth: { digest: ':pw' } },
    ],
    registry: { idleUnsubscribeMs: -1, zeroInstanceHoldMs: 'x', firstListTimeoutMs: 0, subscribeAtStart: { dubbo: ['ok.A', 'a/b', 'ok.A'], http: [] }, other: 1 },
  }), [
    '/registries/0/address: "a:1,,b" has an empty server (a stray comma?)',
    '/registries/1/address: "[::1]:2181": IPv6 literals are not supported in a ZooKeeper address; use a host name',
    '/registries/1/extra: is not a known field',
    '/registries/1/name: duplicate registry name "zk"',
    '/registries/1/type: must be one of zookeeper',
    '/registries/2/address: "99999" is not a port (1-65535)',
    '/registries/2/name: is required',
    '/registries/2/sessionTimeoutMs: must be >= 1000',
    '/registries/3/chroot: is also written at the end of the address; give it once',
    '/registries/4/auth/digest: must be user:password',
    '/registries/4/chroot: chroot "rel" must start with /',
    '/registries/4/dubboRoot: must NOT have fewer than 2 characters',
    '/registries/4/springRoot: must NOT have fewer than 2 characters',
    '/registries/5/auth/digest: is required',
    '/registries/5/kinds: must NOT have fewer than 1 items',
    '/registries/5/name: must match pattern "^[a-zA-Z0-9_.-]{1,64}$"',
    '/registries/6/auth/digest: must be user:password',
    '/registries/6/kinds/1: must be one of dubbo, spring',
    '/registry/firstListTimeoutMs: must be >= 1',
    '/registry/idleUnsubscribeMs: must be >= 0',
    '/registry/other: is not a known field',
    '/registry/subscribeAtStart/dubbo/1: cannot contain "/", spaces or control characters',
    '/registry/subscribeAtStart/dubbo/2: lists "ok.A" twice',
    '/registry/subscribeAtStart/http: is not a known field',
    '/registry/zeroInstanceHoldMs: must be integer',
  ]);
  t.same(issues({ registries: [{ name: 'a', type: 'zookeeper', address: 'h', dubboRoot: '/x//y', springRoot: 'svc/x' }] }), [
    '/registries/0/dubboRoot: path "/x//y" has an empty, "." or ".." segment',
    '/registries/0/springRoot: path "svc/x" must start with /',
  ]);
  t.same(issues({ registries: [{ name: 'a', type: 'zookeeper', address: 'h', kinds: ['dubbo'] }], registry: { subscribeAtStart: { spring: ['orders'] } } }), [
    '/registry/subscribeAtStart/spring/0: no registry serves spring services (registries[].kinds)',
  ]);
  t.same(issues({ registry: { subscribeAtStart: { dubbo: ['a.B'] } } }), ['/registry/subscribeAtStart/dubbo/0: no registry serves dubbo services (registries[].kinds)']);
  t.same(issues({ registries: {} }), ['/registries: must be array']);
  t.same(issues({ registries: [{ name: 'a', type: 'zookeeper', address: 'h' }], registry: { maxServices: 1, subscribeAtStart: { dubbo: ['a.B'], spring: ['orders'] } } }), [
    '/registry/maxServices: is 1, but registry.subscribeAtStart lists 2 services',
  ]);
  t.same(issues({ registry: { maxServices: 0 } }), ['/registry/maxServices: must be >= 1']);
  t.same(issues({ registry: { maxServices: 65536 } }), ['/registry/maxServices: must be <= 65535']);
});

t.test('is part of the Sluice schema and stats', async (t) => {
  const props = configSchema.properties as Record<string, unknown>;
  for (const k of Object.keys(registryConfigSchema)) t.equal(props[k], (registryConfigSchema as Record<string, unknown>)[k], `${k} is a top-level section`);
  const names = new Set(FAMILIES.map((f) => f.name));
  for (const f of REGISTRY_FAMILIES) {
    t.ok(names.has(f.name), `${f.name} is declared`);
    t.match(f.name, /^sluice_registry_[a-z_]+$/);
    if (f.kind === 'counter') t.match(f.name, /_total$/, `${f.name}: counters end in _total`);
    else t.notMatch(f.name, /_total$/);
  }
  const keys = registrySeries([{ name: 'east' }, { name: 'west' }]);
  t.equal(new Set(keys).size, keys.length, 'no series twice');
  t.ok(keys.includes('sluice_registry_stale_services{registry="east"}'));
  t.ok(keys.includes('sluice_registry_entries_skipped_total{registry="west",reason="unsupported"}'));
  t.ok(keys.includes('sluice_registry_zero_instance_held'));
});
