/**
 * Circuit breakers end to end with real clients and upstreams: breakers that open on an
 * upstream's failures (HTTP 5xx, gRPC UNAVAILABLE, Dubbo error statuses, refused connections,
 * timeouts, resets), refuse while open, let trial calls through half-open, close when they
 * succeed and open again when they fail; a caller's own errors (4xx, INVALID_ARGUMENT) open nothing;
 * shadow mode lets everything through and counts the same; a reload keeps an open breaker whose
 * rule did not change and starts afresh when it did.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { adminPost, get, run, startSluice, stats } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, loadEcho, unary } from './filter-peers';
import { breakersOf, breakersWhen, deadPort, dubboSwitchable, grpcSwitchable, httpSwitchable, sleep, type BreakerRow } from './protection-peers';
import YAML from 'yaml';

const OPEN_MS = 1500;
// a window long enough that a loaded machine's slow curls all fall in it
const breaker = { minimumRequests: 4, errorRatio: 0.5, windowMs: 60_000, buckets: 6, openMs: OPEN_MS, halfOpenRequests: 2 };

t.test('HTTP endpoint breaker: opens on 5xx, refuses, half-opens, closes; a failing trial reopens; 4xx never open it', async (t) => {
  const up = await httpSwitchable();
  const bad = await httpSwitchable();
  t.teardown(() => { up.close(); bad.close(); });
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { endpoint: breaker } },
      { name: 'picky', endpoints: [`127.0.0.1:${bad.port}`], circuitBreaker: { endpoint: breaker } },
    ],
    routes: [
      { match: { path: { prefix: '/picky' } }, action: { cluster: 'picky' } },
      { match: {}, action: { cluster: 'web' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;

  up.mode = 'fail';
  for (let i = 0; i < 4; i++) {
    const r = await curl(`${base}/x`);
    t.equal(r.status, 503, `failure ${i + 1} comes from the upstream`);
    t.equal(r.headers['x-sluice-reason'], undefined);
  }
  const refused = await curl(`${base}/x`);
  t.equal(refused.status, 503, 'open: refused');
  t.equal(refused.headers['x-sluice-reason'], 'circuit_open');
  t.equal(up.hits, 4, 'the refused request never reached the upstream');
  let rows = await breakersOf(s.admin, 'web');
  t.equal(rows.length, 1);
  t.match(rows[0], { scope: 'endpoint', target: `127.0.0.1:${up.port}`, state: 'open', opened: 1, refused: 1 });
  const open = await stats(s.admin);
  const labels = `{cluster="web",scope="endpoint",target="127.0.0.1:${up.port}"}`;
  t.equal(open.get(`sluice_circuit_breaker_state${labels}`), 1, '/stats: the endpoint\'s breaker is open');
  t.equal(open.get(`sluice_circuit_breaker_target_refused_total${labels}`), 1);
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-cb-')), 'stats.txt');
  writeFileSync(file, (await get(`${s.admin}/stats`)).body);
  const check = await run('sh', ['-c', `promtool check metrics < '${file}'`]);
  t.equal(check.code, 0, `promtool accepts the exposition: ${check.stdout}${check.stderr}`);

  // half-open with the upstream still failing: the first trial fails and it opens again
  await sleep(OPEN_MS + 100);
  const trial = await curl(`${base}/x`);
  t.equal(trial.status, 503, 'the trial reached the failing upstream');
  t.equal(trial.headers['x-sluice-reason'], undefined);
  t.equal(up.hits, 5);
  const again = await curl(`${base}/x`);
  t.equal(again.headers['x-sluice-reason'], 'circuit_open', 'a failed trial opens it again');
  rows = await breakersOf(s.admin, 'web');
  t.match(rows[0], { state: 'open', opened: 2, halfOpened: 1, closed: 0 });

  // recovered: two trials succeed and it closes
  up.mode = 'ok';
  await sleep(OPEN_MS + 100);
  for (let i = 0; i < 2; i++) t.equal((await curl(`${base}/x`)).status, 200, `trial ${i + 1} succeeds`);
  rows = await breakersWhen(s.admin, 'web', 'closed');
  t.match(rows[0], { state: 'closed', opened: 2, halfOpened: 2, closed: 1 });
  for (let i = 0; i < 5; i++) t.equal((await curl(`${base}/x`)).status, 200, 'closed: requests pass');

  // the caller's own errors are answers, not failures
  bad.mode = 404;
  for (let i = 0; i < 10; i++) t.equal((await curl(`${base}/picky`)).status, 404);
  t.equal(bad.hits, 10, 'every 4xx came from the upstream');
  t.match((await breakersOf(s.admin, 'picky'))[0], { state: 'closed', opened: 0 });

  const st = await stats(s.admin);
  t.equal(st.get('sluice_circuit_breaker_opened_total{cluster="web",scope="endpoint"}'), 2);
  t.equal(st.get('sluice_circuit_breaker_half_opened_total{cluster="web",scope="endpoint"}'), 2);
  t.equal(st.get('sluice_circuit_breaker_closed_total{cluster="web",scope="endpoint"}'), 1);
  t.equal(st.get('sluice_circuit_breaker_refused_total{cluster="web",scope="endpoint"}'), 2);
  t.equal(st.get('sluice_circuit_breaker_opened_total{cluster="picky",scope="endpoint"}'), 0);
});

t.test('refused connections open an endpoint breaker: the dead endpoint leaves selection, then all open gives circuit_open', async (t) => {
  const up = await httpSwitchable();
  const dead = await deadPort();
  const dead2 = await deadPort();
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'mixed', endpoints: [`127.0.0.1:${up.port}`, `127.0.0.1:${dead}`], circuitBreaker: { endpoint: { ...breaker, minimumRequests: 2, openMs: 60_000 } } },
      { name: 'gone', endpoints: [`127.0.0.1:${dead2}`], circuitBreaker: { endpoint: { ...breaker, minimumRequests: 2, openMs: 60_000 } } },
    ],
    routes: [
      { match: { path: { prefix: '/gone' } }, action: { cluster: 'gone' } },
      { match: {}, action: { cluster: 'mixed' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  // a refused connection is tried again on the other endpoint: the client sees 200 throughout
  for (let i = 0; i < 12; i++) t.equal((await curl(`${base}/x`)).status, 200);
  const st1 = await stats(s.admin);
  const fails = st1.get('sluice_upstream_cx_connect_fail_total{cluster="mixed"}')!;
  t.ok(fails >= 2 && fails <= 3, `the dead endpoint was tried until its breaker opened (${fails} connect failures)`);
  const rows = await breakersOf(s.admin, 'mixed');
  t.match(rows.find((b) => b.target === `127.0.0.1:${dead}`), { state: 'open', opened: 1 });
  t.match(rows.find((b) => b.target === `127.0.0.1:${up.port}`), { state: 'closed', opened: 0 });
  for (let i = 0; i < 6; i++) t.equal((await curl(`${base}/x`)).status, 200);
  t.equal((await stats(s.admin)).get('sluice_upstream_cx_connect_fail_total{cluster="mixed"}'), fails, 'no connection to the open endpoint since');

  // a cluster whose only endpoint is open refuses at once
  for (let i = 0; i < 2; i++) t.equal((await curl(`${base}/gone`)).headers['x-sluice-reason'], 'upstream_connect_failed');
  const r = await curl(`${base}/gone`);
  t.equal(r.status, 503);
  t.equal(r.headers['x-sluice-reason'], 'circuit_open');
});

t.test('gRPC: UNAVAILABLE opens an interface breaker; INVALID_ARGUMENT does not; it closes once the upstream recovers', async (t) => {
  const g = await grpcSwitchable();
  t.teardown(() => g.close());
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'grpc' }],
    clusters: [{ name: 'grpc', endpoints: [`127.0.0.1:${g.port}`], circuitBreaker: { interface: breaker } }],
  });
  t.teardown(() => s.stop());
  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());

  g.mode = grpc.status.INVALID_ARGUMENT;
  for (let i = 0; i < 6; i++) t.equal((await unary(client)).status.code, grpc.status.INVALID_ARGUMENT);
  t.match((await breakersOf(s.admin, 'grpc'))[0], { scope: 'interface', target: 'sluice.test.Echo Unary', state: 'closed', opened: 0 });

  // 6 answers then 6 failures: the ratio reaches 0.5 at the 6th failure
  g.mode = 'fail';
  for (let i = 0; i < 6; i++) {
    const r = await unary(client);
    t.equal(r.status.code, grpc.status.UNAVAILABLE);
    t.equal(r.status.details, 'upstream down', 'the upstream\'s own answer');
  }
  const hits = g.hits;
  const refused = await unary(client);
  t.equal(refused.status.code, grpc.status.UNAVAILABLE, 'open: UNAVAILABLE from Sluice');
  t.equal(refused.status.details, 'circuit breaker open');
  t.equal(g.hits, hits, 'not sent upstream');
  t.match((await breakersOf(s.admin, 'grpc'))[0], { state: 'open', opened: 1, refused: 1 });

  g.mode = 'ok';
  await sleep(OPEN_MS + 100);
  for (let i = 0; i < 2; i++) t.equal((await unary(client)).status.code, grpc.status.OK, `trial ${i + 1}`);
  t.match((await breakersWhen(s.admin, 'grpc', 'closed'))[0], { state: 'closed', closed: 1 });
  t.equal((await unary(client)).status.code, grpc.status.OK);
});

t.test('Dubbo: error statuses open an interface breaker per method; the consumer gets an error while it is open; it closes on recovery', async (t) => {
  const d = await dubboSwitchable();
  t.teardown(() => d.close());
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'dubbo' }],
    clusters: [{ name: 'dubbo', endpoints: [`127.0.0.1:${d.port}`], circuitBreaker: { interface: breaker } }],
  });
  t.teardown(() => s.stop());
  const c = await Consumer.connect(s.port('app'));
  t.teardown(() => c.close());

  d.mode = 'fail';
  for (let i = 0; i < 4; i++) t.equal((await c.call('transfer', [str('a')])).status, 80, 'SERVER_ERROR from the provider');
  const hits = d.hits;
  const refused = await c.call('transfer', [str('a')]);
  t.equal(refused.status, 70, 'open: SERVICE_ERROR from Sluice');
  t.match(refused.error, /circuit_open/);
  t.equal(d.hits, hits);
  // another method of the same interface has a breaker of its own
  d.mode = 'ok';
  const other = await c.call('balance', [str('a')]);
  t.equal(other.status, 20);
  t.equal(other.value, 'up');
  const rows = await breakersOf(s.admin, 'dubbo');
  t.match(rows.find((b) => b.target === 'com.example.TransferService transfer'), { state: 'open', opened: 1 });
  t.match(rows.find((b) => b.target === 'com.example.TransferService balance'), { state: 'closed' });

  await sleep(OPEN_MS + 100);
  for (let i = 0; i < 2; i++) t.equal((await c.call('transfer', [str('a')])).status, 20, `trial ${i + 1}`);
  const transfer = (rows: BreakerRow[]) => rows.find((b) => b.target === 'com.example.TransferService transfer');
  t.match(transfer(await breakersWhen(s.admin, 'dubbo', 'closed', transfer)), { state: 'closed', closed: 1 });
});

t.test('shadow mode lets everything through and counts the opens and refusals enforce makes', async (t) => {
  const up = await httpSwitchable();
  const up2 = await httpSwitchable();
  t.teardown(() => { up.close(); up2.close(); });
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      // open for longer than the test takes, however slow the machine
      { name: 'enforced', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { endpoint: { ...breaker, openMs: 60_000 } } },
      { name: 'shadowed', endpoints: [`127.0.0.1:${up2.port}`], circuitBreaker: { mode: 'shadow', endpoint: { ...breaker, openMs: 60_000 } } },
    ],
    routes: [
      { match: { path: { prefix: '/shadow' } }, action: { cluster: 'shadowed' } },
      { match: {}, action: { cluster: 'enforced' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  up.mode = 'fail';
  up2.mode = 'fail';
  const seen: Record<string, string[]> = { enforced: [], shadowed: [] };
  for (let i = 0; i < 8; i++) {
    seen.enforced.push((await curl(`${base}/x`)).headers['x-sluice-reason'] ?? 'upstream');
    seen.shadowed.push((await curl(`${base}/shadow`)).headers['x-sluice-reason'] ?? 'upstream');
  }
  t.same(seen.enforced, ['upstream', 'upstream', 'upstream', 'upstream', 'circuit_open', 'circuit_open', 'circuit_open', 'circuit_open']);
  t.same(seen.shadowed, Array(8).fill('upstream'), 'shadow: every request reached the upstream');
  t.equal(up2.hits, 8);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_circuit_breaker_opened_total{cluster="shadowed",scope="endpoint"}'), 1, 'it opened as enforce did');
  t.equal(st.get('sluice_circuit_breaker_shadow_refused_total{cluster="shadowed",scope="endpoint"}'), 4, 'and would have refused as many');
  t.equal(st.get('sluice_circuit_breaker_refused_total{cluster="shadowed",scope="endpoint"}'), 0);
  t.equal(st.get('sluice_circuit_breaker_refused_total{cluster="enforced",scope="endpoint"}'), 4);
  t.match((await breakersOf(s.admin, 'shadowed'))[0], { state: 'open', mode: 'shadow', shadowRefused: 4 });
});

t.test('a reload keeps an open breaker whose rule did not change, and starts afresh when it changed', async (t) => {
  const up = await httpSwitchable();
  t.teardown(() => up.close());
  const doc = (openMs: number, extraRoute: boolean) => ({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { endpoint: { ...breaker, openMs } } }],
    routes: extraRoute ? [{ match: { path: { prefix: '/other' } }, action: { directResponse: { status: 204 } } }] : [],
  });
  const s = await startSluice(doc(60_000, false));
  t.teardown(() => s.stop());
  const url = `http://127.0.0.1:${s.port('app')}/x`;
  up.mode = 'fail';
  for (let i = 0; i < 4; i++) await curl(url);
  t.equal((await curl(url)).headers['x-sluice-reason'], 'circuit_open');
  up.mode = 'ok';
  const reload = async (d: Record<string, unknown>) => {
    const full = { ...d, admin: { address: '127.0.0.1:0', tokenFile: (s.sluice.currentConfig.admin.tokenFile) }, listeners: [{ name: 'app', address: `127.0.0.1:${s.port('app')}`, cluster: 'web' }] };
    const r = await adminPost(s.admin, '/config', YAML.stringify(full));
    t.equal(r.status, 200, `reload: ${r.body}`);
  };
  await reload(doc(60_000, true));
  t.equal((await curl(`http://127.0.0.1:${s.port('app')}/other`)).status, 204, 'the new config is in force');
  t.equal((await curl(url)).headers['x-sluice-reason'], 'circuit_open', 'the same rule: still open');
  await reload(doc(30_000, true));
  const r = await curl(url);
  t.equal(r.status, 200, 'a changed rule: a new breaker, closed');
  t.equal(r.headers['x-sluice-reason'], undefined);
});

t.test('timeouts and resets are failures: each opens an endpoint breaker', async (t) => {
  const slow = await httpSwitchable();
  const rude = await httpSwitchable();
  t.teardown(() => { slow.release(); slow.close(); rude.close(); });
  const cb = { endpoint: { ...breaker, minimumRequests: 2, openMs: 60_000 } };
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'slow', endpoints: [`127.0.0.1:${slow.port}`], circuitBreaker: cb },
      { name: 'rude', endpoints: [`127.0.0.1:${rude.port}`], circuitBreaker: cb },
    ],
    routes: [
      { match: { path: { prefix: '/slow' } }, action: { cluster: 'slow', timeoutMs: 300 } },
      { match: {}, action: { cluster: 'rude' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  slow.mode = 'hold';
  rude.mode = 'reset';
  for (let i = 0; i < 2; i++) {
    const r = await curl(`${base}/slow`);
    t.equal(r.status, 504);
    t.equal(r.headers['x-sluice-reason'], 'upstream_timeout');
    t.equal((await curl(`${base}/rude`)).headers['x-sluice-reason'], 'upstream_reset');
  }
  t.equal((await curl(`${base}/slow`)).headers['x-sluice-reason'], 'circuit_open', 'two timeouts opened it');
  t.equal((await curl(`${base}/rude`)).headers['x-sluice-reason'], 'circuit_open', 'two resets opened it');
  t.equal(slow.hits, 2);
  t.equal(rude.hits, 2);
});
