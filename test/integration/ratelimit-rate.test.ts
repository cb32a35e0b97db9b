/**
 * Rate limits hold for the whole sidecar, whatever the number of workers: wrk offers far more
 * than the limit over many connections, and the upstream counts what reached it. The admitted
 * rate, (hits − burst) over the time between the first and the last hit, stays within 5% of the
 * limit with 1 and with 4 workers; per-key limits give each key its own rate.
 *
 * Each burst is a third of a second's worth: a bucket holds no more than its burst, so a worker
 * the machine leaves without CPU for longer than that (this machine is shared) admits less over
 * the run, as a token bucket should. A third of a second absorbs the pauses seen here.
 */
import t from 'tap';
import { h2Upstream, httpUpstream, run, startSluice, stats } from '../helpers/harness';

interface Counting { port: number; hits: Map<string, number[]>; close(): Promise<void> }

async function counting(): Promise<Counting> {
  const hits = new Map<string, number[]>();
  const up = await httpUpstream((req, res) => {
    const user = String(req.headers['x-user'] ?? '');
    let list = hits.get(user);
    if (!list) hits.set(user, (list = []));
    list.push(performance.now());
    req.resume();
    res.setHeader('content-length', 3);
    res.end('ok\n');
  });
  return { port: up.port, hits, close: () => up.close() };
}

function config(upstream: number, threads: number, rule: Record<string, unknown>) {
  return {
    workers: { threads },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${upstream}`] }],
    rateLimits: [rule],
  };
}

/** wrk's count of 429s ("Non-2xx or 3xx responses"), and its request total. */
function wrkCounts(out: string): { requests: number; non2xx: number } {
  return {
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

/** The admitted rate from the upstream's own clock: hits past the burst over the time they took. */
function admittedRate(times: readonly number[], burst: number): number {
  const span = (times[times.length - 1] - times[0]) / 1000;
  return (times.length - burst) / span;
}

for (const threads of [1, 4]) {
  t.test(`${threads} worker(s): the admitted rate is the limit within 5%`, async (t) => {
    const up = await counting();
    const s = await startSluice(config(up.port, threads, { name: 'all', requestsPerSecond: 300, burst: 100 }));
    t.teardown(async () => { await s.stop(); await up.close(); });
    const w = await run('wrk', ['-t', '2', '-c', '32', '-d', '5s', '--timeout', '5s', `http://127.0.0.1:${s.port('app')}/`], 30_000);
    t.equal(w.code, 0, w.stderr);
    const times = up.hits.get('') ?? [];
    const rate = admittedRate(times, 100);
    const { requests, non2xx } = wrkCounts(w.stdout);
    t.ok(non2xx > requests / 2, `offered far above the limit: ${requests} requests, ${non2xx} refused`);
    t.ok(Math.abs(rate - 300) / 300 <= 0.05, `admitted ${times.length} in ${((times[times.length - 1] - times[0]) / 1000).toFixed(2)} s: ${rate.toFixed(1)}/s against 300/s`);
    const st = await stats(s.admin);
    // a request admitted as wrk stopped may have lost its client before it went upstream: at most one per connection
    const admitted = st.get('sluice_ratelimit_admitted_total{rule="all"}') ?? 0;
    t.ok(admitted >= times.length && admitted <= times.length + 32, `the admitted count (${admitted}) is what reached the upstream (${times.length}), less requests in flight at wrk's end`);
    // wrk stops counting with requests still in flight: at most one per connection
    const refused = st.get('sluice_ratelimit_refused_total{rule="all"}') ?? 0;
    t.ok(refused >= non2xx && refused <= non2xx + 32, `the refusals counted (${refused}) are the 429s wrk saw (${non2xx})`);
  });
}

t.test('per key: each key gets its own rate, under load from both at once', async (t) => {
  const up = await counting();
  const s = await startSluice(config(up.port, 2, { name: 'user', requestsPerSecond: 100, burst: 33, key: { header: 'x-user' }, maxKeys: 16 }));
  t.teardown(async () => { await s.stop(); await up.close(); });
  const url = `http://127.0.0.1:${s.port('app')}/`;
  const load = (user: string) => run('wrk', ['-t', '1', '-c', '8', '-d', '4s', '--timeout', '5s', '-H', `x-user: ${user}`, url], 30_000);
  const [a, b] = await Promise.all([load('alice'), load('bob')]);
  t.equal(a.code, 0, a.stderr);
  t.equal(b.code, 0, b.stderr);
  for (const user of ['alice', 'bob']) {
    const times = up.hits.get(user) ?? [];
    const rate = admittedRate(times, 33);
    t.ok(Math.abs(rate - 100) / 100 <= 0.05, `${user}: ${times.length} admitted, ${rate.toFixed(1)}/s against 100/s`);
  }
});

t.test('HTTP/2: many streams on few connections, 4 workers: the same limit', async (t) => {
  const times: number[] = [];
  const up = await h2Upstream((stream) => {
    times.push(performance.now());
    stream.resume();
    stream.on('end', () => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end('ok\n'); } });
  });
  const s = await startSluice(config(up.port, 4, { name: 'all', requestsPerSecond: 200, burst: 66 }));
  t.teardown(async () => { await s.stop(); await up.close(); });
  const h = await run('h2load', ['-c', '4', '-m', '20', '-D', '4', `http://127.0.0.1:${s.port('app')}/`], 30_000);
  t.equal(h.code, 0, h.stderr);
  const m = /status codes: (\d+) 2xx, \d+ 3xx, (\d+) 4xx/.exec(h.stdout);
  t.ok(m && Number(m[2]) > Number(m[1]), `far above the limit: ${m?.[0]}`);
  const rate = admittedRate(times, 66);
  t.ok(Math.abs(rate - 200) / 200 <= 0.05, `admitted ${times.length}: ${rate.toFixed(1)}/s against 200/s`);
});
