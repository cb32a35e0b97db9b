/**
 * `npm run bench` → node dist/bench/run.js [--quick] [--scenario NAME] [--threads N] [--node-floor]
 *                                          [--out FILE] [--no-load] [--no-micro]
 * The load scenarios (load.ts, arguments passed through), then every micro benchmark in
 * bench/micro/ (each `*.bench.ts` exports `main(argv)`). Results: bench/results/latest.json and
 * bench/results/micro-latest.json (with --out FILE: FILE and FILE.micro.json).
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { main as load } from './load';

type MicroMain = (argv: string[]) => Promise<unknown>;

export async function main(argv: string[]): Promise<number> {
  const noLoad = argv.includes('--no-load');
  const noMicro = argv.includes('--no-micro');
  const rest = argv.filter((a) => a !== '--no-load' && a !== '--no-micro');
  let code = 0;
  if (!noLoad) code = await load(rest);
  if (code === 2) return code; // bad arguments
  if (noMicro) return code;

  const microDir = path.join(__dirname, 'micro');
  const files = readdirSync(microDir).filter((f) => f.endsWith('.bench.js')).sort();
  const results: Record<string, unknown> = {};
  for (const f of files) {
    const name = f.slice(0, -'.bench.js'.length);
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(path.join(microDir, f)) as { main?: MicroMain };
      if (typeof mod.main !== 'function') throw new Error('exports no main(argv)');
      results[name] = await mod.main(rest.includes('--quick') ? ['--quick'] : []);
    } catch (err) {
      process.stderr.write(`micro benchmark ${name} failed: ${(err as Error).stack}\n`);
      results[name] = { error: (err as Error).message };
      code = 1;
    }
  }
  const i = rest.findIndex((a) => a === '--out' || a.startsWith('--out='));
  const outArg = i < 0 ? null : rest[i].includes('=') ? rest[i].slice(rest[i].indexOf('=') + 1) : rest[i + 1];
  const out = outArg ? path.resolve(outArg).replace(/(\.json)?$/, '.micro.json')
    : path.resolve(__dirname, '..', '..', 'bench', 'results', 'micro-latest.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({
    date: new Date().toISOString(), node: process.version, cpus: os.availableParallelism(), loadAverage: os.loadavg(), ...results,
  }, null, 2)}\n`);
  process.stdout.write(`micro results: ${path.relative(process.cwd(), out) || out}\n`);
  return code;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
}
