/**
 * Without ZooKeeper: connection strings, Dubbo provider and override URLs, Dubbo's group and
 * version rule, Spring Cloud instance documents.
 */
import t from 'tap';
import { formatConnectionString, parseConnectionString } from '../../src/registry/connection-string';
import {
  applyOverrides, dubboMatches, javaUrlDecode, javaUrlEncode, parseOverrideNode, parseProviderNode, providerEnabled,
  providerWeight, sortOverrides, type DubboUrl, warmupEnds, warmupWeight,
} from '../../src/registry/dubbo-url';
import { parseSpringInstance } from '../../src/registry/spring-instance';

t.test('connection strings: several servers, default port, chroot, refusals', async (t) => {
  t.same(parseConnectionString('zk1:2181,zk2:2182,10.0.0.3/apps/sluice/'), {
    servers: [{ host: 'zk1', port: 2181 }, { host: 'zk2', port: 2182 }, { host: '10.0.0.3', port: 2181 }],
    chroot: '/apps/sluice',
  });
  t.same(parseConnectionString(' ZK.Example.com:2181 '), { servers: [{ host: 'zk.example.com', port: 2181 }], chroot: '' });
  t.equal(formatConnectionString(parseConnectionString('a:1,b:2/x')), 'a:1,b:2/x');
  t.same(parseConnectionString('a:1/').chroot, '', 'a bare / is no chroot');
  const bad: Array<[string, RegExp]> = [
    ['', /is empty/],
    ['a:1,,b:2', /empty server/],
    ['a:99999', /"99999" is not a port/],
    ['a:0', /not a port/],
    ['a:x', /not a port/],
    ['300.1.1.1:2181', /not a host name or IPv4/],
    ['[::1]:2181', /IPv6 literals are not supported/],
    ['::1', /IPv6/],
    ['a b:2181', /not a host name/],
    ['a:1,a:1', /lists a:1 twice/],
    ['a:1/x//y', /empty, "\." or "\.\." segment/],
    ['a:1/x/../y', /segment/],
  ];
  for (const [s, re] of bad) t.throws(() => parseConnectionString(s), re, JSON.stringify(s));
});

t.test('Java URL encoding, as Dubbo writes node names', async (t) => {
  const url = 'dubbo://10.0.0.1:20880/com.acme.A?methods=a,b&name=two words&x=~(y)!*';
  const enc = javaUrlEncode(url);
  t.equal(enc, 'dubbo%3A%2F%2F10.0.0.1%3A20880%2Fcom.acme.A%3Fmethods%3Da%2Cb%26name%3Dtwo+words%26x%3D%7E%28y%29%21*');
  t.equal(javaUrlDecode(enc), url);
  t.equal(javaUrlDecode('%E4%B8%AD'), '中');
  t.equal(javaUrlDecode('%zz'), undefined);
});

const provider = (s: string) => {
  const r = parseProviderNode(javaUrlEncode(s));
  if (!r.ok) throw new Error(r.detail);
  return r.value;
};

t.test('provider URLs: every part, userinfo, IPv6, bare keys; what is skipped and why', async (t) => {
  const u = provider('dubbo://admin:pw@10.0.0.1:20880/com.acme.A?group=g&version=1.0&weight=5&flag&default.timeout=100&empty=');
  t.same(u, {
    protocol: 'dubbo', host: '10.0.0.1', port: 20880, path: 'com.acme.A',
    params: { group: 'g', version: '1.0', weight: '5', flag: 'flag', 'default.timeout': '100', empty: '' },
  });
  t.equal(providerWeight(u), 5);
  t.equal(providerWeight(provider('dubbo://h:1/a')), 100, 'default 100');
  t.equal(providerWeight(provider('dubbo://h:1/a?weight=0')), 0, '0 is a weight (no traffic while others have more)');
  t.same([provider('dubbo://[fe80::1]:20880/a').host, provider('dubbo://[FE80::1]:20880/a').port], ['fe80::1', 20880]);
  t.equal(provider('DUBBO://Host.Example:1/a').host, 'host.example');
  const proto = provider('dubbo://h:1/a?__proto__=x&constructor=y');
  t.equal(Object.getPrototypeOf(proto.params), Object.prototype, '__proto__ is no parameter');
  t.equal(proto.params.constructor, 'y');

  const skipped: Array<[string, string, RegExp]> = [
    ['not a url', 'malformed', /not a URL/],
    ['dubbo://10.0.0.1/a', 'malformed', /no port/],
    ['dubbo://10.0.0.1:x/a', 'malformed', /not a port/],
    ['dubbo://10.0.0.1:70000/a', 'malformed', /not a port/],
    ['dubbo://0.0.0.0:20880/a', 'malformed', /wildcard/],
    ['dubbo://bad host:1/a', 'malformed', /not a host/],
    ['dubbo://[zz::1]:1/a', 'malformed', /not an IPv6/],
    ['dubbo://h:1/a?weight=-1', 'malformed', /weight/],
    ['dubbo://h:1/a?weight=1.5', 'malformed', /weight/],
    ['tri://h:1/a', 'unsupported', /tri:\/\//],
    ['rest://h:1/a', 'unsupported', /rest/],
  ];
  for (const [s, reason, re] of skipped) {
    const r = parseProviderNode(javaUrlEncode(s));
    t.match(r, { ok: false, reason, detail: re }, s);
  }
  t.match(parseProviderNode('%E4%B8'), { ok: false, reason: 'malformed', detail: /%-encoding/ });
});

t.test('enabled and disabled, as RegistryDirectory.toInvokers reads them', async (t) => {
  t.equal(providerEnabled(provider('dubbo://h:1/a')), true);
  t.equal(providerEnabled(provider('dubbo://h:1/a?enabled=false')), false);
  t.equal(providerEnabled(provider('dubbo://h:1/a?disabled=true')), false);
  t.equal(providerEnabled(provider('dubbo://h:1/a?enabled=false&disabled=false')), true, 'disabled wins over enabled');
});

const override = (s: string): DubboUrl => {
  const r = parseOverrideNode(javaUrlEncode(s));
  if (!r || !r.ok) throw new Error('not an override');
  return r.value;
};

t.test('overrides: host and port, 0.0.0.0, application, group, version, ~conditions, order, enabled=false', async (t) => {
  const p = provider('dubbo://10.0.0.1:20880/a?application=orders&group=g1&version=1.0&weight=100&side=provider');
  const apply = (...os: string[]) => applyOverrides(p, sortOverrides(os.map(override)));
  t.equal(providerEnabled(apply('override://10.0.0.1:20880/a?disabled=true')), false, 'its host and port');
  t.equal(providerEnabled(apply('override://10.0.0.1/a?disabled=true')), false, 'its host, any port');
  t.equal(providerEnabled(apply('override://10.0.0.1:20881/a?disabled=true')), true, 'another port');
  t.equal(providerEnabled(apply('override://10.0.0.2:20880/a?disabled=true')), true, 'another host');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true')), false, '0.0.0.0: every provider');
  t.equal(providerEnabled(apply('override://10.0.0.1:20880/a?disabled=true&enabled=false')), true, 'an override with enabled=false is off');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&application=orders')), false);
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&application=billing')), true, 'another application');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&application=*')), false);
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&group=g2')), true, 'another group');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&group=g2,g1')), false, 'a group list');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&version=2.0')), true, 'another version');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&~side=consumer')), true, 'a ~condition that does not hold');
  t.equal(providerEnabled(apply('override://0.0.0.0/a?disabled=true&~side=provider')), false);
  t.equal(providerWeight(apply('override://10.0.0.1:20880/a?weight=7', 'override://0.0.0.0/a?weight=200')), 7, 'one host wins over every host, whatever the order');
  t.equal(providerWeight(apply('override://0.0.0.0/a?weight=1&priority=2', 'override://0.0.0.0/a?weight=2&priority=1')), 1, 'higher priority applies last');
  const applied = apply('override://0.0.0.0/a?category=configurators&dynamic=false&timeout=5000&group=g1');
  t.equal(applied.params.timeout, '5000', 'other parameters are applied');
  t.equal(applied.params.category, undefined, 'condition keys are not');
  t.equal(applied.params.group, 'g1');
  t.equal(p.params.timeout, undefined, 'the provider itself is untouched');
  t.equal(parseOverrideNode(javaUrlEncode('empty://0.0.0.0/a?category=configurators')), null, 'empty:// is no entry');
  t.match(parseOverrideNode(javaUrlEncode('route://0.0.0.0/a')), { ok: false, reason: 'unsupported' });
});

t.test("Dubbo's group and version rule", async (t) => {
  const cases: Array<[Record<string, string>, Record<string, string | undefined>, boolean]> = [
    [{}, {}, true],
    [{ group: '', version: '' }, { group: undefined, version: undefined }, true],
    [{ group: 'a' }, {}, false],
    [{}, { group: 'a' }, false],
    [{ group: 'a', version: '1' }, { group: 'a', version: '1' }, true],
    [{ group: 'a', version: '1' }, { group: 'a', version: '2' }, false],
    [{ group: 'a', version: '1' }, { group: '*', version: '1' }, true],
    [{ group: 'a', version: '1' }, { group: 'a', version: '*' }, true],
    [{ group: 'b' }, { group: 'a,b' }, true],
    [{ group: 'c' }, { group: 'a,b' }, false],
    [{ group: '' }, { group: '*' }, true],
  ];
  for (const [p, w, want] of cases) t.equal(dubboMatches(p, w), want, `${JSON.stringify(p)} for ${JSON.stringify(w)}`);
});

t.test('Spring Cloud instances', async (t) => {
  const doc = (o: Record<string, unknown>) => Buffer.from(JSON.stringify(o));
  const ok = parseSpringInstance('n1', doc({ name: 'orders', id: 'i1', address: '10.0.0.9', port: 8080, sslPort: null, payload: { metadata: { zone: 'a', n: 3, b: true, o: { x: 1 } } } }));
  t.match(ok, { ok: true, value: { id: 'i1', name: 'orders', host: '10.0.0.9', port: 8080, serving: true, labels: { zone: 'a', n: '3', b: 'true' } } });
  t.notOk(ok.ok && 'o' in ok.value.labels, 'nested metadata is left out');
  t.match(parseSpringInstance('n', doc({ address: 'Host.Local', port: 1 })), { ok: true, value: { id: 'n', host: 'host.local', labels: {} } }, 'no payload, the node name as id');
  t.match(parseSpringInstance('n', doc({ address: 'h', port: null, sslPort: 8443 })), { ok: false, reason: 'unsupported', detail: /only sslPort 8443/ }, 'TLS only: skipped');
  t.match(parseSpringInstance('n', doc({ address: 'h', port: 80, sslPort: 443 })), { ok: true, value: { port: 80 } }, 'the plain port is used');
  t.match(parseSpringInstance('n', doc({ address: 'fe80::1', port: 80 })), { ok: true, value: { host: 'fe80::1' } });
  t.match(parseSpringInstance('n', doc({ address: 'h', port: 80, enabled: false })), { ok: true, value: { serving: false } });
  t.match(parseSpringInstance('n', doc({ address: 'h', port: 80, payload: { metadata: { instance_status: 'OUT_OF_SERVICE' } } })), { ok: true, value: { serving: false } });
  t.match(parseSpringInstance('n', doc({ address: 'h', port: 80, payload: { metadata: { instance_status: 'up' } } })), { ok: true, value: { serving: true } });
  const bad: Array<[Buffer | undefined, RegExp]> = [
    [undefined, /no data/],
    [Buffer.alloc(0), /no data/],
    [Buffer.from('{'), /not JSON/],
    [Buffer.from('[1]'), /not a JSON object/],
    [doc({ port: 80 }), /address/],
    [doc({ address: 'a b', port: 80 }), /address/],
    [doc({ address: 'h' }), /no port/],
    [doc({ address: 'h', port: 70000 }), /port 70000/],
    [doc({ address: 'h', port: '80' }), /port "80"/],
    [doc({ address: 'h', sslPort: 0 }), /sslPort 0/],
  ];
  for (const [d, re] of bad) t.match(parseSpringInstance('n', d), { ok: false, reason: 'malformed', detail: re }, String(d));
});

t.test('warm-up weights, as Dubbo\'s consumers compute them', async (t) => {
  const now = 1_800_000_000_000;
  const at = (ago: number, extra: Record<string, string> = {}) => ({ timestamp: String(now - ago), ...extra });
  t.equal(warmupWeight(100, at(60_000), now), 10, 'one minute into the default ten: a tenth');
  t.equal(warmupWeight(100, at(300_000), now), 50);
  t.equal(warmupWeight(100, at(600_000), now), 100, 'warm-up over');
  t.equal(warmupWeight(100, at(1000), now), 1, 'never below 1');
  t.equal(warmupWeight(100, at(5000, { warmup: '10000' }), now), 50, 'its own warmup parameter');
  t.equal(warmupWeight(300, at(5000, { warmup: '10000' }), now), 150);
  t.equal(warmupWeight(100, at(-5000), now), 1, 'a timestamp in the future: 1');
  t.equal(warmupWeight(0, at(1000), now), 0, 'weight 0 stays 0');
  t.equal(warmupWeight(100, {}, now), 100, 'no timestamp: no warm-up');
  t.equal(warmupWeight(100, { timestamp: 'x' }, now), 100);
  t.equal(warmupWeight(100, at(5000, { warmup: 'soon' }), now), 1, 'a warmup that is no number: the default ten minutes');
  t.equal(warmupEnds(at(1000, { warmup: '10000' }), now), now + 9000);
  t.equal(warmupEnds(at(20_000, { warmup: '10000' }), now), 0);
  t.equal(warmupEnds({}, now), 0);
});
