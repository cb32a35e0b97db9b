/**
 * `sluice --version` and `sluice <command> --help`, run as a user runs them: `node bin/sluice.js`
 * in a child process. A command that ran instead of printing its usage would hang (start serves,
 * inject waits for stdin) and hit the timeout.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'sluice.js');
const VERSION: string = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;

interface Result { code: number | null; stdout: string; stderr: string }

function sluice(args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') { reject(err); return; }
      if (err && err.killed) { reject(new Error(`sluice ${args.join(' ')} did not exit\n${stderr}`)); return; }
      resolve({ code: child.exitCode, stdout, stderr });
    });
  });
}

t.test('--version, -v and version print the package version and exit 0', async (t) => {
  t.match(VERSION, /^\d+\.\d+\.\d+/);
  for (const arg of ['--version', '-v', 'version']) {
    const r = await sluice([arg]);
    t.equal(r.code, 0, `${arg}: ${r.stderr}`);
    t.equal(r.stdout, `sluice ${VERSION}\n`, arg);
    t.equal(r.stderr, '', arg);
  }
});

const COMMANDS = ['start', 'validate', 'capture-check', 'inject'];

t.test('<command> --help prints that command\'s usage, exit 0, and runs nothing', async (t) => {
  for (const cmd of COMMANDS) {
    for (const args of [[cmd, '--help'], [cmd, '-h'], ['help', cmd]]) {
      const r = await sluice(args);
      const what = args.join(' ');
      t.equal(r.code, 0, `${what}: ${r.stderr}`);
      t.equal(r.stderr, '', what);
      t.match(r.stdout, new RegExp(`^usage:\\n  sluice ${cmd}( |\\n)`), what);
      for (const other of COMMANDS.filter((c) => c !== cmd)) t.notMatch(r.stdout, `sluice ${other}`, `${what}: only its own usage`);
    }
  }
  // the options a command takes are in its usage
  t.match((await sluice(['start', '--help'])).stdout, /--config FILE.*--health-address/);
  t.match((await sluice(['inject', '--help'])).stdout, /--image IMAGE.*--config-map NAME/);
  t.match((await sluice(['capture-check', '--help'])).stdout, /--probe ADDR:PORT/);
});

t.test('--help after other options still prints the usage', async (t) => {
  const r = await sluice(['start', '--config', 'nope.yaml', '--help']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^usage:\n {2}sluice start/);
});

t.test('the general usage lists --version and <command> --help', async (t) => {
  const r = await sluice(['--help']);
  t.equal(r.code, 0);
  t.match(r.stdout, /sluice --version/);
  t.match(r.stdout, /sluice <command> --help/);
});

t.test('help for an unknown command exits 2 and says so', async (t) => {
  const r = await sluice(['help', 'frobnicate']);
  t.equal(r.code, 2);
  t.equal(r.stdout, '');
  t.match(r.stderr, /unknown command "frobnicate"/);
  const v = await sluice(['--verbose']);
  t.equal(v.code, 2, 'an unknown top-level flag is not --version');
  t.match(v.stderr, /unknown command "--verbose"/);
});
