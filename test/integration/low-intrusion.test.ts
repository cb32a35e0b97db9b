/**
 * Low-intrusion mode: no iptables; the application calls the sidecar on 127.0.0.1,
 * one port per upstream service. Also the health address kubelet probes.
 */
import t from 'tap';
import { get, httpUpstream, spawnSluice, stats, waitFor, writeConfig } from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

t.test('one local port per upstream service, through the real CLI', async (t) => {
  const orders = await httpUpstream((req, res) => res.end(`orders ${req.url}`));
  const accounts = await httpUpstream((req, res) => res.end(`accounts ${req.url}`));
  const file = writeConfig({
    admin: { address: '127.0.0.1:0' },
    workers: { threads: 1 },
    listeners: [
      { name: 'orders', address: '127.0.0.1:0', cluster: 'orders' },
      { name: 'accounts', address: '127.0.0.1:0', cluster: 'accounts' },
    ],
    clusters: [
      { name: 'orders', endpoints: [`127.0.0.1:${orders.port}`] },
      { name: 'accounts', endpoints: [`127.0.0.1:${accounts.port}`] },
    ],
  });
  const child = spawnSluice(['start', '--config', file, '--health-address', '127.0.0.1:0']);
  t.teardown(async () => {
    if (child.proc.exitCode === null) child.proc.kill('SIGTERM');
    await child.exited;
    await orders.close();
    await accounts.close();
  });
  const started = await sluiceStarted(child);
  const o = await get(`http://127.0.0.1:${started.ports.orders}/o/1`);
  const a = await get(`http://127.0.0.1:${started.ports.accounts}/a/2`);
  t.equal(o.body, 'orders /o/1');
  t.equal(a.body, 'accounts /a/2');
  t.equal(o.headers.via, '1.1 sluice');
  const st = await stats(started.admin);
  t.equal(st.get('sluice_upstream_rq_total{cluster="orders"}'), 1);
  t.equal(st.get('sluice_upstream_rq_total{cluster="accounts"}'), 1);

  // the health address serves /ready and /stats (for kubelet and Prometheus), nothing else
  const line = child.output().split('\n').find((l) => l.includes('"sluice started"'))!;
  const health = (JSON.parse(line) as { health: string }).health;
  t.match(health, /^127\.0\.0\.1:\d+$/);
  t.equal((await get(`http://${health}/ready`)).status, 200);
  t.equal((await get(`http://${health}/config_dump`)).status, 404, 'the rest of the admin API is not exposed on the health address');
  t.equal((await get(`http://${health}/clusters`)).status, 404);

  child.proc.kill('SIGTERM');
  t.equal(await child.exited, 0);
});

t.test('a bad health address stops start-up with a clear error', async (t) => {
  const child = spawnSluice(['start', '--health-address', 'nonsense']);
  t.equal(await child.exited, 2, 'refused before anything listens');
  await waitFor(() => child.output().includes('nonsense'), 5000, 'the error message');
  t.match(child.output(), /is not host:port|has no port/);
});
