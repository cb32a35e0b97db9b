/**
 * The CLI as a user runs it: `node bin/sluice.js ...` in a child process.
 * Only commands that exit on their own (validate, a start that fails on its config).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'sluice.js');

interface Result { code: number | null; stdout: string; stderr: string }

function sluice(args: string[], cwd?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [BIN, ...args], { timeout: 30_000, cwd }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') { reject(err); return; }
      if (err && err.killed) { reject(new Error(`sluice ${args.join(' ')} timed out\n${stderr}`)); return; }
      resolve({ code: child.exitCode, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-cli-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

t.test('validate: a valid file exits 0 and says so', async (t) => {
  const f = file('good.yaml', `
admin: { address: 127.0.0.1:15000 }
listeners:
  - { name: app, address: 127.0.0.1:9001, cluster: web }
routes:
  - match: { headers: { type: transfer } }
    action: { cluster: web, labels: { group: Group_2 } }
clusters:
  - name: web
    endpoints: [ 127.0.0.1:8080, { address: 127.0.0.1:8081, labels: { group: Group_2 } } ]
`);
  const r = await sluice(['validate', f]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `${f}: valid\n`);
  t.equal(r.stderr, '');
});

t.test('validate: every error of a file, each with its path, exit 1', async (t) => {
  const f = file('bad.yaml', `
listeners:
  - { name: app, address: 127.0.0.1:99999, cluster: web }
clusters:
  - { name: web, lbPolicy: fastest, endpoints: [127.0.0.1:8080] }
routes:
  - action: { cluster: nowhere }
`);
  const r = await sluice(['validate', f]);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, `${f} is invalid:`);
  const lines = r.stderr.trim().split('\n').slice(1);
  t.equal(lines.length, 3, r.stderr);
  t.match(lines[0], /^ {2}\/clusters\/0\/lbPolicy: must be one of round_robin, least_request$/);
  t.match(lines[1], /^ {2}\/listeners\/0\/address: "99999" is not a port/);
  t.match(lines[2], /^ {2}\/routes\/0\/action\/cluster: unknown cluster "nowhere"$/);
});

t.test('validate: YAML syntax errors and missing files exit 1 with a message', async (t) => {
  const bad = await sluice(['validate', file('syntax.yaml', 'listeners: [\n  { name: a\n')]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /syntax\.yaml is invalid:\n {2}\/: YAML: /);
  const missing = await sluice(['validate', path.join(dir, 'nope.yaml')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /nope\.yaml.*\n.*cannot read the config file: no such file/);
  const none = await sluice(['validate']);
  t.equal(none.code, 2);
  t.match(none.stderr, /a config file is required/);
});

t.test('start --config with a missing file exits 1 and says why', async (t) => {
  const r = await sluice(['start', '--config', 'missing.yaml'], dir);
  t.equal(r.code, 1);
  t.match(r.stderr, /missing\.yaml/);
  t.match(r.stderr, /cannot read the config file: no such file/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('start --config with an invalid file exits 1 before listening', async (t) => {
  const f = file('start-bad.yaml', 'admin: { address: 127.0.0.1:0 }\nlisteners: []\nbogus: 1\n');
  const r = await sluice(['start', '--config', f]);
  t.equal(r.code, 1);
  t.match(r.stderr, /\/bogus: is not a known field/);
});

t.test('unknown command or option exits 2 with usage', async (t) => {
  const r = await sluice(['frobnicate']);
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command "frobnicate"/);
  t.match(r.stderr, /usage:/);
  const o = await sluice(['validate', '--bogus', 'x.yaml']);
  t.equal(o.code, 2);
  t.match(o.stderr, /unknown option --bogus/);
  const n = await sluice([]);
  t.equal(n.code, 2, 'no command at all');
  const h = await sluice(['--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /sluice validate FILE/);
});
