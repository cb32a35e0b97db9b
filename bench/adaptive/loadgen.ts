/**
 * An open-loop load generator: calls arrive at a fixed rate per path whatever happened to the
 * ones before (a closed loop would slow down with the server and hide its collapse).
 *
 *   node dist/bench/adaptive/loadgen.js '<json LoadSpec>'
 *
 * Prints one JSON line per bucket (`{"t": ms, "paths": {path: {sent, ok, refused, failed}}}`)
 * and a last line `{"done": true, "paths": {path: Summary}}` over the calls sent after `measureFromMs`.
 * Bounded: it sends for `durationMs`, then waits at most `timeoutMs` for what is in flight.
 */
import http from 'node:http';

export interface LoadSpec {
  url: string;
  rates: Record<string, number>;
  durationMs: number;
  /** Calls sent before this are not in the summary (the controller converging). */
  measureFromMs: number;
  timeoutMs: number;
  bucketMs: number;
}

export interface Summary {
  sent: number;
  ok: number;
  /** 503 overloaded (or any 503 with x-sluice-reason). */
  refused: number;
  /** Timed out, reset, or any other status. */
  failed: number;
  successRate: number;
  p50Ms: number;
  p99Ms: number;
}

export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function main(spec: LoadSpec): void {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const url = new URL(spec.url);
  const paths = Object.keys(spec.rates);
  type Cell = { sent: number; ok: number; refused: number; failed: number };
  const empty = (): Cell => ({ sent: 0, ok: 0, refused: 0, failed: 0 });
  let bucket: Record<string, Cell> = Object.fromEntries(paths.map((p) => [p, empty()]));
  const measured: Record<string, Cell & { lat: number[] }> = Object.fromEntries(paths.map((p) => [p, { ...empty(), lat: [] }]));
  const t0 = performance.now();
  let inflight = 0;
  const send = (p: string) => {
    const start = performance.now();
    const counted = start - t0 >= spec.measureFromMs;
    const cellOf = () => bucket[p];
    cellOf().sent++;
    if (counted) measured[p].sent++;
    inflight++;
    let finished = false;
    const finish = (kind: 'ok' | 'refused' | 'failed') => {
      if (finished) return;
      finished = true;
      inflight--;
      cellOf()[kind]++;
      if (counted) {
        measured[p][kind]++;
        if (kind === 'ok') measured[p].lat.push(performance.now() - start);
      }
    };
    const req = http.get({ host: url.hostname, port: url.port, path: p, agent, timeout: spec.timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => finish(res.statusCode === 200 ? 'ok' : res.statusCode === 503 && res.headers['x-sluice-reason'] ? 'refused' : 'failed'));
      res.on('error', () => finish('failed'));
    });
    req.on('timeout', () => { req.destroy(); finish('failed'); });
    req.on('error', () => finish('failed'));
  };
  const due: Record<string, number> = Object.fromEntries(paths.map((p) => [p, 0]));
  let last = t0;
  const tick = setInterval(() => {
    const now = performance.now();
    if (now - t0 >= spec.durationMs) return;
    for (const p of paths) {
      due[p] += (spec.rates[p] * (now - last)) / 1000;
      while (due[p] >= 1) { due[p]--; send(p); }
    }
    last = now;
  }, 2);
  const flush = setInterval(() => {
    process.stdout.write(JSON.stringify({ t: Math.round(performance.now() - t0), paths: bucket }) + '\n');
    bucket = Object.fromEntries(paths.map((p) => [p, empty()]));
  }, spec.bucketMs);
  const end = () => {
    clearInterval(tick);
    clearInterval(flush);
    const out: Record<string, Summary> = {};
    for (const p of paths) {
      const m = measured[p];
      const lat = m.lat.sort((a, b) => a - b);
      out[p] = {
        sent: m.sent, ok: m.ok, refused: m.refused, failed: m.failed + (m.sent - m.ok - m.refused - m.failed),
        successRate: m.sent ? m.ok / m.sent : NaN, p50Ms: percentile(lat, 0.5), p99Ms: percentile(lat, 0.99),
      };
    }
    process.stdout.write(JSON.stringify({ done: true, paths: out }) + '\n');
    agent.destroy();
    process.exit(0);
  };
  setTimeout(() => {
    const waitUntil = performance.now() + spec.timeoutMs + 500;
    const poll = setInterval(() => {
      if (inflight === 0 || performance.now() > waitUntil) { clearInterval(poll); end(); }
    }, 20);
  }, spec.durationMs);
}

if (require.main === module) main(JSON.parse(process.argv[2]) as LoadSpec);
