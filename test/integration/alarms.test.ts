/**
 * Alarms that act, end to end: wrk and curl against upstreams that answer HTTP 500. The
 * error_ratio alarm of each cluster fires; a local HTTP server (the webhook) receives the JSON of
 * the firing and of the resolution; the action switches on (the degraded route answers its
 * fallback, the cluster forced open refuses with circuit_open, neither reaching the upstream) and
 * off again after its forMs, when requests reach the upstream again. GET /alarms, GET /protection
 * and /stats show it.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { adminRequest, get, run, startSluice, stats, withTestDefaults } from '../helpers/harness';
import { curl } from './filter-peers';
import { httpSwitchable } from './protection-peers';

interface Hook { alarm: string; state: string; value: number | null; threshold: number; at: string; action: Record<string, unknown> | null }

/** The webhook: records every JSON body POSTed to it, and when it came. */
async function webhookServer() {
  const got: Array<Hook & { receivedAt: number }> = [];
  const waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      got.push({ ...(JSON.parse(body) as Hook), receivedAt: Date.now() });
      res.writeHead(204).end();
      for (const w of waiters.splice(0)) w();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  /** The first body for this alarm and state; fails after timeoutMs. */
  const wait = async (alarm: string, state: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const h = got.find((x) => x.alarm === alarm && x.state === state);
      if (h) return h;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${state} webhook for ${alarm} within ${timeoutMs} ms (got ${JSON.stringify(got)})`);
      await new Promise<void>((r) => { const tm = setTimeout(r, left); waiters.push(() => { clearTimeout(tm); r(); }); });
    }
  };
  return { url: `http://127.0.0.1:${port}/hook`, got, wait, close: () => server.close() };
}

/** curl the URL until `ok` holds for the answer; fails after timeoutMs (a curl at most every 100 ms). */
async function until(url: string, ok: (r: Awaited<ReturnType<typeof curl>>) => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await curl(url, { maxTime: 5 });
    if (ok(r)) return { r, at: Date.now() };
    if (Date.now() > deadline) throw new Error(`${url}: still ${r.status} ${r.headers['x-sluice-reason'] ?? ''} after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Sends failing calls (`call`) until `fired` settles, and gives its result: the alarm's window
 * sees as many failures as it needs however slowly this machine runs the client.
 */
async function failUntilFired<T>(fired: Promise<T>, call: (firedYet: () => boolean) => Promise<void>): Promise<T> {
  let settled = false;
  const done = fired.finally(() => { settled = true; });
  done.catch(() => {});
  while (!settled) await call(() => settled);
  return done;
}

t.test('an error_ratio alarm fires on a failing upstream, POSTs its webhook, and its action switches on and off', async (t) => {
  const orders = await httpSwitchable();
  const payments = await httpSwitchable();
  orders.mode = 500;
  payments.mode = 500;
  const hook = await webhookServer();
  t.teardown(async () => { hook.close(); await orders.close(); await payments.close(); });
  const forMs = 5000;
  const alarm = (name: string, cluster: string, action: Record<string, unknown>) => ({
    name, signal: { kind: 'error_ratio', cluster }, above: 0.5, windowMs: 2000, minRequests: 10, webhook: hook.url, action: { ...action, forMs },
  });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'orders', endpoints: [`127.0.0.1:${orders.port}`] },
      { name: 'payments', endpoints: [`127.0.0.1:${payments.port}`] },
    ],
    routes: [
      { name: 'orders', match: { path: { prefix: '/orders' } }, action: { cluster: 'orders' }, fallback: { http: { status: 200, headers: { 'x-cache': 'stale' }, body: 'cached orders\n' } } },
      { name: 'payments', match: { path: { prefix: '/pay' } }, action: { cluster: 'payments' } },
    ],
    alarms: [
      alarm('orders-errors', 'orders', { kind: 'degrade_route', route: 'orders' }),
      alarm('payments-errors', 'payments', { kind: 'open_breaker', cluster: 'payments' }),
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;

  const before = JSON.parse((await get(`${s.admin}/alarms`)).body);
  t.match(before.alarms, [{ name: 'orders-errors', state: 'ok', actionActive: false }, { name: 'payments-errors', state: 'ok' }]);
  t.same(before.actions, []);
  t.equal((await curl(`${base}/orders`)).status, 500, 'before: the upstream\'s 500 passes through');

  // ── degrade_route, under wrk's load ──
  const load = run('wrk', ['-t', '1', '-c', '4', '-d', '3s', '--timeout', '2s', `${base}/orders`], 20_000);
  const fired = await hook.wait('orders-errors', 'firing', 10_000);
  t.match(fired, { alarm: 'orders-errors', state: 'firing', threshold: 0.5, action: { kind: 'degrade_route', route: 'orders', forMs } });
  t.ok(fired.value! > 0.5 && fired.value! <= 1, `the ratio that fired it (${fired.value})`);
  t.ok(!Number.isNaN(Date.parse(fired.at)), 'with the time it fired');
  // while wrk still runs: the action holds forMs from the firing, which a slow wrk could outlast
  const degraded = await curl(`${base}/orders`);
  t.equal(degraded.status, 200, 'degraded: the route\'s fallback answers');
  t.equal(degraded.body, 'cached orders\n');
  t.equal(degraded.headers['x-cache'], 'stale');
  t.equal(degraded.headers['x-sluice-fallback'], 'degraded');
  const during = JSON.parse((await get(`${s.admin}/alarms`)).body);
  t.match(during.actions, [{ alarm: 'orders-errors', kind: 'degrade_route', route: 'orders' }]);
  t.match(during.alarms[0], { name: 'orders-errors', actionActive: true, threshold: 0.5 });
  t.ok(during.alarms[0].actionUntil, 'says until when the action holds at least');
  const prot = JSON.parse((await get(`${s.admin}/protection`)).body);
  t.match(prot.alarms.actions, [{ alarm: 'orders-errors' }], 'GET /protection lists it too');
  const w = await load;
  t.equal(w.code, 0, w.stderr);
  const hitsWhenFired = orders.hits;

  // no request reaches the upstream any more: the window empties, the alarm resolves
  const resolved = await hook.wait('orders-errors', 'resolved', 10_000);
  t.match(resolved, { alarm: 'orders-errors', state: 'resolved', threshold: 0.5 });
  // ... and the action ends forMs after it fired: requests reach the upstream again
  const back = await until(`${base}/orders`, (r) => r.status === 500, 10_000);
  const onFor = back.at - fired.receivedAt;
  t.ok(onFor >= forMs - 1100, `the action held ${onFor} ms (forMs ${forMs}, sampled each second)`);
  t.ok(onFor < forMs + 4000, `and ended soon after (${onFor} ms)`);
  t.ok(orders.hits > hitsWhenFired, 'the upstream is reached again');

  // ── open_breaker, with curl ──
  // failing calls until the alarm fires (however slowly this machine runs curl): each is the
  // upstream's 500 until the action switches on, after which the breaker may answer
  const pfired = await failUntilFired(hook.wait('payments-errors', 'firing', 10_000), async (firedYet) => {
    const st = (await curl(`${base}/pay`)).status;
    if (!firedYet()) t.ok(st === 500 || st === 503, `a failing call: ${st}`);
  });
  t.match(pfired.action, { kind: 'open_breaker', cluster: 'payments' });
  const hits = payments.hits;
  const open = await until(`${base}/pay`, (r) => r.status === 503, 3000);
  t.equal(open.r.headers['x-sluice-reason'], 'circuit_open', 'forced open: refused as circuit_open');
  t.equal(payments.hits, hits, 'without reaching the upstream');
  await hook.wait('payments-errors', 'resolved', 10_000);
  await until(`${base}/pay`, (r) => r.status === 500, 10_000);
  t.ok(payments.hits > hits, 'closed again after forMs: the upstream answers');

  const st = await stats(s.admin);
  t.equal(st.get('sluice_alarm_fired_total{alarm="orders-errors"}'), 1);
  t.equal(st.get('sluice_alarm_actions_total{alarm="orders-errors",action="degrade_route"}'), 1);
  t.equal(st.get('sluice_alarm_actions_total{alarm="payments-errors",action="open_breaker"}'), 1);
  t.equal(st.get('sluice_alarm_firing{alarm="orders-errors"}'), 0);
  t.equal(st.get('sluice_alarm_action_active{alarm="orders-errors",action="degrade_route"}'), 0);
  t.equal(st.get('sluice_alarm_webhook_failures_total{alarm="orders-errors"}'), 0);
  t.ok(st.get('sluice_fallback_total{route="orders",reason="degraded"}')! >= 1, 'fallbacks counted under their reason');
  t.equal(hook.got.filter((h) => h.alarm === 'orders-errors').map((h) => h.state).join(','), 'firing,resolved', 'one firing, one resolved');
});

t.test('tighten_rate_limit: fewer requests admitted under wrk while it holds; a reload that keeps the alarm keeps its state', async (t) => {
  const api = await httpSwitchable();
  api.mode = 500;
  const hook = await webhookServer();
  t.teardown(async () => { hook.close(); await api.close(); });
  const forMs = 5000;
  const doc = (extraRoutes: unknown[] = []) => ({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [{ name: 'api', endpoints: [`127.0.0.1:${api.port}`] }],
    routes: [...extraRoutes, { name: 'api', match: { path: { prefix: '/' } }, action: { cluster: 'api' } }],
    rateLimits: [{ name: 'api-limit', requestsPerSecond: 100, burst: 20 }],
    alarms: [{
      name: 'api-errors', signal: { kind: 'error_ratio', cluster: 'api' }, above: 0.5, windowMs: 1000, minRequests: 5, webhook: hook.url,
      action: { kind: 'tighten_rate_limit', rateLimit: 'api-limit', factor: 0.1, forMs },
    }],
  });
  const s = await startSluice(doc());
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  const admitted = async () => (await stats(s.admin)).get('sluice_ratelimit_admitted_total{rule="api-limit"}') ?? 0;
  const wrk = async () => {
    const before = await admitted();
    const w = await run('wrk', ['-t', '1', '-c', '4', '-d', '2s', '--timeout', '2s', `${base}/x`], 20_000);
    t.equal(w.code, 0, w.stderr);
    return (await admitted()) - before;
  };

  const fired = await failUntilFired(hook.wait('api-errors', 'firing', 10_000), async () => { await curl(`${base}/x`); });
  t.match(fired.action, { kind: 'tighten_rate_limit', rateLimit: 'api-limit', factor: 0.1 });
  api.mode = 'ok';

  // a reload that leaves the alarm as it was: still firing, the action still in force
  const pushed = await adminRequest(s.admin, 'POST', '/config', JSON.stringify(withTestDefaults(doc([{ name: 'health', match: { path: { exact: '/healthz' } }, action: { directResponse: { status: 200 } } }]))));
  t.equal(pushed.status, 200, pushed.body);
  const after = JSON.parse((await get(`${s.admin}/alarms`)).body);
  t.match(after.alarms[0], { name: 'api-errors', actionActive: true, fired: 1 }, 'kept across the reload');

  const tightened = await wrk();
  // off after forMs (the upstream answers 200 now: the alarm resolved)
  const deadline = Date.now() + 15_000;
  while (JSON.parse((await get(`${s.admin}/alarms`)).body).actions.length > 0) {
    if (Date.now() > deadline) throw new Error('the action did not end');
    await new Promise((r) => setTimeout(r, 200));
  }
  await new Promise((r) => setTimeout(r, 300)); // let the bucket fill up again, as before the tightened run
  const normal = await wrk();
  // tightened: a burst of 20 and 10/s over 2 s, about 40; at the rule's rate, 20 and 100/s, about 220
  t.ok(tightened <= 60, `tightened: ${tightened} admitted in 2 s`);
  t.ok(normal >= 150, `back to the rule's rate: ${normal} admitted in 2 s`);
  t.equal(hook.got.map((h) => h.state).join(','), 'firing,resolved');
});
