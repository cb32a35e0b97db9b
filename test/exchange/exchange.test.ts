/**
 * The exchange's request lifecycle, protocol-neutral, driven through fakes: a fake Downstream
 * records what the client would see (local replies, response heads, body, done), fake attempts
 * record what the upstream side was asked, and the test plays the upstream by calling the
 * exchange's AttemptSink methods. Config, Router, ClusterRuntime and Stats are the real ones; the
 * filter chain is made of test filters that log what they see.
 *
 * What it proves, as the filter contract (src/exchange/filter.ts) promises it:
 * - no route: a 404 `no_route` reply rendered by the downstream, no attempt, and the global
 *   filters' onComplete (outcome `local`); a route: its target goes to the upstream side;
 * - stop / resume: a resume inside onRequest continues once, a stop holds the chain (no later
 *   filter, no attempt) until the resume, a second resume is ignored, every filter runs once in
 *   order, the request goes upstream once;
 * - a local reply after a stop ends the chain, and a late resume after it does nothing;
 * - onResponseHead sees the upstream's status and may replace the answer with a local reply;
 * - onComplete comes once, with the outcome class, attempts, endpoint, duration and bytes, for an
 *   answer, a retried connect failure and a failure that becomes a 503;
 * - a filter that throws (onRequest, after a resume, in a ctx.after() callback, onResponseHead,
 *   onComplete) costs its own request a 500 `internal_error` at most: the exception never leaves
 *   the exchange (to the adapter, a timer), and the exchange ends, completes and counts as usual;
 * - how an attempt's failure becomes the client's reply (outcome.ts replyForFailure), which of them
 *   the default policy retries, and a failure after the response began cuts it off.
 *
 * Everything is synchronous but one ctx.after() timer of 0 ms; no socket. Each exchange is
 * finished before its test ends, so no route timer outlives it.
 */
import t from 'tap';
import { buildConfig, type ListenerConfig } from '../../src/config/config';
import {
  Exchange, type Attempt, type AttemptSink, type Downstream, type ExchangeEnv, type ResponseHead, type UpstreamChoice,
} from '../../src/exchange/exchange';
import {
  CONTINUE, STOP, type Completion, type Filter, type FilterStatus, type HeaderOps, type RequestContext, type ResponseContext,
} from '../../src/exchange/filter';
import { classifyHttpStatus, type FailureKind, type LocalReply } from '../../src/exchange/outcome';
import type { RequestView } from '../../src/exchange/request-view';
import { Router } from '../../src/exchange/router';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { UpstreamPools } from '../../src/upstream/upstream-pools';
import { CompiledConfig } from '../../src/worker/runtime';

// ── the world: a real config, its clusters, router and stats ─────────────────

const CONFIG = {
  admin: { address: '127.0.0.1:0' },
  listeners: [{ name: 'app', address: '127.0.0.1:9001' }],
  clusters: [
    { name: 'orders', endpoints: ['10.0.0.1:8080'] },
    { name: 'pair', endpoints: ['10.0.0.2:8080', '10.0.0.3:8080'] },
  ],
  routes: [
    { name: 'orders', match: { service: 'orders' }, action: { cluster: 'orders' } },
    { name: 'pair', match: { service: 'pair' }, action: { cluster: 'pair' } },
  ],
  // CompiledConfig builds no filter of its own: the chain is the test's
  filters: [],
};

/**
 * An ExchangeEnv as a worker has it (CompiledConfig), except that its router runs `filters`:
 * the same routes and clusters, a chain of test filters.
 */
function world(filters: Filter[]) {
  const config = buildConfig(CONFIG);
  const registry = new StatsRegistry();
  for (const c of config.clusters) registry.addCluster(c.name);
  for (const l of config.listeners) registry.addListener(l.name);
  const stats = new Stats(new SharedState(), registry.keys);
  const compiled = new CompiledConfig(1, config, stats, new UpstreamPools(() => stats), null);
  const listeners = new Map<string, ListenerConfig>(config.listeners.map((l) => [l.name, l]));
  const router = new Router(config.routes, compiled.clusters, listeners, config.http.requestTimeoutMs, filters);
  const env: ExchangeEnv = {
    config, stats, router, accessLog: compiled.accessLog, pools: compiled.pools, rpcStats: null,
    protocol: (p) => compiled.protocol(p),
    passthrough: (v) => compiled.passthrough(v),
    upstreamTls: (c, v) => compiled.upstreamTls(c, v),
  };
  /** A counter or gauge by its full series name. */
  const stat = (name: string, labels?: Record<string, string>) => stats.get(stats.slot(name, labels));
  return { env, compiled, stat };
}

function view(service: string, method = 'GET'): RequestView {
  return {
    protocol: 'http1', direction: 'outbound', listener: 'app', source: { address: '10.9.9.9', port: 40000 }, destination: null,
    service, authority: service, method, path: '/', header: () => undefined, headerValues: () => [],
  };
}

// ── the fakes ────────────────────────────────────────────────────────────────

/** One try at an upstream, as the exchange asked for it; the test answers through `sink`. */
class FakeAttempt implements Attempt {
  started = 0;
  cancelled = 0;
  released = 0;
  readonly written: string[] = [];
  constructor(readonly to: UpstreamChoice, readonly sink: AttemptSink) {}
  start(): void { this.started++; }
  write(chunk: Buffer, end: boolean): boolean { this.written.push(chunk.toString() + (end ? '|end' : '')); return true; }
  trailers(): void {}
  consumed(): void {}
  pauseResponse(): void {}
  resumeResponse(): void {}
  cancel(): void { this.cancelled++; }
  release(): void { this.released++; }

  // the upstream's side
  ready(): void { this.sink.onAttemptReady(this); }
  head(status: number, end = false): void { this.sink.onResponseHead(this, head(status), end); }
  body(text: string, end = true): void { this.sink.onResponseBody(this, Buffer.from(text), end); }
  fail(kind: FailureKind): void { this.sink.onAttemptFailed(this, kind, false); }
}

function head(status: number): ResponseHead {
  return { status, grpcStatus: -1, form: { kind: 'fake', status } };
}

/**
 * The client's side of one request. `events` is what the client saw, in order, in a readable
 * form: `reply 404 no_route`, `respond 200`, `write hello|end`, `abort`, `done`.
 */
class FakeDownstream implements Downstream {
  readonly events: string[] = [];
  readonly replies: LocalReply[] = [];
  readonly attempts: FakeAttempt[] = [];
  readonly request = { kind: 'fake' };
  readonly upstreams = {
    open: (_x: Exchange, to: UpstreamChoice, sink: AttemptSink): Attempt => {
      const a = new FakeAttempt(to, sink);
      this.attempts.push(a);
      return a;
    },
  };
  constructor(readonly view: RequestView, readonly requestEnded = true) {}

  consumed(): void {}
  pauseRequest(): void {}
  resumeRequest(): void {}
  respond(h: ResponseHead, end: boolean, _edits: HeaderOps[] | null): void { this.events.push(`respond ${h.status}${end ? '|end' : ''}`); }
  write(chunk: Buffer, end: boolean): boolean { this.events.push(`write ${chunk.toString()}${end ? '|end' : ''}`); return true; }
  trailers(): void { this.events.push('trailers'); }
  abort(): void { this.events.push('abort'); }
  localReply(r: LocalReply): number {
    this.replies.push(r);
    this.events.push(`reply ${r.status} ${r.reason}`);
    return r.status;
  }
  done(): void { this.events.push('done'); }
  statusClass(status: number): number { return (status / 100) | 0; }
  classify(status: number) { return classifyHttpStatus(status); }
}

/** An exchange for a request to `service`, started. */
function run(env: ExchangeEnv, service: string, opts: { requestEnded?: boolean } = {}) {
  const down = new FakeDownstream(view(service), opts.requestEnded ?? true);
  const x = new Exchange(env, down);
  x.start();
  return { x, down };
}

// ── test filters ─────────────────────────────────────────────────────────────

/** What the filters saw, in order, across a test: `name.onRequest`, `name.onComplete`, ... */
type Log = string[];

/**
 * A global filter (every route, and no route) that logs each hook, keeps the context of its last
 * request (to resume or reply later) and its completions, and does `act` in onRequest.
 */
class TestFilter implements Filter {
  readonly global = true;
  ctx: RequestContext | null = null;
  readonly completions: Completion[] = [];
  constructor(
    readonly name: string,
    private readonly log: Log,
    private readonly act: (ctx: RequestContext) => FilterStatus = () => CONTINUE,
  ) {}
  onRequest(ctx: RequestContext): FilterStatus {
    this.log.push(`${this.name}.onRequest`);
    this.ctx = ctx;
    return this.act(ctx);
  }
  onComplete(c: Completion): void {
    this.log.push(`${this.name}.onComplete`);
    this.completions.push(c);
  }
}

// ── routing ──────────────────────────────────────────────────────────────────

t.test('no route: a 404 no_route reply through the downstream, no attempt; a route: its target goes upstream', async (t) => {
  const log: Log = [];
  const seen = new TestFilter('seen', log);
  const { env, stat } = world([seen]);

  const lost = run(env, 'nowhere');
  t.same(lost.down.events, ['reply 404 no_route', 'done'], 'the downstream renders the reply, then is told the exchange is done');
  t.equal(lost.down.attempts.length, 0, 'no attempt is opened');
  t.equal(seen.ctx!.routeName, null, 'a global filter still runs, and sees that no route matched');
  t.match(lost.x, { status: 404, reason: 'no_route', finished: true });
  t.equal(seen.completions.length, 1, 'the global filter hears of the end once');
  t.match(seen.completions[0], { outcome: 'local', status: 404, reason: 'no_route', routeName: null, attempts: 0, endpoint: undefined, cluster: null });
  t.ok(seen.completions[0].durationMs >= 0);
  t.equal(stat('sluice_downstream_rq_no_route_total', { protocol: 'http1' }), 1);
  t.equal(stat('sluice_downstream_rq_active', { protocol: 'http1' }), 0);

  const found = run(env, 'orders');
  t.equal(found.down.attempts.length, 1, 'one attempt');
  const a = found.down.attempts[0];
  t.match(a.to, { host: '10.0.0.1', port: 8080, key: '10.0.0.1:8080', cluster: { config: { name: 'orders' } } }, 'to the route\'s cluster');
  t.equal(a.started, 1, 'and started');
  t.same(found.down.events, [], 'the client has nothing yet');
  t.equal(stat('sluice_downstream_rq_no_route_total', { protocol: 'http1' }), 1, 'not counted as no route');
  a.ready();
  a.head(204, true);
  t.same(found.down.events, ['respond 204|end', 'done']);
});

// ── stop and resume ──────────────────────────────────────────────────────────

t.test('stop and resume: each filter once, in order; the request goes upstream once', async (t) => {
  const log: Log = [];
  const quick = new TestFilter('quick', log, (ctx) => { ctx.resume(); return STOP; }); // async work that was done at once
  const hold = new TestFilter('hold', log, () => STOP);
  const last = new TestFilter('last', log);
  const { env } = world([quick, hold, last]);

  const { x, down } = run(env, 'orders');
  t.same(log, ['quick.onRequest', 'hold.onRequest'], 'a resume inside onRequest continues at once; a stop holds the chain');
  t.equal(down.attempts.length, 0, 'nothing goes upstream while a filter holds the request');

  hold.ctx!.resume();
  t.same(log, ['quick.onRequest', 'hold.onRequest', 'last.onRequest'], 'the resume continues with the next filter');
  t.equal(down.attempts.length, 1, 'then the request goes upstream');

  hold.ctx!.resume();
  quick.ctx!.resume();
  t.same(log, ['quick.onRequest', 'hold.onRequest', 'last.onRequest'], 'a second resume runs nothing again');
  t.equal(down.attempts.length, 1, 'and opens no second attempt');
  t.equal(down.attempts[0].started, 1);

  down.attempts[0].ready();
  down.attempts[0].head(200);
  down.attempts[0].body('ok');
  t.same(down.events, ['respond 200', 'write ok|end', 'done']);
  t.equal(x.attempts, 1);
});

t.test('a second resume of one stop does not resume the stop of a later filter', async (t) => {
  const log: Log = [];
  const first = new TestFilter('first', log, () => STOP);
  const second = new TestFilter('second', log, () => STOP);
  const last = new TestFilter('last', log);
  const { env } = world([first, second, last]);

  const { down } = run(env, 'orders');
  const firstResume = first.ctx!.resume; // what first's async work holds on to
  firstResume();
  t.same(log, ['first.onRequest', 'second.onRequest'], 'second holds the request now');

  firstResume(); // first's work reports twice (a retried lookup, a duplicated callback)
  t.same(log, ['first.onRequest', 'second.onRequest'], 'second still holds: last has not run');
  t.equal(down.attempts.length, 0, 'nothing went upstream past second');

  second.ctx!.resume();
  t.same(log, ['first.onRequest', 'second.onRequest', 'last.onRequest']);
  t.equal(down.attempts.length, 1);
  down.attempts[0].fail('connect_failed'); // ends the exchange
});

t.test('a stop with a resume, and a reply inside onRequest, of the same filter: the reply wins', async (t) => {
  const log: Log = [];
  const deny = new TestFilter('deny', log, (ctx) => { ctx.reply({ status: 403, reason: 'denied' }); ctx.resume(); return CONTINUE; });
  const last = new TestFilter('last', log);
  const { env } = world([deny, last]);
  const { down } = run(env, 'orders');
  t.same(down.events, ['reply 403 denied', 'done']);
  t.same(log, ['deny.onRequest', 'deny.onComplete', 'last.onComplete'], 'the chain ends at the reply; every filter of the route sees the completion');
  t.equal(down.attempts.length, 0);
});

// ── a local reply after a stop ───────────────────────────────────────────────

t.test('a local reply after a stop ends the chain; a late resume is ignored', async (t) => {
  const log: Log = [];
  const limiter = new TestFilter('limiter', log, () => STOP);
  const last = new TestFilter('last', log);
  const { env, stat } = world([limiter, last]);

  const { x, down } = run(env, 'orders');
  limiter.ctx!.reply({ status: 429, reason: 'rate_limited', body: 'slow down\n' });
  t.same(down.events, ['reply 429 rate_limited', 'done'], 'the downstream renders the 429 with its reason');
  t.same(down.replies, [{ status: 429, reason: 'rate_limited', body: 'slow down\n' }]);

  limiter.ctx!.resume();
  limiter.ctx!.reply({ status: 503, reason: 'overflow' });
  t.same(down.events, ['reply 429 rate_limited', 'done'], 'no second reply, no second done');
  t.equal(down.attempts.length, 0, 'no attempt is opened');
  t.notOk(log.includes('last.onRequest'), 'the filter after the stop never runs');
  t.match(x, { status: 429, reason: 'rate_limited' });
  t.equal(limiter.completions.length, 1);
  t.match(limiter.completions[0], { outcome: 'local', status: 429, reason: 'rate_limited', attempts: 0, endpoint: undefined, routeName: 'orders' });
  t.equal(stat('sluice_downstream_rq_xx_total', { protocol: 'http1', class: '4xx' }), 1);
  t.equal(stat('sluice_downstream_rq_active', { protocol: 'http1' }), 0);
});

// ── the response head ────────────────────────────────────────────────────────

/** A response filter that logs the head it sees and replaces a 401 with a local 403. */
class GuardFilter implements Filter {
  readonly name = 'guard';
  readonly global = true;
  readonly heads: Array<Pick<ResponseContext, 'status' | 'grpcStatus' | 'outcome' | 'routeName'>> = [];
  onResponseHead(ctx: ResponseContext): FilterStatus {
    this.heads.push({ status: ctx.status, grpcStatus: ctx.grpcStatus, outcome: ctx.outcome, routeName: ctx.routeName });
    if (ctx.status === 401) ctx.reply({ status: 403, reason: 'denied', body: 'no\n' });
    return CONTINUE;
  }
}

t.test('onResponseHead sees the upstream status and may replace the answer with a local reply', async (t) => {
  const log: Log = [];
  const guard = new GuardFilter();
  const done = new TestFilter('done', log);
  const { env } = world([guard, done]);

  const ok = run(env, 'orders');
  ok.down.attempts[0].ready();
  ok.down.attempts[0].head(200);
  t.same(guard.heads, [{ status: 200, grpcStatus: -1, outcome: 'success', routeName: 'orders' }], 'the head as the upstream sent it');
  t.same(ok.down.events, ['respond 200'], 'and passed on');
  ok.down.attempts[0].body('fine');

  const hidden = run(env, 'orders');
  const a = hidden.down.attempts[0];
  a.ready();
  a.head(401);
  t.same(guard.heads[1], { status: 401, grpcStatus: -1, outcome: 'caller_error', routeName: 'orders' });
  t.same(hidden.down.events, ['reply 403 denied', 'done'], 'the client gets the local reply, never the upstream head');
  t.ok(a.cancelled > 0, 'the upstream answer is given up');
  t.equal(a.released, 0);
  a.body('secret');
  t.same(hidden.down.events, ['reply 403 denied', 'done'], 'what the upstream still sends goes nowhere');
  t.match(done.completions[1], { outcome: 'local', status: 403, reason: 'denied', attempts: 1, endpoint: '10.0.0.1:8080' });
});

// ── completion ───────────────────────────────────────────────────────────────

t.test('onComplete, once per request: outcome, attempts, endpoint, duration, bytes', async (t) => {
  const log: Log = [];
  const done = new TestFilter('done', log);
  const { env, compiled, stat } = world([done]);

  await t.test('an answer', async (t) => {
    const { x, down } = run(env, 'orders', { requestEnded: false });
    const a = down.attempts[0];
    a.ready();
    x.onRequestBody(Buffer.from('abc'), true);
    t.same(a.written, ['abc|end'], 'the body goes to the attempt');
    a.head(200);
    a.body('hello');
    t.same(down.events, ['respond 200', 'write hello|end', 'done']);
    t.equal(a.released, 1, 'the attempt is released once the response is whole');
    t.equal(a.cancelled, 0);
    t.equal(done.completions.length, 1, 'onComplete once');
    const c = done.completions[0];
    t.match(c, {
      outcome: 'success', status: 200, routeName: 'orders', attempts: 1, endpoint: '10.0.0.1:8080', bytesIn: 3, bytesOut: 5, reason: undefined,
    });
    t.equal(c.cluster, compiled.clusters.get('orders'));
    t.ok(Number.isFinite(c.durationMs) && c.durationMs >= 0, 'a duration');
    t.equal(stat('sluice_upstream_rq_xx_total', { cluster: 'orders', class: '2xx' }), 1, 'the upstream\'s answer counted for its cluster');
    a.body('late');
    x.onDownstreamGone();
    t.equal(done.completions.length, 1, 'nothing later completes it again');
    t.same(down.events, ['respond 200', 'write hello|end', 'done']);
  });

  await t.test('a connect failure with another endpoint: tried there', async (t) => {
    const { down } = run(env, 'pair');
    const [first] = down.attempts;
    first.fail('connect_failed');
    t.equal(down.attempts.length, 2, 'a second attempt');
    const second = down.attempts[1];
    t.not(second.to.key, first.to.key, 'on the other endpoint');
    second.ready();
    second.head(200, true);
    t.same(down.events, ['respond 200|end', 'done']);
    t.equal(done.completions.length, 2);
    t.match(done.completions[1], { outcome: 'success', status: 200, attempts: 2, endpoint: second.to.key, routeName: 'pair' });
    t.equal(stat('sluice_upstream_rq_retry_total', { cluster: 'pair' }), 1);
  });

  await t.test('a connect failure with nowhere else to go: 503 upstream_connect_failed, local origin', async (t) => {
    const { x, down } = run(env, 'orders');
    const a = down.attempts[0];
    a.fail('connect_failed');
    t.same(down.events, ['reply 503 upstream_connect_failed', 'done']);
    t.equal(down.attempts.length, 1, 'no retry on the same lone endpoint');
    t.equal(done.completions.length, 3);
    t.match(done.completions[2], {
      outcome: 'local_origin_error', status: 503, reason: 'upstream_connect_failed', attempts: 1, endpoint: '10.0.0.1:8080', bytesIn: 0, bytesOut: 0,
    });
    a.fail('reset');
    a.head(200, true);
    x.onDownstreamGone();
    t.equal(done.completions.length, 3, 'late events of the failed attempt and the client change nothing');
    t.same(down.events, ['reply 503 upstream_connect_failed', 'done']);
  });

  t.same(log, Array(3).fill('done.onRequest').flatMap((r) => [r, 'done.onComplete']), 'one onRequest and one onComplete per request');
  t.equal(stat('sluice_downstream_rq_active', { protocol: 'http1' }), 0);
  t.equal(stat('sluice_upstream_rq_active', { cluster: 'orders' }), 0);
  t.equal(stat('sluice_upstream_rq_active', { cluster: 'pair' }), 0);
});

// ── a filter that throws ─────────────────────────────────────────────────────

const boom = (): never => { throw new Error('filter bug'); };

t.test('a filter that throws in onRequest: a 500 internal_error for its request, nothing thrown out', async (t) => {
  const log: Log = [];
  const broken = new TestFilter('broken', log, boom);
  const last = new TestFilter('last', log);
  const { env, stat } = world([broken, last]);

  const down = new FakeDownstream(view('orders'));
  const x = new Exchange(env, down);
  t.doesNotThrow(() => x.start(), 'the adapter that started the exchange sees no exception');
  t.same(down.events, ['reply 500 internal_error', 'done'], 'the client gets the internal-error reply, once');
  t.same(down.replies, [{ status: 500, reason: 'internal_error', body: 'filter failed\n' }]);
  t.equal(down.attempts.length, 0, 'nothing goes upstream');
  t.same(log, ['broken.onRequest', 'broken.onComplete', 'last.onComplete'], 'the chain stops at the broken filter; onComplete once each');
  t.match(last.completions[0], { outcome: 'local', status: 500, reason: 'internal_error', attempts: 0, routeName: 'orders' });
  t.match(x, { finished: true, status: 500, reason: 'internal_error' });
  t.equal(stat('sluice_downstream_rq_xx_total', { protocol: 'http1', class: '5xx' }), 1);
  t.equal(stat('sluice_downstream_rq_active', { protocol: 'http1' }), 0, 'the request is not left active');

  x.onDownstreamGone();
  t.same(down.events, ['reply 500 internal_error', 'done'], 'the client leaving afterwards changes nothing');
  t.equal(last.completions.length, 1);
});

t.test('a filter that throws after a resume, or in a ctx.after() callback: the same, never out of the resume or the timer', async (t) => {
  const log: Log = [];
  const hold = new TestFilter('hold', log, () => STOP);
  const broken = new TestFilter('broken', log, boom);
  const { env } = world([hold, broken]);

  const resumed = run(env, 'orders');
  t.same(resumed.down.events, [], 'held');
  t.doesNotThrow(() => hold.ctx!.resume(), 'whoever resumed (a callback, a timer) sees no exception');
  t.same(resumed.down.events, ['reply 500 internal_error', 'done']);
  t.equal(resumed.down.attempts.length, 0);
  t.equal(hold.completions.length, 1);

  // a filter's own timer callback throws: tap fails the test on an uncaught exception
  const late = new TestFilter('late', [], (ctx) => { ctx.after(0, boom); return STOP; });
  const timed = run(world([late]).env, 'orders');
  t.same(timed.down.events, [], 'held by the timer');
  await new Promise((r) => setTimeout(r, 20));
  t.same(timed.down.events, ['reply 500 internal_error', 'done'], 'the throwing callback ends the request with the internal-error reply');
  t.match(late.completions, [{ outcome: 'local', status: 500, reason: 'internal_error' }]);
});

t.test('a filter that throws in onResponseHead: a 500 instead of the upstream answer, the attempt given up', async (t) => {
  const log: Log = [];
  const broken: Filter = { name: 'broken', global: true, onResponseHead: boom };
  const done = new TestFilter('done', log);
  const { env, stat } = world([broken, done]);

  const { down } = run(env, 'orders');
  const a = down.attempts[0];
  a.ready();
  t.doesNotThrow(() => a.head(200), 'the upstream adapter that delivered the head sees no exception');
  t.same(down.events, ['reply 500 internal_error', 'done'], 'the client never sees the upstream head');
  t.ok(a.cancelled > 0, 'the attempt is given up');
  t.equal(a.released, 0);
  t.match(done.completions, [{ outcome: 'local', status: 500, reason: 'internal_error', attempts: 1, endpoint: '10.0.0.1:8080' }]);
  t.equal(stat('sluice_upstream_rq_active', { cluster: 'orders' }), 0);
});

t.test('a filter that throws in onComplete: the other filters still complete, and the exchange is done', async (t) => {
  const log: Log = [];
  const broken: Filter = { name: 'broken', global: true, onComplete: boom };
  const after = new TestFilter('after', log);
  const { env, stat } = world([broken, after]);

  const { down } = run(env, 'orders');
  const a = down.attempts[0];
  a.ready();
  t.doesNotThrow(() => a.head(204, true));
  t.same(down.events, ['respond 204|end', 'done'], 'the answer went through, and the downstream is told it is done (its next request is served)');
  t.equal(a.released, 1);
  t.match(after.completions, [{ outcome: 'success', status: 204 }], 'the filter after the broken one still hears of the end');
  t.equal(stat('sluice_downstream_rq_active', { protocol: 'http1' }), 0);
});

// ── failures → replies ───────────────────────────────────────────────────────

t.test('how an attempt failure becomes the client\'s reply', async (t) => {
  const log: Log = [];
  const done = new TestFilter('done', log);
  const { env } = world([done]);

  // no retry by the default policy on a lone endpoint: one attempt, then the reply
  const once: Array<[FailureKind, string]> = [
    ['connect_failed', 'reply 503 upstream_connect_failed'],
    ['dns_failed', 'reply 503 upstream_dns_failed'],
    ['overflow', 'reply 503 overflow'],
    ['timeout', 'reply 504 upstream_timeout'],
    ['reset', 'reply 503 upstream_reset'],
    ['protocol_error', 'reply 502 upstream_reset'],
  ];
  for (const [kind, reply] of once) {
    const { down } = run(env, 'orders');
    down.attempts[0].fail(kind);
    t.same(down.events, [reply, 'done'], kind);
    t.equal(down.attempts.length, 1, `${kind}: not retried`);
    t.match(done.completions.at(-1), { outcome: 'local_origin_error', attempts: 1 }, `${kind}: local origin`);
  }

  // a refused stream never reached the application: tried again, up to 3 attempts in all
  const refused = run(env, 'orders');
  for (let i = 0; i < 3; i++) refused.down.attempts[i].fail('refused');
  t.equal(refused.down.attempts.length, 3, 'refused: 3 attempts');
  t.same(refused.down.events, ['reply 503 upstream_reset', 'done']);
  t.match(done.completions.at(-1), { outcome: 'local_origin_error', attempts: 3 });

  // a stale keep-alive connection: an idempotent request without a body goes once more
  const stale = run(env, 'orders');
  stale.down.attempts[0].fail('stale');
  t.equal(stale.down.attempts.length, 2, 'stale: retried once');
  stale.down.attempts[1].fail('stale');
  t.equal(stale.down.attempts.length, 2, 'and only once');
  t.same(stale.down.events, ['reply 503 upstream_reset', 'done']);

  // after the response began: cut off, never a clean end and never a reply
  const cut = run(env, 'orders');
  const a = cut.down.attempts[0];
  a.ready();
  a.head(200);
  a.body('part', false);
  a.sink.onAttemptFailed(a, 'reset', true);
  t.same(cut.down.events, ['respond 200', 'write part', 'abort', 'done']);
  t.equal(cut.down.attempts.length, 1, 'not retried');
  t.match(done.completions.at(-1), { outcome: 'local_origin_error', status: 200, reason: 'upstream_reset', attempts: 1 });
});

t.test('the active gauge and the duration: a request answered within its start is never active and took no time; a held one is active until it ends', async (t) => {
  let hold = false;
  const log: Log = [];
  const gate = new TestFilter('gate', log, (ctx) => {
    if (hold) return STOP;
    ctx.reply({ status: 429, reason: 'rate_limited', body: 'rate limited\n' });
    return STOP;
  });
  const { env, stat } = world([gate]);
  const active = () => stat('sluice_downstream_rq_active', { protocol: 'http1' });

  const refused = run(env, 'orders');
  t.same(refused.down.events, ['reply 429 rate_limited', 'done']);
  t.equal(active(), 0, 'a refusal within the start never shows in the gauge');
  t.equal(gate.completions[0].durationMs, 0, 'finished in the call that began it: no second read of the clock');
  t.equal(stat('sluice_downstream_rq_total', { protocol: 'http1' }), 1, 'but it is counted as a request');

  hold = true;
  const held = run(env, 'orders');
  t.equal(active(), 1, 'a request a filter holds is active');
  await new Promise((r) => setTimeout(r, 5));
  held.x.filterReply({ status: 503, reason: 'overflow', body: '' });
  t.equal(active(), 0, 'and no longer once answered');
  t.ok(gate.completions[1].durationMs >= 4, `its duration is measured (${gate.completions[1].durationMs} ms)`);

  hold = false;
  const badTarget = new Exchange(env, new FakeDownstream(view('orders')));
  badTarget.refuse({ status: 400, reason: 'bad_request', body: 'bad\n' });
  t.equal(active(), 0, 'a request refused before the chain is never active either');
  t.equal(stat('sluice_downstream_rq_total', { protocol: 'http1' }), 3);
});
