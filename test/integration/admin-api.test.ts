/**
 * The admin API's credential and addresses. Reading (/ready, /stats, /config_dump, /clusters) is
 * open on loopback; every change (POST /config, POST /drain, /debug) needs the bearer token from
 * admin.tokenFile, a file other users cannot read. The health address serves /ready and /stats
 * to the outside (kubelet, Prometheus) and nothing else. An admin address in use is named.
 */
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { buildConfig } from '../../src/config/config';
import { Sluice } from '../../src/main/sluice';
import {
  ADMIN_AUTH, ADMIN_TOKEN, adminPost, get, httpUpstream, run, spawnSluice, startSluice, stats, waitFor, withTestDefaults, writeConfig,
} from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

const APP_UID = 1000;

function doc(port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${port}`] }],
    ...extra,
  };
}

/** The version /config_dump reports. */
async function version(admin: string): Promise<number> {
  return (JSON.parse((await get(`${admin}/config_dump`)).body) as { version: number }).version;
}

t.test('reading is open; POST needs the token, and nothing changes without it', async (t) => {
  const up = await httpUpstream((req, res) => res.end('ok'));
  const s = await startSluice(doc(up.port));
  t.teardown(async () => { await s.stop(); await up.close(); });

  for (const p of ['/ready', '/stats', '/config_dump', '/clusters']) {
    t.equal((await get(`${s.admin}${p}`)).status, 200, `GET ${p} needs no token`);
  }
  const v0 = await version(s.admin);
  const pushed = YAML.stringify(withTestDefaults(doc(up.port, { http: { via: 'pushed' } })));
  const refusals: Array<[string, string | null]> = [
    ['no authorization header', null],
    ['a wrong token', 'Bearer not-the-token-0123456789abcdef0123'],
    ['the token with another scheme', `Basic ${ADMIN_TOKEN}`],
    ['the token without a scheme', ADMIN_TOKEN],
  ];
  for (const [what, auth] of refusals) {
    for (const p of ['/config', '/drain', '/debug/kill_worker']) {
      const r = await adminPost(s.admin, p, p === '/config' ? pushed : '', auth);
      t.equal(r.status, 401, `POST ${p} with ${what}: 401`);
      t.equal(r.headers['www-authenticate'], 'Bearer realm="sluice admin"');
    }
  }
  t.equal(await version(s.admin), v0, 'the config was not replaced');
  t.equal((await get(`${s.admin}/ready`)).status, 200, 'not draining');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_worker_restarts_total'), 0, 'no worker was killed');
  t.equal(st.get('sluice_config_reload_total'), 0);

  const ok = await adminPost(s.admin, '/config', pushed);
  t.equal(ok.status, 200, ok.body);
  t.equal(await version(s.admin), v0 + 1, 'with the token the config is replaced');
  const drain = await adminPost(s.admin, '/drain');
  t.equal(drain.status, 202);
  await waitFor(async () => (await get(`${s.admin}/ready`).catch(() => ({ status: 0 }))).status !== 200, 5000, 'the drain');
  t.pass('with the token POST /drain drains');
});

t.test('without admin.tokenFile: a token in a fresh 0600 file, unreadable by the app\'s uid, removed at exit', async (t) => {
  const up = await httpUpstream((req, res) => res.end('ok'));
  const file = writeConfig({ admin: { address: '127.0.0.1:0' }, workers: { threads: 1 }, ...doc(up.port) });
  const child = spawnSluice(['start', '--config', file]);
  t.teardown(async () => {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
    await child.exited;
    await up.close();
  });
  const started = await sluiceStarted(child);
  const line = child.output().split('\n').find((l) => l.includes('"tokenFile"'));
  t.ok(line, 'the token file is named in the log');
  const tokenFile = (JSON.parse(line!) as { tokenFile: string }).tokenFile;
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the file is 0600');
  t.equal(statSync(path.dirname(tokenFile)).mode & 0o777, 0o700, 'its directory is 0700');
  const token = readFileSync(tokenFile, 'utf8').trim();
  t.match(token, /^[0-9a-f]{64}$/, '256 random bits');
  t.notMatch(child.output(), new RegExp(token), 'the token itself is never logged');

  // another process of the pod (the application's uid) can neither read the token nor change anything
  const cat = await run('setpriv', [`--reuid=${APP_UID}`, `--regid=${APP_UID}`, '--clear-groups', 'cat', tokenFile]);
  t.not(cat.code, 0, 'the app\'s uid cannot read the token');
  t.match(cat.stderr, /Permission denied/);
  const push = await run('setpriv', [`--reuid=${APP_UID}`, `--regid=${APP_UID}`, '--clear-groups',
    'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `${started.admin}/drain`]);
  t.equal(push.stdout, '401', 'POST /drain from the app\'s uid is refused');
  t.equal((await get(`${started.admin}/ready`)).status, 200);

  const drain = await adminPost(started.admin, '/drain', '', `Bearer ${token}`);
  t.equal(drain.status, 202, 'the token from the file works');
  t.equal(await child.exited, 0, 'drained and exited');
  t.equal(existsSync(path.dirname(tokenFile)), false, 'the generated token is removed at exit');
});

t.test('admin.tokenFile that does not exist is created with a new token; one that does is read', async (t) => {
  const up = await httpUpstream((req, res) => res.end('ok'));
  t.teardown(() => up.close());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-token-'));
  const created = path.join(dir, 'sub', 'token');
  const s = await startSluice({ ...doc(up.port), admin: { address: '127.0.0.1:0', tokenFile: created } });
  t.teardown(() => s.stop());
  t.equal(statSync(created).mode & 0o777, 0o600);
  const token = readFileSync(created, 'utf8').trim();
  t.equal((await adminPost(s.admin, '/config', YAML.stringify({ ...doc(up.port), admin: { address: '127.0.0.1:0', tokenFile: created } }))).status, 401,
    'the test token is not this Sluice\'s');
  t.equal((await adminPost(s.admin, '/config', YAML.stringify({ ...doc(up.port), admin: { address: '127.0.0.1:0', tokenFile: created } }), `Bearer ${token}`)).status, 200,
    'the generated one is');
  await s.stop();
  t.equal(existsSync(created), true, 'a configured token file is kept at exit');

  const again = await startSluice({ ...doc(up.port), admin: { address: '127.0.0.1:0', tokenFile: created } });
  t.teardown(() => again.stop());
  t.equal(readFileSync(created, 'utf8').trim(), token, 'an existing file is read, not replaced');
  t.equal((await adminPost(again.admin, '/drain', '', `Bearer ${token}`)).status, 202);
});

t.test('a token file holding a short token stops start-up, naming the file', async (t) => {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-token-')), 'token');
  writeFileSync(file, 'secret\n', { mode: 0o600 });
  const config = buildConfig({ admin: { address: '127.0.0.1:0', tokenFile: file }, workers: { threads: 1 }, listeners: [] });
  await t.rejects(Sluice.start({ config }), { code: 'ERR_ADMIN_TOKEN', message: new RegExp(`admin.tokenFile ${file}: the token must be at least 32 characters`) });
});

t.test('the health address serves /ready and /stats (promtool-valid) to the outside, and nothing else', async (t) => {
  const up = await httpUpstream((req, res) => res.end('ok'));
  const file = writeConfig(withTestDefaults({ ...doc(up.port), workers: { threads: 1 } }));
  const child = spawnSluice(['start', '--config', file, '--health-address', '127.0.0.1:0']);
  t.teardown(async () => {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
    await child.exited;
    await up.close();
  });
  const started = await sluiceStarted(child);
  t.equal((await get(`http://127.0.0.1:${started.ports.app}/`)).body, 'ok');
  const line = child.output().split('\n').find((l) => l.includes('"sluice started"'))!;
  const health = `http://${(JSON.parse(line) as { health: string }).health}`;
  t.equal((await get(`${health}/ready`)).status, 200);
  const metrics = await get(`${health}/stats`);
  t.equal(metrics.status, 200);
  t.match(metrics.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  t.match(metrics.body, /^sluice_downstream_rq_duration_seconds_count\{protocol="http1"\} 1$/m, 'the same stats as the admin address');
  const promFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-health-')), 'stats.txt');
  writeFileSync(promFile, metrics.body);
  const check = await run('sh', ['-c', `promtool check metrics < '${promFile}'`]);
  t.equal(check.code, 0, check.stdout + check.stderr);
  for (const p of ['/config_dump', '/clusters']) t.equal((await get(`${health}${p}`)).status, 404, `GET ${p}: not on the health address`);
  for (const p of ['/config', '/drain']) {
    t.equal((await adminPost(health, p, '', ADMIN_AUTH)).status, 404, `POST ${p}: not on the health address, even with the token`);
  }
  child.proc.kill('SIGTERM');
  t.equal(await child.exited, 0);
});

t.test('an admin address in use stops start-up with an error that names it', async (t) => {
  const taken = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => taken.once('listening', r));
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  const file = writeConfig({ ...withTestDefaults({ listeners: [] }), admin: { address: `127.0.0.1:${port}` } });
  const child = spawnSluice(['start', '--config', file]);
  t.equal(await child.exited, 1, 'exit 1');
  t.match(child.output(), `sluice: cannot listen on the admin address 127.0.0.1:${port} (admin.address): the port is in use`);
  t.notMatch(child.output(), /sluice stopped/, 'what never started is not said to have stopped');
});
