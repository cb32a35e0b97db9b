import t from 'tap';
import { get, httpUpstream, run, startSluice, stats } from '../helpers/harness';

t.test('HTTP/1.1 keep-alive through an explicit listener, with curl', async (t) => {
  const up = await httpUpstream((req, res) => {
    res.setHeader('x-upstream-port', String(req.socket.localPort));
    res.end(`${req.method} ${req.url} via=${req.headers.via}`);
  });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const base = `http://127.0.0.1:${s.port('app')}`;
  // two requests on one connection: curl reuses it and says so
  const r = await run('curl', ['-sS', '-v', `${base}/a`, `${base}/b`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'GET /a via=1.1 sluiceGET /b via=1.1 sluice');
  t.match(r.stderr, /Re-using existing connection/);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_cx_total{listener="app"}'), 1);
  t.equal(st.get('sluice_downstream_rq_xx_total{protocol="http1",class="2xx"}'), 2);
  t.equal(st.get('sluice_upstream_rq_total{cluster="web"}'), 2);
  t.equal(st.get('sluice_upstream_cx_total{cluster="web"}'), 1, 'one upstream connection, kept alive');
});

t.test('no route answers 404 with a reason header', async (t) => {
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    routes: [{ match: { path: { prefix: '/only' } }, action: { directResponse: { status: 200, body: 'only\n' } } }],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  const ok = await get(`${base}/only/this`);
  t.equal(ok.status, 200);
  t.equal(ok.body, 'only\n');
  const miss = await get(`${base}/other`);
  t.equal(miss.status, 404);
  t.equal(miss.headers['x-sluice-reason'], 'no_route');
});
