/**
 * A fresh clone of the committed HEAD installs with `npm ci` (what the Dockerfile and CI run) and
 * with `npm install`, and neither leaves a tracked file changed: the lock file must list what npm
 * writes on this platform, optional platform packages included. Needs the npm registry (or a warm
 * npm cache); takes a minute or two.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';

const NPM_TIMEOUT_MS = 420_000;
t.setTimeout(2 * NPM_TIMEOUT_MS + 120_000);

const git = (cwd: string, ...args: string[]): string => execFileSync('git', ['-C', cwd, ...args], { encoding: 'utf8' }).trim();
const root = git(__dirname, 'rev-parse', '--show-toplevel');
const head = git(root, 'rev-parse', 'HEAD');

// npm's own lifecycle variables (set when this runs under `npm test`) would leak the outer
// project's settings into the clone's npm; a user's shell has none of them.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(package|lifecycle|command)|^INIT_CWD$/.test(k)));

/** Runs npm; `why` is what a failure should show: npm's first error lines, where it says why. */
function npm(cwd: string, args: string[]): Promise<{ code: number | null; why: string }> {
  return new Promise((resolve) => {
    const child = execFile('npm', args, { cwd, env, timeout: NPM_TIMEOUT_MS, maxBuffer: 64 << 20 }, (err, _stdout, stderr) => {
      const errors = stderr.split('\n').filter((l) => /^npm (error|ERR!)/.test(l)).slice(0, 15).join('\n');
      if (err && (err as { killed?: boolean }).killed) resolve({ code: null, why: `npm ${args.join(' ')} killed after ${NPM_TIMEOUT_MS} ms\n${errors}` });
      else resolve({ code: child.exitCode, why: errors || stderr.split('\n').slice(-15).join('\n') });
    });
  });
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-fresh-clone-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const clone = path.join(dir, 'sluice');
execFileSync('git', ['clone', '--quiet', '--no-checkout', root, clone]);
git(clone, 'checkout', '--quiet', '--detach', head);
const version = JSON.parse(readFileSync(path.join(clone, 'package.json'), 'utf8')).version;

for (const install of [['ci'], ['install']]) {
  t.test(`npm ${install[0]} in a fresh clone of ${head.slice(0, 12)} works and changes no tracked file`, async (t) => {
    git(clone, 'clean', '-xdfq');
    t.equal(git(clone, 'status', '--porcelain', '--ignored'), '', 'starts from a clean checkout');
    const r = await npm(clone, [...install, '--prefer-offline', '--no-audit', '--no-fund']);
    t.equal(r.code, 0, r.code === 0 ? `npm ${install[0]} exits 0` : `npm ${install[0]} exits 0\n${r.why}`);
    t.equal(git(clone, 'status', '--porcelain'), '', 'git status --porcelain is empty: package-lock.json and every tracked file unchanged');
    t.ok(existsSync(path.join(clone, 'build', 'Release', 'sluice_net.node')), 'the native addon was built');
    if (r.code !== 0) return;
    const v = execFileSync(process.execPath, [path.join(clone, 'bin', 'sluice.js'), '--version'], { encoding: 'utf8', timeout: 20_000 });
    t.equal(v, `sluice ${version}\n`, 'the installed CLI runs');
  });
}
