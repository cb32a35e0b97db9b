/**
 * Circuit breaking and fallback as the exchange applies them, with fake attempts and a fake
 * downstream (no sockets): a refusal by a filter (rate_limited from a rate limit, overloaded from
 * the adaptive limiter) gets the route's fallback, and only for the reasons it lists; the endpoint
 * breaker learns from each attempt (a refused connection retried elsewhere counts against the
 * endpoint that refused it), and an open endpoint leaves selection; the cluster's places are given
 * back however the request ends.
 */
import t from 'tap';
import { buildConfig, type ListenerConfig } from '../../src/config/config';
import { Exchange, type Attempt, type AttemptSink, type Downstream, type ExchangeEnv, type ResponseHead, type UpstreamChoice } from '../../src/exchange/exchange';
import { CONTINUE, STOP, type Filter, type RequestContext } from '../../src/exchange/filter';
import { classifyHttpStatus, type FailureKind, type LocalReply } from '../../src/exchange/outcome';
import type { RequestView } from '../../src/exchange/request-view';
import { Router } from '../../src/exchange/router';
import type { CompiledFallback } from '../../src/protection/fallback';
import { protectionSeries, protectionTables } from '../../src/protection';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { UpstreamPools } from '../../src/upstream/upstream-pools';
import { CompiledConfig } from '../../src/worker/runtime';

const breaker = { minimumRequests: 2, errorRatio: 0.5, windowMs: 60_000, buckets: 6, openMs: 60_000, halfOpenRequests: 1 };

function world(refuse: string | null) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001' }],
    clusters: [
      { name: 'pair', endpoints: ['10.0.0.2:8080', '10.0.0.3:8080'], circuitBreaker: { maxRequests: 10, endpoint: breaker } },
    ],
    routes: [
      { name: 'limited', match: { service: 'limited' }, action: { cluster: 'pair' }, fallback: { http: { status: 200, body: 'later' } } },
      { name: 'picky', match: { service: 'picky' }, action: { cluster: 'pair' }, fallback: { on: ['overloaded'], http: { status: 200, body: 'later' } } },
      { name: 'pair', match: { service: 'pair' }, action: { cluster: 'pair' } },
    ],
    filters: [],
  });
  const registry = new StatsRegistry();
  for (const c of config.clusters) registry.addCluster(c.name);
  for (const l of config.listeners) registry.addListener(l.name);
  for (const k of protectionSeries(config)) registry.add(k);
  const shared = new SharedState();
  const stats = new Stats(shared, registry.keys);
  const compiled = new CompiledConfig(1, config, stats, new UpstreamPools(() => stats), null);
  const limiter: Filter = {
    name: 'limiter',
    global: true,
    onRequest: (ctx: RequestContext) => {
      if (refuse === null || ctx.view.service === 'pair') return CONTINUE;
      ctx.reply({ status: refuse === 'rate_limited' ? 429 : 503, reason: refuse as 'rate_limited' });
      return STOP;
    },
  };
  const router = new Router(config.routes, compiled.clusters, new Map<string, ListenerConfig>(config.listeners.map((l) => [l.name, l])), config.http.requestTimeoutMs, [limiter]);
  const env: ExchangeEnv = {
    config, stats, router, accessLog: compiled.accessLog, pools: compiled.pools, rpcStats: null,
    protocol: (p) => compiled.protocol(p), passthrough: (v) => compiled.passthrough(v), upstreamTls: (c, v) => compiled.upstreamTls(c, v),
  };
  const stat = (name: string, labels?: Record<string, string>) => stats.get(stats.slot(name, labels));
  const tables = protectionTables(shared.memory);
  return { env, stat, tables };
}

class FakeAttempt implements Attempt {
  constructor(readonly to: UpstreamChoice, readonly sink: AttemptSink) {}
  start(): void {}
  write(): boolean { return true; }
  trailers(): void {}
  consumed(): void {}
  pauseResponse(): void {}
  resumeResponse(): void {}
  cancel(): void {}
  release(): void {}
  answer(status: number): void { this.sink.onAttemptReady(this); this.sink.onResponseHead(this, { status, grpcStatus: -1, form: null } as ResponseHead, true); }
  fail(kind: FailureKind): void { this.sink.onAttemptFailed(this, kind, false); }
}

class FakeDownstream implements Downstream {
  readonly events: string[] = [];
  readonly attempts: FakeAttempt[] = [];
  readonly request = {};
  readonly requestEnded = true;
  readonly upstreams = { open: (_x: Exchange, to: UpstreamChoice, sink: AttemptSink) => { const a = new FakeAttempt(to, sink); this.attempts.push(a); return a; } };
  constructor(readonly view: RequestView) {}
  consumed(): void {}
  pauseRequest(): void {}
  resumeRequest(): void {}
  respond(h: ResponseHead): void { this.events.push(`respond ${h.status}`); }
  write(): boolean { return true; }
  trailers(): void {}
  abort(): void {}
  localReply(r: LocalReply): number { this.events.push(`reply ${r.status} ${r.reason}`); return r.status; }
  fallback(f: CompiledFallback, reason: string): number | undefined {
    if (!f.http) return undefined;
    this.events.push(`fallback ${f.http.status} ${f.http.body.toString()} for ${reason}`);
    return f.http.status;
  }
  done(): void { this.events.push('done'); }
  statusClass(status: number): number { return (status / 100) | 0; }
  classify(status: number) { return classifyHttpStatus(status); }
}

function run(env: ExchangeEnv, service: string) {
  const down = new FakeDownstream({
    protocol: 'http1', direction: 'outbound', listener: 'app', source: { address: '10.9.9.9', port: 40000 }, destination: null,
    service, authority: service, method: 'GET', path: '/', header: () => undefined, headerValues: () => [],
  });
  const x = new Exchange(env, down);
  x.start();
  return { x, down };
}

for (const reason of ['rate_limited', 'overloaded'] as const) {
  t.test(`a ${reason} refusal by a filter gets the route's fallback when the route lists it`, async (t) => {
    const { env, stat } = world(reason);
    const a = run(env, 'limited');
    t.same(a.down.events, [`fallback 200 later for ${reason}`, 'done']);
    t.equal(a.x.reason, reason, 'the refusal stays the reason');
    const b = run(env, 'picky');
    if (reason === 'overloaded') t.same(b.down.events, ['fallback 200 later for overloaded', 'done']);
    else t.same(b.down.events, ['reply 429 rate_limited', 'done'], 'not listed: the refusal as it is');
    t.equal(stat('sluice_fallback_total', { route: 'limited', reason }), 1);
    t.equal(a.down.attempts.length + b.down.attempts.length, 0, 'nothing went upstream');
  });
}

t.test('the endpoint breaker learns from each attempt; the cluster places come back however a request ends', async (t) => {
  const { env, tables } = world(null);
  const inUse = () => tables.limits.counts('pair')![2];
  const rows = () => tables.breakers.list().filter((b) => b.cluster === 'pair');
  // two requests whose first attempt's connection is refused: each is retried on the other endpoint and answered
  for (let i = 0; i < 2; i++) {
    const r = run(env, 'pair');
    t.equal(inUse(), 1, 'a request in flight holds a place');
    const first = r.down.attempts[0];
    first.fail('connect_failed');
    const second = r.down.attempts[1];
    t.not(second.to.key, first.to.key, 'retried on the other endpoint');
    second.answer(200);
    t.same(r.down.events, ['respond 200', 'done']);
    t.equal(inUse(), 0, 'and gives it back');
  }
  const sum = rows().reduce((a, b) => ({ calls: a.calls + b.window.calls, failures: a.failures + b.window.failures }), { calls: 0, failures: 0 });
  t.same(sum, { calls: 4, failures: 2 }, 'each attempt judged for its own endpoint: two refused connections, two answers');
  // a client that leaves mid-request gives its place back too
  const gone = run(env, 'pair');
  gone.down.attempts[0].sink.onAttemptReady(gone.down.attempts[0]);
  t.equal(inUse(), 1);
  gone.x.onDownstreamGone();
  t.equal(inUse(), 0, 'the client left: the place is back');
});

t.test('an open endpoint leaves selection: its calls go to the other endpoint, which is no refusal', async (t) => {
  const { env, tables } = world(null);
  const open1 = (key: string) => tables.breakers.list().find((b) => b.target === key);
  // fail requests until one endpoint opens
  let opened: string | undefined;
  for (let i = 0; i < 10 && !opened; i++) {
    const r = run(env, 'pair');
    r.down.attempts[0].answer(503);
    opened = tables.breakers.list().find((b) => b.state === 'open')?.target;
  }
  t.ok(opened, `an endpoint opened (${opened})`);
  // every call now goes to the other endpoint
  for (let i = 0; i < 4; i++) {
    const r = run(env, 'pair');
    t.not(r.down.attempts[0].to.key, opened, 'the open endpoint is out of selection');
    r.down.attempts[0].answer(200);
  }
  t.match(open1(opened!), { state: 'open', refused: 0 }, 'moving to another endpoint is no refusal');
});
