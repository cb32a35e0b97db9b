/**
 * Question: what does the ratelimit filter add to a request, on the worker that decides it?
 *
 *   node dist/bench/micro/ratelimit.bench.js [--quick]
 *
 * The filter as a worker runs it, over real shared memory and real stats: two rules that do not
 * match the request (a listener compare each: what every other request pays once rules exist),
 * one rule that matches and never refuses (one compare-and-swap on its bucket and a counter), one
 * rule keyed by a header (the key's hash and its slot first), and one rule that refuses (the
 * decision, the counter and the reply, made once per retry-after value). The request context
 * records nothing; its start time (which the exchange reads once per request) is read once per
 * sample. Each sample runs BATCH requests; the table reports ns per request.
 */
import { Bench } from 'tinybench';
import { buildConfig } from '../../src/config/config';
import { CONTINUE, STOP, type LocalReply, type RequestContext } from '../../src/exchange/filter';
import type { RequestView } from '../../src/exchange/request-view';
import { RATELIMIT_MODULE } from '../../src/filters/ratelimit';
import { filterSeries } from '../../src/filters';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry, series } from '../../src/stats/stats';

const BATCH = 1000;

export interface MicroResult { task: string; nsPerRequest: number; rme: number; samples: number }

function filterFor(rules: unknown[]) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }, { name: 'other', address: '127.0.0.1:9002', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    rateLimits: rules,
  }) as unknown as Readonly<Record<string, unknown>>;
  const shared = new SharedState();
  const registry = new StatsRegistry();
  for (const f of filterSeries(config as never)) registry.add(series(f.name, f.labels));
  const stats = new Stats(shared, registry.keys);
  const data = { ratelimit: RATELIMIT_MODULE.main!(shared.memory).publish(config) };
  return RATELIMIT_MODULE.create({ config, stats, clusters: new Map(), random: Math.random, memory: shared.memory, data });
}

const headers: Record<string, string> = { 'x-user': 'user-1234', host: 'orders' };
const view: RequestView = {
  protocol: 'http1', direction: 'outbound', listener: 'app', source: { address: '10.0.0.7', port: 40000 }, destination: null,
  service: 'orders', authority: 'orders', method: 'GET', path: '/api/v1/orders', header: (n) => headers[n], headerValues: (n) => (headers[n] === undefined ? [] : [headers[n]]),
};
let replies = 0;
/** The exchange gives the filter the request's start time (read once per request, by the exchange, not the filter). */
const ctx: RequestContext & { startMs: number } = {
  view, routeName: 'r', startMs: performance.now(), reply: (_r: LocalReply) => { replies++; }, resume: () => {}, setTarget: () => {}, editRequest: () => {}, editResponse: () => {},
  mirror: () => {}, setRetryPolicy: () => {}, after: () => {}, note: () => {},
};

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true });
  const never = { requestsPerSecond: 1e9, burst: 1e9 };
  const cases: Array<[string, unknown[], number]> = [
    ['two rules, neither matches', [{ name: 'a', match: { listener: 'other' }, ...never }, { name: 'b', match: { direction: 'inbound' }, ...never }], CONTINUE],
    ['one rule matches, admits', [{ name: 'a', match: { service: 'orders' }, ...never }], CONTINUE],
    ['one rule keyed by a header, admits', [{ name: 'a', match: { service: 'orders' }, key: { header: 'x-user' }, ...never }], CONTINUE],
    ['one rule matches, refuses', [{ name: 'a', match: { service: 'orders' }, requestsPerMinute: 1, burst: 1 }], STOP],
  ];
  for (const [label, rules, expect] of cases) {
    const f = filterFor(rules);
    f.onRequest!(ctx, null);
    if (f.onRequest!(ctx, null) !== expect) throw new Error(`${label}: not the expected decision`);
    bench.add(label, () => {
      ctx.startMs = performance.now();
      for (let i = 0; i < BATCH; i++) f.onRequest!(ctx, null);
    });
  }
  await bench.run();
  const results: MicroResult[] = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, nsPerRequest: (r.latency.mean * 1e6) / BATCH, rme: r.latency.rme, samples: r.latency.df + 1 };
  });
  process.stdout.write(`\n## micro: the ratelimit filter per request (node ${process.version}, batch of ${BATCH} per sample, ${replies} refusals)\n`);
  process.stdout.write(`${'task'.padEnd(44)}${'ns/req'.padStart(10)}${'±%'.padStart(8)}\n`);
  for (const r of results) process.stdout.write(`${r.task.padEnd(44)}${r.nsPerRequest.toFixed(0).padStart(10)}${r.rme.toFixed(1).padStart(8)}\n`);
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
