/**
 * Question: what does the lazy Dubbo request view cost, against decoding the whole Hessian2 body with
 * hessian.js (the old way), for a typical small call and a large one?
 *
 *   node dist/bench/micro/dubbo-decode.bench.js [--quick]
 *
 * Frames: a ~190-byte call (one String argument, five attachments) and a ~6.7 KB call (a list of 74
 * POJOs, a map, strings; the same attachments). Tasks per frame, each from the raw frame bytes:
 *   - lazy: header + leading strings   decodeFrame + DubboRequest.fromFrame, read service/version/method
 *   - lazy: + attachments (group)      the above, then .group (steps over the arguments, reads the map)
 *   - lazy: + arguments (hessian.js)   the above, then .arguments() (full decode of the arguments only)
 *   - full: hessian.js decode of body  decodeFrame + hessian.js reading every value of the body
 * Each task call handles BATCH frames, so timer overhead is negligible. The table reports µs per frame twice:
 * wall clock, and process CPU time (user + system, a tinybench run with a CPU clock), which is steadier
 * when other work shares the machine.
 * DESIGN.md quotes the prototype: 2.5 µs vs 4 µs (small), 20 µs vs 280 µs (large).
 */
import os from 'node:os';
import { Bench } from 'tinybench';
import { DubboFrame, DubboRequest, countParamTypes, decodeFrame, encodeRequest } from '../../src/protocols/dubbo';
import { newDecoder } from '../../src/protocols/dubbo/hessian-js';
import { commit, cpuNow } from '../lib/run-info';

const BATCH = 50;

const ATTACHMENTS = {
  path: 'org.apache.dubbo.demo.DemoService', group: 'Group_2', type: 'transfer', timeout: '3000', version: '1.0.0',
};

export const SMALL = encodeRequest({
  id: 1, service: 'org.apache.dubbo.demo.DemoService', version: '1.0.0', method: 'sayHello',
  paramTypes: 'Ljava/lang/String;', args: ['world'], attachments: ATTACHMENTS,
});

const order = (k: number) => ({
  $class: 'org.apache.dubbo.demo.Order',
  $: {
    id: { $class: 'long', $: 1_000_000 + k }, customer: `customer-${k}@example.com`, amount: { $class: 'double', $: 125.5 + k },
    currency: 'EUR', status: k % 3 === 0 ? 'PAID' : 'OPEN', created: new Date(1700000000000 + k * 60000),
    tags: ['priority', `region-${k % 4}`], note: k % 5 === 0 ? null : 'leave at the door',
  },
});
export const LARGE = encodeRequest({
  id: 2, service: 'org.apache.dubbo.demo.OrderService', version: '2.3.1', method: 'submitBatch',
  paramTypes: 'Ljava/lang/String;Ljava/util/List;Ljava/util/Map;',
  args: ['batch-2024-06-11', Array.from({ length: 74 }, (_, k) => order(k)), { source: 'checkout', retries: 3, dryRun: false }],
  attachments: ATTACHMENTS,
});

function check(label: string, buf: Buffer, min: number, max: number): void {
  if (buf.length < min || buf.length > max) throw new Error(`${label} frame is ${buf.length} bytes, meant to be ${min}..${max}`);
}
check('small', SMALL, 180, 200);
check('large', LARGE, 6400, 7000);

let sink = 0;

function frameOf(raw: Buffer): DubboFrame {
  const f = decodeFrame(raw);
  if (!(f instanceof DubboFrame)) throw new Error('bad frame');
  return f;
}

const TASKS: Array<[string, (raw: Buffer) => void]> = [
  ['lazy: header + leading strings', (raw) => {
    const v = DubboRequest.fromFrame(frameOf(raw));
    sink += v.service.length + v.method.length + v.version.length;
  }],
  ['lazy: + attachments (group)', (raw) => {
    const v = DubboRequest.fromFrame(frameOf(raw));
    sink += v.service.length + v.method.length + v.version.length + v.group!.length;
  }],
  ['lazy: + arguments (hessian.js)', (raw) => {
    const v = DubboRequest.fromFrame(frameOf(raw));
    sink += v.service.length + v.group!.length + v.arguments().length;
  }],
  ['full: hessian.js decode of body', (raw) => {
    const f = frameOf(raw);
    const d = newDecoder(f.body);
    const service = d.read() as string;
    d.read(); d.read(); d.read();
    const n = countParamTypes(d.read() as string);
    for (let k = 0; k < n; k++) d.read();
    const attachments = d.read() as Record<string, string>;
    sink += service.length + attachments.group.length;
  }],
];

export interface MicroResult {
  task: string;
  /** Wall-clock µs per frame (performance.now). */
  usPerFrame: number;
  /** CPU µs per frame (process.cpuUsage, user + system): steadier on a shared machine. */
  cpuUsPerFrame: number;
  framesPerSecond: number;
  rme: number;
  samples: number;
}

async function run(quick: boolean, cpuClock: boolean, cases: Array<[string, Buffer]>) {
  const bench = new Bench({ time: quick ? 300 : 1500, warmupTime: quick ? 100 : 300, throws: true, ...(cpuClock ? { now: cpuNow } : {}) });
  for (const [label, raw] of cases) {
    for (const [name, fn] of TASKS) {
      bench.add(`${label} | ${name}`, () => {
        for (let k = 0; k < BATCH; k++) fn(raw);
      });
    }
  }
  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, us: (r.latency.mean * 1e3) / BATCH, rme: r.latency.rme, samples: r.latency.df + 1 };
  });
}

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  const cases: Array<[string, Buffer]> = [[`small ${SMALL.length} B`, SMALL], [`large ${LARGE.length} B`, LARGE]];
  for (const [label, raw] of cases) {
    // every task must see the same call before it is timed
    const v = DubboRequest.fromFrame(frameOf(raw));
    if (v.group !== 'Group_2' || v.arguments().length !== countParamTypes(v.paramTypes)) throw new Error(`${label}: bad fixture`);
  }
  const wall = await run(quick, false, cases);
  const cpu = await run(quick, true, cases);
  const results: MicroResult[] = wall.map((w, k) => ({
    task: w.task,
    usPerFrame: w.us,
    cpuUsPerFrame: cpu[k].us,
    framesPerSecond: 1e6 / w.us,
    rme: w.rme,
    samples: w.samples,
  }));
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out('\n## micro: Dubbo request decoding, lazy view vs full hessian.js decode');
  out(`node ${process.version}  CPUs ${os.availableParallelism()}  commit ${commit()}  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  out(`batch of ${BATCH} frames per sample; µs per frame, wall clock and CPU time`);
  out(`${'task'.padEnd(52)}${'wall µs'.padStart(10)}${'±%'.padStart(7)}${'CPU µs'.padStart(10)}${'frames/s'.padStart(12)}`);
  for (const r of results) {
    out(`${r.task.padEnd(52)}${r.usPerFrame.toFixed(2).padStart(10)}${r.rme.toFixed(1).padStart(7)}${r.cpuUsPerFrame.toFixed(2).padStart(10)}${Math.round(r.framesPerSecond).toLocaleString('en-US').padStart(12)}`);
  }
  for (const [label] of cases) {
    const get = (name: string) => results.find((r) => r.task === `${label} | ${name}`)!;
    const full = get('full: hessian.js decode of body');
    const lazy = get('lazy: + attachments (group)');
    const head = get('lazy: header + leading strings');
    out(`${label}: attachments reached lazily for ${(lazy.cpuUsPerFrame / full.cpuUsPerFrame * 100).toFixed(0)}% of a full decode's CPU ` +
      `(${lazy.cpuUsPerFrame.toFixed(2)} vs ${full.cpuUsPerFrame.toFixed(2)} µs); header + leading strings ${head.cpuUsPerFrame.toFixed(2)} µs CPU`);
  }
  if (sink === 0) out('(sink)');
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
