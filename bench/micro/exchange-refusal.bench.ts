/**
 * Question: what does the exchange cost a request that a filter refuses at once (a rate limit
 * that refuses everything), from its construction to its end (stats, the duration histogram)?
 *
 *   node dist/bench/micro/exchange-refusal.bench.js [--quick]
 *
 * The real Exchange, Router, Stats (over shared memory) and ratelimit filter; the downstream side
 * records nothing but the status, so the number is the exchange's and the filter's own: no
 * decoding, no reply bytes, no socket. Each sample runs BATCH requests; ns per request.
 */
import { Bench } from 'tinybench';
import { buildConfig } from '../../src/config/config';
import { Exchange, type Attempt, type Downstream, type ExchangeEnv } from '../../src/exchange/exchange';
import { classifyHttpStatus, type LocalReply } from '../../src/exchange/outcome';
import type { RequestView } from '../../src/exchange/request-view';
import { Router } from '../../src/exchange/router';
import { filterSeries } from '../../src/filters';
import { RATELIMIT_MODULE } from '../../src/filters/ratelimit';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry, series } from '../../src/stats/stats';
import { UpstreamPools } from '../../src/upstream/upstream-pools';
import { CompiledConfig } from '../../src/worker/runtime';
import type { MicroResult } from './ratelimit.bench';

const BATCH = 1000;

const BASE = {
  admin: { address: '127.0.0.1:0' },
  listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'orders' }],
  clusters: [{ name: 'orders', endpoints: ['10.0.0.1:8080'] }],
};

function env(): ExchangeEnv {
  const config = buildConfig({ ...BASE, rateLimits: [{ name: 'all', match: { listener: 'app' }, requestsPerMinute: 1, burst: 1 }] });
  const shared = new SharedState();
  const registry = new StatsRegistry();
  for (const c of config.clusters) registry.addCluster(c.name);
  for (const l of config.listeners) registry.addListener(l.name);
  for (const f of filterSeries(config)) registry.add(series(f.name, f.labels));
  const stats = new Stats(shared, registry.keys);
  // the worker's compiled config without filters of its own: the chain is the ratelimit filter below
  const compiled = new CompiledConfig(1, buildConfig({ ...BASE, filters: [] }), stats, new UpstreamPools(() => stats), null);
  const raw = config as unknown as Readonly<Record<string, unknown>>;
  const data = { ratelimit: RATELIMIT_MODULE.main!(shared.memory).publish(raw) };
  const rl = RATELIMIT_MODULE.create({ config: raw, stats, clusters: compiled.clusters, random: Math.random, memory: shared.memory, data });
  const router = new Router(config.routes, compiled.clusters, new Map(config.listeners.map((l) => [l.name, l])), config.http.requestTimeoutMs, [rl]);
  return {
    config, stats, router, accessLog: compiled.accessLog, pools: compiled.pools, rpcStats: null,
    protocol: (p) => compiled.protocol(p), passthrough: (v) => compiled.passthrough(v), upstreamTls: (c, v) => compiled.upstreamTls(c, v),
  };
}

const view: RequestView = {
  protocol: 'http1', direction: 'outbound', listener: 'app', source: { address: '10.9.9.9', port: 40000 }, destination: null,
  service: 'orders', authority: 'orders', method: 'GET', path: '/', header: () => undefined, headerValues: () => [],
};

let refused = 0;
/** The bucket's one token goes to the first request (an attempt that never answers); every other one is refused. */
const idle: Attempt = { start() {}, write: () => true, trailers() {}, consumed() {}, pauseResponse() {}, resumeResponse() {}, cancel() {}, release() {} };
const down: Downstream = {
  view, requestEnded: true, request: null, upstreams: { open: () => idle },
  consumed() {}, pauseRequest() {}, resumeRequest() {}, respond() {}, write: () => true, trailers() {}, abort() {},
  localReply(r: LocalReply) { if (r.status === 429) refused++; return r.status; },
  done() {}, statusClass: (s) => (s / 100) | 0, classify: classifyHttpStatus,
};

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true });
  const e = env();
  new Exchange(e, down).start();
  const before = refused;
  new Exchange(e, down).start();
  if (refused !== before + 1) throw new Error('the second request was not refused');
  bench.add('a request refused by a rate limit, start to end', () => {
    for (let i = 0; i < BATCH; i++) new Exchange(e, down).start();
  });
  await bench.run();
  const results: MicroResult[] = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, nsPerRequest: (r.latency.mean * 1e6) / BATCH, rme: r.latency.rme, samples: r.latency.df + 1 };
  });
  process.stdout.write(`\n## micro: the exchange of a refused request (node ${process.version}, batch of ${BATCH} per sample, ${refused} refusals)\n`);
  process.stdout.write(`${'task'.padEnd(52)}${'ns/req'.padStart(10)}${'±%'.padStart(8)}\n`);
  for (const r of results) process.stdout.write(`${r.task.padEnd(52)}${r.nsPerRequest.toFixed(0).padStart(10)}${r.rme.toFixed(1).padStart(8)}\n`);
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
