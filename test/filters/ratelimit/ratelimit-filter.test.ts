/**
 * The ratelimit filter on request views, with a fake clock: what it admits and refuses, the reply
 * and counters, shadow mode, per-key buckets and their eviction, refunds between rules, and the
 * slots a reload keeps. Two filters over the same shared memory stand for two workers.
 */
import t from 'tap';
import { buildConfig, type SluiceConfig } from '../../../src/config/config';
import type { RequestView } from '../../../src/exchange/request-view';
import { compileLimits, type RateLimitRule } from '../../../src/filters/ratelimit';
import { RateLimitFilter, RL_ADMITTED, RL_REFUSED, RL_SHADOW_REFUSED } from '../../../src/filters/ratelimit/ratelimit-filter';
import { BUCKETS, KEY_SLOTS, KEY_TAGS, KEY_WORDS, RateLimitSlots } from '../../../src/filters/ratelimit/slots';
import { keyHash } from '../../../src/filters/ratelimit/key-table';
import { SharedState } from '../../../src/shared/shared-state';
import { attachOverrides, FACTOR_UNIT } from '../../../src/alarms/overrides';
import { FakeContext, envFor, view } from '../fake-context';

const S = 1e9;

function configOf(rules: unknown[]): SluiceConfig {
  return buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    rateLimits: rules,
  });
}

/** A sidecar's worth of rate limiting: main-thread slots, and `workers` filters over the same memory. */
function setup(rules: unknown[], workers = 1, tightened: string[] = []) {
  const config = configOf(rules);
  const env = envFor(config);
  const memory = env.memory!;
  const words = Object.fromEntries(tightened.map((name, i) => [`rateLimit\t${name}`, i]));
  const overrides = attachOverrides(memory, { words });
  const views = { buckets: memory.region(BUCKETS), tags: memory.region(KEY_TAGS), keyWords: memory.region(KEY_WORDS), overrides: overrides.view };
  const clock = { now: 1000 * S };
  const lines: Array<Record<string, unknown>> = [];
  const slots = env.data!.ratelimit as never;
  const filters = Array.from({ length: workers }, () => new RateLimitFilter(
    compileLimits(config.rateLimits, slots, overrides), views, env.stats, (f) => lines.push(f), () => clock.now,
  ));
  const run = (v: RequestView = view(), w = 0) => {
    const ctx = new FakeContext(v);
    const status = filters[w].onRequest(ctx);
    return { status, reply: ctx.replies[0], notes: ctx.notes };
  };
  const count = (name: string, rule: string) => env.value(name, { rule });
  return { run, clock, lines, count, filters, env, overrides };
}

t.test('a burst is admitted, then one request per interval; a refusal says when to come back', async (t) => {
  const { run, clock, count } = setup([{ name: 'r', requestsPerSecond: 2, burst: 3 }]);
  for (let i = 0; i < 3; i++) t.equal(run().status, 0, `burst ${i} admitted`);
  const refused = run();
  t.equal(refused.status, 1, 'the fourth is refused');
  t.same(refused.reply, { status: 429, reason: 'rate_limited', body: 'rate limited\n', grpcStatus: 8, dubboStatus: 100, retryAfter: 1 });
  t.same(refused.notes, { rateLimit: 'r' });
  clock.now += 0.49 * S;
  t.equal(run().status, 1, 'still none after 0.49 s');
  clock.now += 0.02 * S;
  t.equal(run().status, 0, 'one token after 0.5 s');
  t.equal(run().status, 1);
  t.equal(count(RL_ADMITTED, 'r'), 4);
  t.equal(count(RL_REFUSED, 'r'), 3);
});

t.test('an alarm tightening a rule multiplies its rate by the factor while its word is set', async (t) => {
  const { run, clock, overrides } = setup([{ name: 'r', requestsPerSecond: 2, burst: 1 }], 1, ['r']);
  t.equal(run().status, 0);
  clock.now += 0.5 * S;
  t.equal(run().status, 0, 'a token every 0.5 s at the rule\'s rate');
  Atomics.store(overrides.view, overrides.wordOf('rateLimit', 'r'), 0.5 * FACTOR_UNIT);
  clock.now += 0.5 * S;
  t.equal(run().status, 0);
  clock.now += 0.6 * S;
  t.equal(run().status, 1, 'tightened to 1/s: none after 0.6 s');
  clock.now += 0.5 * S;
  t.equal(run().status, 0, 'one after 1.1 s');
  Atomics.store(overrides.view, overrides.wordOf('rateLimit', 'r'), 0);
  clock.now += 1 * S;
  t.equal(run().status, 0);
  clock.now += 0.5 * S;
  t.equal(run().status, 0, 'back to 2/s once the word is cleared');
});

t.test('retry-after is the whole seconds until a token, at least 1', async (t) => {
  const { run } = setup([{ name: 'slow', requestsPerMinute: 2, burst: 1 }]);
  t.equal(run().status, 0);
  t.equal(run().reply.retryAfter, 30, 'one request per 30 s');
});

t.test('a request that does not match is not counted', async (t) => {
  const { run, count } = setup([{ name: 'dubbo-only', requestsPerSecond: 1, burst: 1, match: { protocol: 'dubbo' } }]);
  for (let i = 0; i < 5; i++) t.equal(run(view('http1')).status, 0);
  t.equal(count(RL_ADMITTED, 'dubbo-only'), 0);
  t.equal(run(view('dubbo')).status, 0);
  t.equal(run(view('dubbo')).status, 1);
});

t.test('a header condition holds on any value of a repeated field, whatever the case of its name', async (t) => {
  const { run } = setup([{ name: 'free', requestsPerSecond: 1, burst: 1, match: { headers: { 'X-Tier': 'free' } } }]);
  const repeated = (vs: string[]): RequestView => ({ ...view(), header: (n) => (n === 'x-tier' ? vs[0] : undefined), headerValues: (n) => (n === 'x-tier' ? vs : []) });
  t.equal(run(repeated(['free'])).status, 0);
  t.equal(run(repeated(['paid', 'free'])).status, 1, 'free as the second value still counts');
  t.equal(run(repeated(['paid, free'])).status, 1, 'as an item of a list too');
  t.equal(run(repeated(['paid'])).status, 0, 'paid alone is not limited');
});

t.test('workers share one bucket', async (t) => {
  const { run } = setup([{ name: 'r', requestsPerSecond: 1, burst: 4 }], 3);
  const statuses = [0, 1, 2, 0, 1, 2].map((w) => run(view(), w).status);
  t.same(statuses, [0, 0, 0, 0, 1, 1], 'four admitted in all, not four per worker');
});

t.test('shadow mode: the same decisions, counted, logged at most once a second, let through', async (t) => {
  const enforce = setup([{ name: 'r', requestsPerSecond: 10, burst: 5 }]);
  const shadow = setup([{ name: 'r', requestsPerSecond: 10, burst: 5, mode: 'shadow' }]);
  const refusedBy = { enforce: 0, shadow: 0 };
  for (let i = 0; i < 200; i++) {
    if (enforce.run().status === 1) refusedBy.enforce++;
    const s = shadow.run();
    t.equal(s.status, 0);
    if (s.notes.rateLimitShadow === 'r') refusedBy.shadow++;
    enforce.clock.now += 0.013 * S;
    shadow.clock.now += 0.013 * S;
  }
  t.ok(refusedBy.enforce > 0);
  t.equal(refusedBy.shadow, refusedBy.enforce, 'shadow refuses exactly what enforce does');
  t.equal(shadow.count(RL_SHADOW_REFUSED, 'r'), refusedBy.enforce);
  t.equal(shadow.count(RL_REFUSED, 'r'), 0);
  t.equal(shadow.count(RL_ADMITTED, 'r'), enforce.count(RL_ADMITTED, 'r'));
  t.equal(shadow.lines.length, 3, '2.6 s of refusals: three lines');
  t.equal(shadow.lines.reduce((n, l) => n + (l.requests as number), 0) <= refusedBy.shadow, true);
  t.match(shadow.lines[0], { rule: 'r', requests: 1, protocol: 'http1' });
});

t.test('a refused request gives back the tokens it took from rules before', async (t) => {
  const { run, count } = setup([
    { name: 'wide', requestsPerSecond: 1, burst: 10 },
    { name: 'narrow', requestsPerSecond: 1, burst: 1, match: { path: { prefix: '/n' } } },
  ]);
  const n = { ...view(), path: '/n' };
  t.equal(run(n).status, 0);
  for (let i = 0; i < 5; i++) t.equal(run(n).status, 1, 'narrow refuses');
  for (let i = 0; i < 9; i++) t.equal(run().status, 0, `wide still has ${9 - i} tokens`);
  t.equal(run().status, 1);
  t.equal(count(RL_ADMITTED, 'wide'), 10);
  t.equal(count(RL_REFUSED, 'narrow'), 5);
});

t.test('per key: each value its own bucket; no value, one bucket for all without it', async (t) => {
  const { run } = setup([{ name: 'user', requestsPerSecond: 1, burst: 2, key: { header: 'x-user' } }]);
  const as = (u?: string) => view('http1', u === undefined ? {} : { 'x-user': u });
  t.same([run(as('a')), run(as('a')), run(as('a'))].map((r) => r.status), [0, 0, 1]);
  t.same([run(as('b')), run(as('b')), run(as('b'))].map((r) => r.status), [0, 0, 1], 'b is not limited by a');
  t.same([run(as()), run(as()), run(as())].map((r) => r.status), [0, 0, 1], 'leaving the header out is a key too');
});

t.test('per caller: the principal, else the address', async (t) => {
  const { run } = setup([{ name: 'caller', requestsPerSecond: 1, burst: 1, key: 'caller' }]);
  const from = (address: string, principal?: string): RequestView => ({ ...view(), source: { address, port: 1, principal } });
  t.equal(run(from('10.0.0.1')).status, 0);
  t.equal(run(from('10.0.0.1')).status, 1);
  t.equal(run(from('10.0.0.2')).status, 0, 'another address');
  t.equal(run(from('10.0.0.3', 'td/ns/a/sa/x')).status, 0);
  t.equal(run(from('10.0.0.4', 'td/ns/a/sa/x')).status, 1, 'the same principal from another address');
});

t.test('maxKeys: the least recently used key is evicted for a new one', async (t) => {
  const { run, clock } = setup([{ name: 'user', requestsPerMinute: 1, burst: 1, key: { header: 'x-user' }, maxKeys: 2 }]);
  const as = (u: string) => view('http1', { 'x-user': u });
  t.equal(run(as('a')).status, 0);
  clock.now += 1e6;
  t.equal(run(as('b')).status, 0);
  t.equal(run(as('a')).status, 1);
  t.equal(run(as('b')).status, 1, 'both held');
  clock.now += 1e6;
  t.equal(run(as('c')).status, 0, 'c takes a slot: a was used least recently');
  t.equal(run(as('b')).status, 1, 'b is still held');
  t.equal(run(as('a')).status, 0, 'a was forgotten (a fresh bucket), and took b\'s slot');
  t.equal(run(as('c')).status, 1, 'c is still held');
});

t.test('slots: a reload keeps the state of rules it leaves unchanged, mode aside', async (t) => {
  const shared = new SharedState();
  const slots = new RateLimitSlots(shared.memory);
  const buckets = shared.memory.region(BUCKETS);
  const maxKeys = (r: Readonly<Record<string, unknown>>) => (r.key ? (r.maxKeys as number) ?? 1024 : 0);
  const a = { name: 'a', requestsPerSecond: 1, match: {}, mode: 'enforce' };
  const b = { name: 'b', requestsPerSecond: 1, match: {}, key: 'caller', maxKeys: 10, mode: 'enforce' };
  const first = slots.publish([a, b], maxKeys);
  Atomics.store(buckets, first[0].word, 123n);
  const tags = shared.memory.region(KEY_TAGS);
  Atomics.store(tags, first[1].keyBase, keyHash('x'));
  const second = slots.publish([{ ...b, mode: 'shadow' }, { ...a, mode: 'shadow' }], maxKeys);
  t.same(second, [first[1], first[0]], 'same slots, in the new order');
  t.equal(Atomics.load(buckets, first[0].word), 123n, 'state kept');
  t.equal(Atomics.load(tags, first[1].keyBase), keyHash('x'), 'keys kept');
  const third = slots.publish([{ ...a, requestsPerSecond: 2 }, b], maxKeys);
  t.not(third[0].word, first[0].word, 'a changed rate: a new bucket');
  t.equal(Atomics.load(buckets, third[0].word), 0n, 'full');
  t.same(third[1], first[1]);
  const fourth = slots.publish([{ ...b, maxKeys: 20 }], maxKeys);
  t.equal(Atomics.load(tags, fourth[0].keyBase), 0, 'a new key table starts empty');
});

t.test('slots: key tables in pieces are laid out again rather than refused', async (t) => {
  const shared = new SharedState();
  const slots = new RateLimitSlots(shared.memory);
  const tags = shared.memory.region(KEY_TAGS);
  const maxKeys = (r: Readonly<Record<string, unknown>>) => r.maxKeys as number;
  const rule = (name: string, keys: number) => ({ name, requestsPerSecond: 1, match: {}, key: 'caller', maxKeys: keys, mode: 'enforce' });
  const [a, b] = slots.publish([rule('a', KEY_SLOTS / 2), rule('b', KEY_SLOTS / 4)], maxKeys);
  t.same([a.keyBase, b.keyBase], [0, KEY_SLOTS / 2]);
  Atomics.store(tags, b.keyBase, 7);
  // a is gone: free are [0, 1/2) and [3/4, 1), 3/4 in all but no piece of 3/4
  const [b2, c] = slots.publish([rule('b', KEY_SLOTS / 4), rule('c', (KEY_SLOTS * 3) / 4)], maxKeys);
  t.equal(b2.keySize, KEY_SLOTS / 4);
  t.equal(c.keySize, (KEY_SLOTS * 3) / 4);
  const ranges = [[b2.keyBase, b2.keyBase + b2.keySize], [c.keyBase, c.keyBase + c.keySize]].sort((x, y) => x[0] - y[0]);
  t.ok(ranges[0][1] <= ranges[1][0] && ranges[1][1] <= KEY_SLOTS && ranges[0][0] >= 0, `no overlap: ${JSON.stringify(ranges)}`);
  t.equal(Atomics.load(tags, b2.keyBase), 0, 'b starts with an empty table again');
});

t.test('a rule set of no rules leaves the filter out of every chain', async (t) => {
  const { filters } = setup([]);
  t.equal(filters[0].global, false);
  void (null as unknown as RateLimitRule);
});
