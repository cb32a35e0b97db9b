/**
 * Adaptive limiting under overload: an application with a cheap interface (~0.2 ms of CPU) and
 * an expensive one (~12 ms), on one core, behind Sluice; offered about 3× what the core serves,
 * on both interfaces; with adaptive limiting on, then off. Before that, the same mix at a tenth
 * of the rate gives each interface's unloaded p99.
 *
 *   node dist/bench/adaptive/overload.js [--quick] [--svg FILE] [--out FILE]
 *
 * Prints the numbers, writes JSON (bench/results/adaptive-overload.json) and the controller over
 * time as an SVG (docs/adaptive-overload.svg): CPU usage, the expensive interface's limit, and the
 * admitted and refused rates of each interface, on and off.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { commit } from '../lib/run-info';
import { killAllStartedSync } from '../lib/procs';
import type { Summary } from './loadgen';
import { cgroupUsageSampler, removeStaleCgroups, runLoad, startApp, startProxy, type Bucket, type Sample } from './scenario';

const ROOT = path.resolve(__dirname, '..', '..', '..');

export interface OverloadOptions {
  cheapMs: number;
  costlyMs: number;
  /** Offered calls per second. */
  cheapRate: number;
  costlyRate: number;
  /** Seconds of each loaded phase, and how much of its start is left out of the summary. */
  onSeconds: number;
  offSeconds: number;
  warmupSeconds: number;
  baselineSeconds: number;
  timeoutMs: number;
  adaptive: Record<string, unknown>;
}

export const DEFAULTS: OverloadOptions = {
  cheapMs: 0.2, costlyMs: 12, cheapRate: 400, costlyRate: 220,
  onSeconds: 16, offSeconds: 10, warmupSeconds: 5, baselineSeconds: 8, timeoutMs: 2000,
  adaptive: { targetUtilization: 0.7, latencyTolerance: 2 },
};

export interface Phase { summary: Record<string, Summary>; buckets: Bucket[]; samples: Sample[]; usage?: Array<{ t: number; usage: number }> }
export interface OverloadResult {
  options: OverloadOptions; measuredBy: string; baseline: Phase; on: Phase; off: Phase;
  /**
   * The application's mean CPU usage (of its one core) over the run without the limiter, offered
   * about 3 cores of work: near 1 when it had its core; well under 1 when other processes of a
   * shared machine took the core, and then no latency it showed is the limiter's doing. NaN
   * without a cgroup to read.
   */
  offCoreShare: number;
}

export async function runOverload(o: OverloadOptions): Promise<OverloadResult> {
  const name = `sluice-adaptive-${process.pid}`;
  removeStaleCgroups('sluice-adaptive-');
  const app = await startApp(name, o.cheapMs, o.costlyMs);
  try {
    const rates = (k: number) => ({ '/cheap': o.cheapRate * k, '/costly': o.costlyRate * k });
    const spec = (k: number, seconds: number, warmup: number) => ({
      rates: rates(k), durationMs: seconds * 1000, measureFromMs: warmup * 1000, timeoutMs: o.timeoutMs, bucketMs: 250,
    });
    let proxy = await startProxy(app, o.adaptive);
    let baseline: Phase;
    let on: Phase;
    try {
      baseline = await runLoad({ url: `http://127.0.0.1:${proxy.port}`, ...spec(0.1, o.baselineSeconds, 1) }, proxy.admin);
      on = await runLoad({ url: `http://127.0.0.1:${proxy.port}`, ...spec(1, o.onSeconds, o.warmupSeconds) }, proxy.admin);
    } finally {
      await proxy.stop();
    }
    // the application's queue is empty again before the next run
    await new Promise((r) => setTimeout(r, 500));
    proxy = await startProxy(app, null);
    let off: Phase;
    try {
      const usage = cgroupUsageSampler(app.cgroup, 250);
      off = await runLoad({ url: `http://127.0.0.1:${proxy.port}`, ...spec(1, o.offSeconds, o.warmupSeconds / 2) }, null);
      off.usage = usage.stop();
    } finally {
      await proxy.stop();
    }
    const u = (off.usage ?? []).slice(2).map((x) => x.usage);
    const offCoreShare = u.length ? u.reduce((a, b) => a + b, 0) / u.length : NaN;
    return { options: o, measuredBy: app.cgroup ? `cgroup ${app.cgroup}` : 'host /proc/stat', baseline, on, off, offCoreShare };
  } finally {
    await app.stop();
  }
}

// ── the picture ─────────────────────────────────────────────────────────────

/** A number for the report; the load generator sends NaN (no call answered) as null. */
const fx = (v: number | null, d = 1) => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(d));

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

interface Series { label: string; color: string; points: Array<[number, number]>; dash?: boolean }

/** One panel: a time axis in seconds, a value axis from 0 to `max`, lines. */
function panel(x0: number, y0: number, w: number, h: number, title: string, unit: string, max: number, tMax: number, series: Series[]): string {
  const X = (t: number) => x0 + (t / tMax) * w;
  const Y = (v: number) => y0 + h - (Math.min(v, max) / max) * h;
  let s = `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fff" stroke="#999"/>`;
  s += `<text x="${x0}" y="${y0 - 6}" font-size="12" font-weight="bold">${esc(title)}<tspan font-weight="normal" fill="#555">  (${esc(unit)})</tspan></text>`;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    s += `<line x1="${x0}" x2="${x0 + w}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/>`;
    s += `<text x="${x0 - 4}" y="${Y(v) + 4}" font-size="10" text-anchor="end">${Number(v.toFixed(v < 10 ? 2 : 0))}</text>`;
  }
  for (let t = 0; t <= tMax; t += 2) s += `<text x="${X(t)}" y="${y0 + h + 12}" font-size="10" text-anchor="middle">${t}s</text>`;
  series.forEach((se, i) => {
    if (se.points.length > 1) {
      const d = se.points.map(([t, v], j) => `${j ? 'L' : 'M'}${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join(' ');
      s += `<path d="${d}" fill="none" stroke="${se.color}" stroke-width="1.6"${se.dash ? ' stroke-dasharray="4 3"' : ''}/>`;
    }
    s += `<rect x="${x0 + w + 10}" y="${y0 + 4 + i * 16}" width="12" height="3" fill="${se.color}"/>`;
    s += `<text x="${x0 + w + 26}" y="${y0 + 9 + i * 16}" font-size="11">${esc(se.label)}</text>`;
  });
  return s;
}

const rateOf = (b: Bucket[], p: string, k: 'ok' | 'refused' | 'failed', bucketMs = 250) => b.map((x) => [x.t / 1000, ((x.paths[p]?.[k] ?? 0) * 1000) / bucketMs] as [number, number]);

export function svg(r: OverloadResult): string {
  const W = 1060;
  const pw = 330;
  const ph = 130;
  const tMax = Math.max(r.options.onSeconds, r.options.offSeconds) + 2;
  const rateMax = Math.ceil(Math.max(r.options.cheapRate, r.options.costlyRate) * 1.1 / 50) * 50;
  const on = r.on;
  const off = r.off;
  const target = Number((r.options.adaptive.targetUtilization as number | undefined) ?? 0.8);
  const onUsage = on.samples.filter((s) => s.usage !== null).map((s) => [s.t / 1000, s.usage!] as [number, number]);
  const limit = on.samples.map((s) => [s.t / 1000, s.paths['/costly']?.limit ?? (s.paths['/costly']?.inflight ?? 0)] as [number, number]);
  const limitMax = Math.ceil(Math.max(4, ...limit.map(([, v]) => v)) * 1.1);
  let body = '';
  const cols = [50, 50 + pw + 190];
  const rows = [40, 40 + ph + 50, 40 + 2 * (ph + 50)];
  body += panel(cols[0], rows[0], pw, ph, 'ON: application CPU, smoothed', 'share of 1 core', 1.2, tMax, [
    { label: 'usage', color: '#d62728', points: onUsage },
    { label: `target ${target}`, color: '#999', points: [[0, target], [tMax, target]], dash: true },
  ]);
  body += panel(cols[1], rows[0], pw, ph, 'OFF: application CPU', 'share of 1 core', 1.2, tMax, [
    { label: 'usage', color: '#d62728', points: (off.usage ?? []).map((u) => [u.t / 1000, u.usage] as [number, number]) },
  ]);
  body += panel(cols[0], rows[1], pw, ph, 'ON: admitted concurrency of /costly', 'calls', limitMax, tMax, [
    { label: 'limit (none: in flight)', color: '#1f77b4', points: limit },
  ]);
  body += panel(cols[1], rows[1], pw, ph, 'OFF: failed calls (timeouts)', 'per s', rateMax, tMax, [
    { label: '/cheap failed', color: '#2ca02c', points: rateOf(off.buckets, '/cheap', 'failed'), dash: true },
    { label: '/costly failed', color: '#ff7f0e', points: rateOf(off.buckets, '/costly', 'failed'), dash: true },
  ]);
  body += panel(cols[0], rows[2], pw, ph, 'ON: answered and refused per second', 'per s', rateMax, tMax, [
    { label: '/cheap ok', color: '#2ca02c', points: rateOf(on.buckets, '/cheap', 'ok') },
    { label: '/costly ok', color: '#ff7f0e', points: rateOf(on.buckets, '/costly', 'ok') },
    { label: '/costly refused', color: '#9467bd', points: rateOf(on.buckets, '/costly', 'refused'), dash: true },
    { label: '/cheap refused', color: '#8c564b', points: rateOf(on.buckets, '/cheap', 'refused'), dash: true },
  ]);
  body += panel(cols[1], rows[2], pw, ph, 'OFF: answered per second', 'per s', rateMax, tMax, [
    { label: '/cheap ok', color: '#2ca02c', points: rateOf(off.buckets, '/cheap', 'ok') },
    { label: '/costly ok', color: '#ff7f0e', points: rateOf(off.buckets, '/costly', 'ok') },
  ]);
  const f = (s: Summary) => `${fx(s.successRate * 100)}% ok, p99 ${fx(s.p99Ms)} ms`;
  const caption = `cheap: unloaded p99 ${fx(r.baseline.summary['/cheap'].p99Ms)} ms | ON ${f(on.summary['/cheap'])} | OFF ${f(off.summary['/cheap'])}`
    + ` — costly: ON ${f(on.summary['/costly'])}, ${on.summary['/costly'].refused} refused | OFF ${f(off.summary['/costly'])}`;
  const H = rows[2] + ph + 50;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`
    + `<rect width="100%" height="100%" fill="#fafafa"/>${body}`
    + `<text x="10" y="${H - 12}" font-size="10.5">${esc(caption)}</text></svg>\n`;
}

function report(r: OverloadResult): string {
  const line = (name: string, s: Summary) => `  ${name.padEnd(8)} sent ${String(s.sent).padStart(6)}  ok ${fx(s.successRate * 100, 2).padStart(6)}%  refused ${String(s.refused).padStart(6)}  failed ${String(s.failed).padStart(6)}  p50 ${fx(s.p50Ms, 2).padStart(8)} ms  p99 ${fx(s.p99Ms, 2).padStart(8)} ms`;
  let out = `node ${process.version}, ${os.availableParallelism()} CPUs, commit ${commit()}; application CPU measured by ${r.measuredBy}\n`
    + `the application's share of its core while saturated (off): ${fx(r.offCoreShare, 2)}\n`;
  for (const [name, phase] of [['unloaded (0.1x)', r.baseline], ['adaptive ON', r.on], ['adaptive OFF', r.off]] as const) {
    out += `${name}\n${line('/cheap', phase.summary['/cheap'])}\n${line('/costly', phase.summary['/costly'])}\n`;
  }
  return out;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const svgFile = args.includes('--svg') ? args[args.indexOf('--svg') + 1] : path.join(ROOT, 'docs', 'adaptive-overload.svg');
  const out = args.includes('--out') ? args[args.indexOf('--out') + 1] : path.join(ROOT, 'bench', 'results', 'adaptive-overload.json');
  const o: OverloadOptions = quick ? { ...DEFAULTS, onSeconds: 10, offSeconds: 8, warmupSeconds: 4, baselineSeconds: 5 } : DEFAULTS;
  process.on('SIGINT', () => { killAllStartedSync(); process.exit(130); });
  const r = await runOverload(o);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ node: process.version, cpus: os.availableParallelism(), commit: commit(), ...r }, null, 1));
  process.stdout.write(report(r));
  writeFileSync(svgFile, svg(r));
  process.stdout.write(`wrote ${out} and ${svgFile}\n`);
}

if (require.main === module) main().catch((err) => { killAllStartedSync(); console.error(err); process.exit(1); });
