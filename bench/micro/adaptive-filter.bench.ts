/**
 * Question: what does adaptive limiting add to an inbound call that it admits, and what does a
 * refusal cost the filter?
 *
 *   node dist/bench/micro/adaptive-filter.bench.js [--quick]
 *
 * The adaptive filter's onRequest and onComplete on one request view, with the shared interface
 * table of a real SharedState: an interface with no limit (admitted), one whose limit is never
 * reached (admitted against a limit), one at 0 (refused), and beside them an outbound call (the
 * filter is global: what every call of the other direction pays) and nothing (the loop's own cost).
 * Each task call runs BATCH calls; the table reports ns per call.
 */
import { Bench } from 'tinybench';
import { buildConfig } from '../../src/config/config';
import { CONTINUE, STOP, type Completion, type LocalReply, type RequestContext } from '../../src/exchange/filter';
import type { RequestView } from '../../src/exchange/request-view';
import { createFilters } from '../../src/filters';
import { InterfaceTable } from '../../src/filters/adaptive/interface-table';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';

const BATCH = 1000;

/** ns per call: the mean, and the median of the samples (steadier on a shared machine). */
export interface MicroResult { task: string; nsPerCall: number; nsPerCallMedian: number; rme: number; samples: number }

function view(direction: 'inbound' | 'outbound', path: string): RequestView {
  return {
    protocol: 'http1', direction, listener: 'in', source: { address: '10.0.0.1', port: 40000 }, destination: null,
    service: 'orders.default.svc.cluster.local', authority: 'orders.default.svc.cluster.local', method: 'GET', path,
    header: () => undefined, headerValues: () => [],
  };
}

function ctx(v: RequestView): RequestContext & { replied: number } {
  const c = {
    view: v, routeName: null, replied: 0,
    reply(_r: LocalReply) { c.replied++; }, resume() {}, setTarget() {}, editRequest() {}, editResponse() {}, mirror() {}, setRetryPolicy() {}, after() {}, note() {},
  };
  return c;
}

function completion(v: RequestView): Completion {
  return { view: v, routeName: null, outcome: 'success', status: 200, grpcStatus: -1, durationMs: 0.8, bytesIn: 0, bytesOut: 100, endpoint: '10.0.0.2:8080', cluster: null, attempts: 1, reason: undefined };
}

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'in', address: '127.0.0.1:15006', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: ['127.0.0.1:8080'] }],
    adaptiveLimit: { enabled: true },
  });
  const stats = new Stats(new SharedState(), new StatsRegistry().keys);
  const filter = createFilters(['adaptive'], { config: config as unknown as Record<string, unknown>, stats, clusters: new Map(), random: Math.random })[0];
  const table = new InterfaceTable(stats.memory);
  const cases: Array<[string, RequestView, number | null]> = [
    ['inbound, no limit (admitted)', view('inbound', '/api/v1/orders'), null],
    ['inbound, limit 1e6 (admitted)', view('inbound', '/api/v1/items'), 1e6],
    ['inbound, limit 0 (refused)', view('inbound', '/api/v1/report'), 0],
    ['outbound (not limited)', view('outbound', '/api/v1/orders'), null],
  ];
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true });
  bench.add('nothing (loop only)', () => { for (let i = 0; i < BATCH; i++); });
  for (const [label, v, limit] of cases) {
    const c = ctx(v);
    filter.onRequest!(c, null); // the interface's row exists from here on
    filter.onComplete!(completion(v), null);
    const row = table.rowOf(`GET ${v.path}`, 1, 64);
    if (limit !== null) table.setLimit(row, limit);
    const done = completion(v);
    const want = limit === 0 ? STOP : CONTINUE;
    bench.add(label, () => {
      for (let i = 0; i < BATCH; i++) {
        if (filter.onRequest!(c, null) !== want) throw new Error(`${label}: unexpected decision`);
        filter.onComplete!(done, null);
      }
    });
  }
  await bench.run();
  const results: MicroResult[] = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, nsPerCall: (r.latency.mean * 1e6) / BATCH, nsPerCallMedian: (r.latency.p50 * 1e6) / BATCH, rme: r.latency.rme, samples: r.latency.df + 1 };
  });
  process.stdout.write(`\n## micro: the adaptive filter, onRequest + onComplete (node ${process.version}, batch of ${BATCH} calls per sample)\n`);
  process.stdout.write(`${'task'.padEnd(40)}${'ns/call'.padStart(10)}${'±%'.padStart(8)}${'median'.padStart(10)}\n`);
  for (const r of results) process.stdout.write(`${r.task.padEnd(40)}${r.nsPerCall.toFixed(1).padStart(10)}${r.rme.toFixed(1).padStart(8)}${r.nsPerCallMedian.toFixed(1).padStart(10)}\n`);
  return results;
}

if (require.main === module) main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(1); });
