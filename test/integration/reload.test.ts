/**
 * Config reload while serving: the watched file and POST /config. A valid
 * config replaces the old one as a whole (new requests follow it, requests in
 * flight finish); an invalid one is refused with every issue's path, counted,
 * and the old config keeps serving. Under load no request fails.
 */
import { writeFileSync, renameSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { adminPost, get, httpUpstream, run, startSluice, stats, waitFor, withTestDefaults, writeConfig, type RunningSluice, type Upstream } from '../helpers/harness';

interface Named { up: Upstream; started: number; finished: number; inFlight: Set<number> }

let nextId = 0;
const finishedIds = new Set<number>();

/** An upstream that answers its name after `delayMs`, tracking which requests are in flight. */
async function named(name: string, delayMs: number): Promise<Named> {
  const n: Named = { up: null as unknown as Upstream, started: 0, finished: 0, inFlight: new Set() };
  n.up = await httpUpstream((req: http.IncomingMessage, res: http.ServerResponse) => {
    const id = ++nextId;
    n.started++;
    n.inFlight.add(id);
    res.on('finish', () => { n.finished++; n.inFlight.delete(id); finishedIds.add(id); });
    res.on('close', () => n.inFlight.delete(id));
    const answer = () => { res.setHeader('content-length', name.length); res.end(name); };
    if (delayMs) setTimeout(answer, delayMs); else answer();
  });
  return n;
}

function doc(cluster: string, ports: { a: number; b: number }, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return withTestDefaults({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    routes: [{ name: 'all', match: { path: { prefix: '/' } }, action: { cluster } }],
    clusters: [
      { name: 'a', endpoints: [`127.0.0.1:${ports.a}`] },
      { name: 'b', endpoints: [`127.0.0.1:${ports.b}`] },
    ],
    ...extra,
  });
}

/** Replace the file in one step, so the watcher never reads half a file. */
function rewrite(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.next-${process.pid}`);
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

async function counter(s: RunningSluice, name: string): Promise<number> {
  return (await stats(s.admin)).get(name) ?? 0;
}

function postConfig(s: RunningSluice, body: string): Promise<{ status: number; body: string }> {
  return adminPost(s.admin, '/config', body);
}

t.test('a watched file: valid changes apply, invalid ones are refused and the old config serves on', async (t) => {
  const a = await named('A', 0);
  const b = await named('B', 0);
  const ports = { a: a.up.port, b: b.up.port };
  const file = writeConfig(doc('a', ports));
  const s = await startSluice(doc('a', ports), { configPath: file, watchIntervalMs: 50 });
  t.teardown(async () => { await s.stop(); await a.up.close(); await b.up.close(); });
  const url = `http://127.0.0.1:${s.port('app')}/x`;
  t.equal((await get(url)).body, 'A');

  const version0 = JSON.parse((await get(`${s.admin}/config_dump`)).body).version as number;
  rewrite(file, YAML.stringify(doc('b', ports)));
  await waitFor(async () => (await counter(s, 'sluice_config_reload_total')) === 1, 10_000, 'the reload');
  t.equal((await get(url)).body, 'B', 'the new route is in force');
  const dump = JSON.parse((await get(`${s.admin}/config_dump`)).body);
  t.equal(dump.version, version0 + 1);
  t.equal(dump.config.routes[0].action.cluster, 'b');
  // /clusters reads the same counters as /stats, for clusters known at start and after reloads
  const st = await stats(s.admin);
  const clusters = JSON.parse((await get(`${s.admin}/clusters`)).body) as { clusters: Array<{ name: string; stats: Record<string, number> }> };
  for (const name of ['a', 'b']) {
    const c = clusters.clusters.find((x) => x.name === name);
    t.equal(c?.stats.upstream_rq_total, st.get(`sluice_upstream_rq_total{cluster="${name}"}`), `/clusters agrees with /stats for ${name}`);
    t.equal(c?.stats.upstream_rq_total, 1, `one request went to ${name}`);
  }

  const bad: Array<[string, string]> = [
    ['bad YAML', 'listeners: [\n  - {name: app,\n'],
    ['an unknown field', YAML.stringify({ ...doc('a', ports), bogus: true })],
    ['an unknown cluster', YAML.stringify(doc('nowhere', ports))],
  ];
  let failed = 0;
  for (const [what, text] of bad) {
    rewrite(file, text);
    failed++;
    await waitFor(async () => (await counter(s, 'sluice_config_reload_failed_total')) === failed, 10_000, `refusal of ${what}`);
    const r = await get(url);
    t.equal(r.status, 200, `${what}: still serving`);
    t.equal(r.body, 'B', `${what}: the previous config keeps serving`);
  }
  t.equal(await counter(s, 'sluice_config_reload_total'), 1, 'no refused config was applied');
  t.equal(JSON.parse((await get(`${s.admin}/config_dump`)).body).version, version0 + 1, 'config version unchanged');

  // and a good file after the bad ones applies again
  rewrite(file, YAML.stringify(doc('a', ports)));
  await waitFor(async () => (await counter(s, 'sluice_config_reload_total')) === 2, 10_000, 'the second reload');
  t.equal((await get(url)).body, 'A');
});

t.test('POST /config: 400 with every issue and its path; nothing changes', async (t) => {
  const a = await named('A', 0);
  const b = await named('B', 0);
  const ports = { a: a.up.port, b: b.up.port };
  const s = await startSluice(doc('a', ports));
  t.teardown(async () => { await s.stop(); await a.up.close(); await b.up.close(); });
  const url = `http://127.0.0.1:${s.port('app')}/x`;

  // schema problems: all of them at once
  const schemaBad = doc('a', ports, { http: { idleTimeoutMs: 'soon' }, tcp: { sniffTimeout: 5 } });
  (schemaBad.listeners as Array<Record<string, unknown>>)[0].bogus = 1;
  const r1 = await postConfig(s, YAML.stringify(schemaBad));
  t.equal(r1.status, 400);
  const j1 = JSON.parse(r1.body) as { error: string; issues: Array<{ path: string; message: string }> };
  t.equal(j1.error, 'ERR_CONFIG_INVALID');
  t.same(j1.issues.map((i) => i.path).sort(), ['/http/idleTimeoutMs', '/listeners/0/bogus', '/tcp/sniffTimeout'].sort());

  // references: every unknown cluster, by path
  const refBad = doc('nowhere', ports);
  (refBad.listeners as Array<Record<string, unknown>>)[0].cluster = 'missing';
  const r2 = await postConfig(s, YAML.stringify(refBad));
  t.equal(r2.status, 400);
  const j2 = JSON.parse(r2.body) as { issues: Array<{ path: string; message: string }> };
  t.same(j2.issues.map((i) => i.path).sort(), ['/listeners/0/cluster', '/routes/0/action/cluster']);
  t.match(j2.issues.find((i) => i.path === '/routes/0/action/cluster')?.message, /unknown cluster "nowhere"/);

  const r3 = await postConfig(s, 'routes: [\n');
  t.equal(r3.status, 400, 'bad YAML');
  t.match(r3.body, /YAML/);

  t.equal(await counter(s, 'sluice_config_reload_failed_total'), 3);
  t.equal(await counter(s, 'sluice_config_reload_total'), 0);
  t.equal((await get(url)).body, 'A', 'the old config serves on');

  const ok = await postConfig(s, YAML.stringify(doc('b', ports)));
  t.equal(ok.status, 200, ok.body);
  t.equal((await get(url)).body, 'B');
});

t.test('reloads under load: no request fails, requests in flight complete', async (t) => {
  const a = await named('A', 300);
  const b = await named('B', 300);
  const ports = { a: a.up.port, b: b.up.port };
  const file = writeConfig(doc('a', ports));
  const s = await startSluice(doc('a', ports), { configPath: file, watchIntervalMs: 50 });
  t.teardown(async () => { await s.stop(); await a.up.close(); await b.up.close(); });
  const port = s.port('app');

  let wrkDone = false;
  const wrk = run('wrk', ['-t', '2', '-c', '10', '-d', '6s', '--timeout', '5s', `http://127.0.0.1:${port}/`], 30_000)
    .finally(() => { wrkDone = true; });
  const inFlightAtReload = new Set<number>();
  const total = () => a.started + b.started;
  let reloads = 0;
  const RELOADS = 6;
  for (let i = 1; i <= RELOADS && !wrkDone; i++) {
    const seen = total();
    await waitFor(() => total() >= seen + 10 || wrkDone, 10_000, 'traffic between reloads');
    if (wrkDone) break;
    for (const id of [...a.inFlight, ...b.inFlight]) inFlightAtReload.add(id);
    rewrite(file, YAML.stringify(doc(i % 2 ? 'b' : 'a', ports)));
    await waitFor(async () => (await counter(s, 'sluice_config_reload_total')) === i, 10_000, `reload ${i}`);
    reloads = i;
  }
  const w = await wrk;
  t.equal(w.code, 0, w.stderr);
  t.equal(reloads, RELOADS, 'every reload happened while the load ran');
  t.notMatch(w.stdout, /Non-2xx/, 'no error responses');
  t.notMatch(w.stdout, /Socket errors/, 'no connection errors or timeouts');
  const done = Number(/(\d+) requests in/.exec(w.stdout)?.[1] ?? 0);
  t.ok(done >= 60, `wrk completed ${done} requests`);
  t.ok(a.finished > 0 && b.finished > 0, `both clusters served (A ${a.finished}, B ${b.finished})`);
  t.ok(inFlightAtReload.size > 0, `${inFlightAtReload.size} requests were in flight at a reload`);
  const lost = [...inFlightAtReload].filter((id) => !finishedIds.has(id));
  t.same(lost, [], 'every request in flight at a reload completed');
  t.equal(await counter(s, 'sluice_config_reload_failed_total'), 0);
});
