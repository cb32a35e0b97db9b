/**
 * Prints a results file as the Markdown tables of docs/benchmarks.md.
 *
 *   node dist/bench/report.js [bench/results/latest.json] [bench/results/micro-latest.json]
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Report, Row } from './load';
import type { MicroResult } from './micro/http1-decode.bench';

const RESULTS = path.resolve(__dirname, '..', '..', 'bench', 'results');

const f = (v: number | undefined, d: number) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));

function loadRow(r: Row): string {
  if (r.error) return `| ${r.target} | error: ${r.error.split('\n')[0].replace(/\|/g, '\\|')} | | | | | | |`;
  const cpu = r.target === 'direct' ? `(${f(r.cpuUsPerReq, 1)} upstream)` : f(r.cpuUsPerReq, 1);
  const ratio = r.target === 'direct' ? '1' : f(r.rpsRatio, 2);
  const diff = r.target === 'direct' ? '0' : `+${f(r.p50DiffMs, 3)}`;
  return `| ${r.target} | ${f(r.rps, 0)} | ${f(r.p50Ms, 3)} | ${f(r.p99Ms, 3)} | ${cpu} | ${ratio} | ${diff} | ${(r.non2xx ?? 0) + (r.errors ?? 0)} |`;
}

export function markdown(report: Report, micro?: { date: string; 'http1-decode': MicroResult[] }): string {
  const out: string[] = [];
  out.push(`Run: ${report.date.slice(0, 16).replace('T', ' ')} UTC, commit \`${report.commit}\`, node ${report.node}, ` +
    `${report.machine}; load average at start ${report.loadAverageAtStart.join(' / ')}; Sluice \`workers.threads: ${report.sluiceThreads}\`` +
    `${report.quick ? ' (--quick)' : ''}.`, '');
  for (const sc of ['http1-keepalive', 'http1-single-connection', 'http2']) {
    const rows = report.rows.filter((r) => r.scenario === sc);
    if (!rows.length) continue;
    out.push(`**${sc}**`, '', '| target | req/s | p50 ms | p99 ms | CPU µs/req | × direct | p50 vs direct, ms | non-2xx + errors |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of rows) out.push(loadRow(r));
    out.push('');
  }
  const newcx = report.rows.filter((r) => r.scenario === 'http1-new-connection');
  if (newcx.length) {
    const la = report.loadAverageByScenario?.['http1-new-connection'];
    out.push(`**http1-new-connection** (one request per connection, \`Connection: close\`${la ? `; load average ${la.join(' / ')}` : ''}; ` +
      `system calls counted with ${report.syscallTool ?? 'nothing'})`, '',
    '| target | conn/s | p50 ms | CPU µs/conn | × nginx | × haproxy | syscalls/conn | main thread µs/conn | main thread syscalls/conn |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of newcx) {
      if (r.error) { out.push(`| ${r.target} | error: ${r.error.split('\n')[0].replace(/\|/g, '\\|')} | | | | | | | |`); continue; }
      const cpu = r.target === 'direct' ? `(${f(r.cpuUsPerReq, 1)} upstream)` : f(r.cpuUsPerReq, 1);
      out.push(`| ${r.target} | ${f(r.rps, 0)} | ${f(r.p50Ms, 3)} | ${cpu} | ${f(r.cpuVsNginx, 2)} | ${f(r.cpuVsHaproxy, 2)} | ${f(r.syscallsPerConn, 1)} | ${f(r.mainCpuUsPerConn, 1)} | ${f(r.mainSyscallsPerConn, 1)} |`);
    }
    out.push('');
  }
  const mem = report.rows.filter((r) => r.scenario === 'memory-idle');
  if (mem.length) {
    out.push('**memory-idle**', '', '| target | idle connections | RSS before | RSS after | KiB per connection |', '| --- | ---: | ---: | ---: | ---: |');
    for (const r of mem) {
      out.push(r.error ? `| ${r.target} | error: ${r.error.split('\n')[0]} | | | |`
        : `| ${r.target} | ${r.connections} | ${r.rssBeforeKiB} KiB | ${r.rssAfterKiB} KiB | ${f(r.kibPerConnection, 2)} |`);
    }
    out.push('');
  }
  if (micro && Array.isArray(micro['http1-decode'])) {
    out.push(`**micro: HTTP/1 request decoding** (${micro.date.slice(0, 16).replace('T', ' ')} UTC)`, '', '| message | parser | ns per message | ± % |', '| --- | --- | ---: | ---: |');
    for (const m of micro['http1-decode']) {
      const [msg, parser] = m.task.split(' | ');
      out.push(`| ${msg} | ${parser} | ${f(m.nsPerMessage, 0)} | ${f(m.rme, 1)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

if (require.main === module) {
  const file = process.argv[2] ?? path.join(RESULTS, 'latest.json');
  const microFile = process.argv[3] ?? path.join(RESULTS, 'micro-latest.json');
  const report = JSON.parse(readFileSync(file, 'utf8')) as Report;
  const micro = existsSync(microFile) ? JSON.parse(readFileSync(microFile, 'utf8')) : undefined;
  process.stdout.write(`${markdown(report, micro)}\n`);
}
