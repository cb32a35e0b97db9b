/**
 * `npm run bench` → node dist/bench/run.js [--quick] [--scenario NAME] [--threads N] [--out FILE]
 *                                          [--no-load] [--no-micro]
 * The load scenarios (load.ts, arguments passed through), then the micro benchmarks
 * (results: bench/results/latest.json and bench/results/micro-latest.json).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { main as load } from './load';
import { main as http1Decode } from './micro/http1-decode.bench';

export async function main(argv: string[]): Promise<number> {
  const noLoad = argv.includes('--no-load');
  const noMicro = argv.includes('--no-micro');
  const rest = argv.filter((a) => a !== '--no-load' && a !== '--no-micro');
  let code = 0;
  if (!noLoad) code = await load(rest);
  if (code === 2) return code; // bad arguments
  if (!noMicro) {
    try {
      const results = await http1Decode(rest.includes('--quick') ? ['--quick'] : []);
      // beside the load results: bench/results/micro-latest.json, or FILE.micro.json with --out FILE
      const i = rest.findIndex((a) => a === '--out' || a.startsWith('--out='));
      const out = i < 0 ? path.resolve(__dirname, '..', '..', 'bench', 'results', 'micro-latest.json')
        : path.resolve(rest[i].includes('=') ? rest[i].slice(6) : rest[i + 1] ?? '').replace(/(\.json)?$/, '.micro.json');
      mkdirSync(path.dirname(out), { recursive: true });
      writeFileSync(out, `${JSON.stringify({
        date: new Date().toISOString(), node: process.version, cpus: os.availableParallelism(), loadAverage: os.loadavg(), 'http1-decode': results,
      }, null, 2)}\n`);
    } catch (err) {
      process.stderr.write(`micro benchmark failed: ${(err as Error).stack}\n`);
      code = 1;
    }
  }
  return code;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
}
