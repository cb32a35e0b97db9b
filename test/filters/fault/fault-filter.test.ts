/**
 * The fault filter on a fake request context and a fake clock: aborts (the reply each protocol
 * renders, percentages with fractions), delays (held, then resumed; nothing after the client
 * left), both, and the counters by their full names.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { CONTINUE, STOP } from '../../../src/exchange/filter';
import { Router } from '../../../src/exchange/router';
import { FaultFilter, type FaultState } from '../../../src/filters/fault/fault-filter';
import { createFilters } from '../../../src/filters';
import { FakeClock, FakeContext, envFor, scripted, view } from '../fake-context';

function setup(fault: Record<string, unknown>, random: () => number = () => { throw new Error('no draw expected'); }) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    routes: [{ name: 'r', action: { cluster: 'web' }, fault }],
  });
  const env = envFor(config, random);
  const filter = new FaultFilter(env);
  const state = filter.compileRoute(config.routes[0] as unknown as Record<string, unknown>, 'r')!;
  const clock = new FakeClock();
  const ctx = () => new FakeContext(view(), clock);
  const aborts = () => env.value('sluice_fault_aborts_total', { route: 'r' });
  const delays = () => env.value('sluice_fault_delays_total', { route: 'r' });
  return { filter, state, clock, ctx, aborts, delays };
}

t.test('abort at 100%: a local reply with reason fault_abort, counted, noted', async (t) => {
  const { filter, state, ctx, aborts, delays } = setup({ abort: { status: 503 } });
  const c = ctx();
  t.equal(filter.onRequest(c, state), STOP);
  t.same(c.replies, [{ status: 503, reason: 'fault_abort', body: 'fault filter abort\n' }], 'no gRPC or Dubbo status: each protocol maps the HTTP one');
  t.equal(c.notes.fault, 'abort');
  t.equal(aborts(), 1);
  t.equal(delays(), 0);
  t.equal(c.resumes, 0);
});

t.test('abort with its own gRPC and Dubbo statuses', async (t) => {
  const { filter, state, ctx } = setup({ abort: { status: 429, grpcStatus: 8, dubboStatus: 100 } });
  const c = ctx();
  filter.onRequest(c, state);
  t.same(c.replies, [{ status: 429, reason: 'fault_abort', body: 'fault filter abort\n', grpcStatus: 8, dubboStatus: 100 }]);
});

t.test('percent: a share of requests, fractions allowed; 0 never draws', async (t) => {
  const s = setup({ abort: { status: 500, percent: 30 } }, scripted(0.29, 0.3, 0.999, 0));
  const results = [0, 1, 2, 3].map(() => { const c = s.ctx(); return s.filter.onRequest(c, s.state) === STOP ? 'abort' : 'pass'; });
  t.same(results, ['abort', 'pass', 'pass', 'abort'], 'random × 100 < percent');
  t.equal(s.aborts(), 2);

  const f = setup({ abort: { status: 500, percent: 0.5 } }, scripted(0.0049, 0.005));
  t.equal(f.filter.onRequest(f.ctx(), f.state), STOP, '0.49 < 0.5');
  t.equal(f.filter.onRequest(f.ctx(), f.state), CONTINUE, '0.5 is not');

  const z = setup({ abort: { status: 500, percent: 0 } });
  const c = z.ctx();
  t.equal(z.filter.onRequest(c, z.state), CONTINUE, 'percent 0: never, and no random draw (setup throws on one)');
  t.same(c.replies, []);
  t.same(c.notes, {}, 'nothing noted for a request the fault left alone');
  t.equal(z.aborts(), 0);
});

t.test('delay: the request is held for ms on the exchange timer, then resumed', async (t) => {
  const { filter, state, clock, ctx, delays, aborts } = setup({ delay: { ms: 200, percent: 100 } });
  const c = ctx();
  t.equal(filter.onRequest(c, state), STOP);
  t.equal(delays(), 1);
  t.equal(c.notes.fault, 'delay');
  clock.advance(199);
  t.equal(c.resumes, 0, 'not before ms');
  clock.advance(1);
  t.equal(c.resumes, 1, 'resumed at ms');
  t.same(c.replies, []);
  t.equal(aborts(), 0);
});

t.test('delay then abort: the abort comes when the delay is over', async (t) => {
  const { filter, state, clock, ctx, delays, aborts } = setup({ delay: { ms: 50 }, abort: { status: 503 } });
  const c = ctx();
  t.equal(filter.onRequest(c, state), STOP);
  t.equal(c.notes.fault, 'delay+abort');
  t.same(c.replies, [], 'no answer during the delay');
  t.equal(aborts(), 0);
  clock.advance(50);
  t.same(c.replies.map((r) => r.reason), ['fault_abort']);
  t.equal(c.resumes, 0, 'an aborted request is not resumed');
  t.equal(delays(), 1);
  t.equal(aborts(), 1);
});

t.test('a client that leaves during the delay costs nothing more', async (t) => {
  const { filter, state, clock, ctx, aborts } = setup({ delay: { ms: 100 }, abort: { status: 503, percent: 100 } });
  const c = ctx();
  filter.onRequest(c, state);
  t.equal(clock.pending, 1);
  c.end(); // the exchange finished: the client went away
  t.equal(clock.pending, 0, 'the timer is gone');
  clock.advance(1000);
  t.same(c.replies, []);
  t.equal(c.resumes, 0);
  t.equal(aborts(), 0, 'an abort that never happened is not counted');
});

t.test('independent draws for delay and abort', async (t) => {
  const { filter, state, clock, ctx, delays, aborts } = setup({ delay: { ms: 10, percent: 50 }, abort: { status: 503, percent: 50 } }, scripted(0.1, 0.9, 0.9, 0.1));
  const first = ctx();
  t.equal(filter.onRequest(first, state), STOP, 'delayed (0.1), not aborted (0.9)');
  clock.advance(10);
  t.equal(first.resumes, 1);
  const second = ctx();
  t.equal(filter.onRequest(second, state), STOP, 'not delayed (0.9), aborted (0.1)');
  t.same(second.replies.map((r) => r.status), [503]);
  t.equal(delays(), 1);
  t.equal(aborts(), 1);
});

t.test('routes without a fault section do not meet the filter', async (t) => {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    routes: [
      { name: 'faulty', match: { path: { prefix: '/f' } }, action: { cluster: 'web' }, fault: { abort: { status: 503 } } },
      { name: 'plain', action: { cluster: 'web' } },
    ],
  });
  const env = envFor(config);
  const filters = createFilters(['fault'], env);
  const router = new Router(config.routes, env.clusters, new Map(config.listeners.map((l) => [l.name, l])), 1000, filters);
  const faulty = router.resolve({ ...view(), path: '/f' })!;
  const plain = router.resolve({ ...view(), path: '/x' })!;
  t.equal(faulty.name, 'faulty');
  t.same(faulty.filters.map((f) => f.filter.name), ['fault']);
  t.equal((faulty.filters[0].state as FaultState).abort?.reply.status, 503);
  t.equal(plain.name, 'plain');
  t.same(plain.filters, [], 'compiled once: nothing to run on this route');
});
