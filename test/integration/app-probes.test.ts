/**
 * The application's kubelet probes, rewritten by `sluice inject` to the health address: with
 * inbound strict mTLS a plaintext probe of the application's port is refused, and the same probe
 * through GET /app-health/<container>/<probe> reaches the application and says what it answered.
 * Sluice runs through the real CLI, with SLUICE_APP_PROBES as inject writes it; curl plays kubelet;
 * the applications are real HTTP, TCP and gRPC (@grpc/grpc-js) servers.
 */
import * as grpc from '@grpc/grpc-js';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import t from 'tap';
import { TestPki } from '../helpers/certs';
import { run, spawnSluice, writeConfig, withTestDefaults } from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/web');

async function listen(srv: net.Server): Promise<number> {
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return (srv.address() as AddressInfo).port;
}

/** grpc.health.v1.Health/Check with hand-written messages: SERVING (1) or NOT_SERVING (2). */
async function grpcHealth(status: () => number): Promise<{ port: number; close(): void }> {
  const s = new grpc.Server();
  s.addService({
    Check: {
      path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false,
      requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b,
    },
  }, {
    Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      // HealthCheckRequest { string service = 1 }: only "web" is known
      const asked = call.request.length > 2 ? call.request.subarray(2).toString() : '';
      if (asked !== 'web') { cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' }); return; }
      cb(null, Buffer.from([0x08, status()]));
    },
  });
  const port = await new Promise<number>((resolve, reject) => s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { port, close: () => s.forceShutdown() };
}

t.test('rewritten probes reach the application through the health address while strict mTLS refuses plaintext on its port', async (t) => {
  let healthy = 200;
  let hang = false;
  const app = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      if (hang) return; // never answers
      res.writeHead(healthy, req.headers['x-probe'] === 'yes' ? { 'x-seen': '1' } : {});
      res.end(String(healthy));
      return;
    }
    if (req.url === '/moved') { res.writeHead(302, { location: '/elsewhere' }); res.end(); return; }
    res.end('app');
  });
  const appPort = await listen(app);
  let serving = 1;
  const g = await grpcHealth(() => serving);
  // a port nothing listens on
  const spare = net.createServer();
  const sparePort = await listen(spare);
  await new Promise<void>((r) => spare.close(() => r()));
  t.teardown(() => { app.close(); app.closeAllConnections(); g.close(); });

  const probes = {
    'web/livez': { httpGet: { port: appPort, path: '/healthz', scheme: 'HTTP', httpHeaders: [{ name: 'x-probe', value: 'yes' }] }, timeoutSeconds: 1 },
    'web/readyz': { tcpSocket: { port: appPort } },
    'web/startupz': { grpc: { port: g.port, service: 'web' } },
    'gone/livez': { tcpSocket: { port: sparePort } },
    'gone/readyz': { httpGet: { port: sparePort, path: '/', scheme: 'HTTP' } },
    'moved/livez': { httpGet: { port: appPort, path: '/moved', scheme: 'HTTP' } },
    'other/livez': { grpc: { port: g.port, service: 'nope' } },
  };
  const file = writeConfig(withTestDefaults({
    workers: { threads: 1 },
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${appPort}`] }],
  }));
  const child = spawnSluice(['start', '--config', file, '--health-address', '127.0.0.1:0'], { env: { SLUICE_APP_PROBES: JSON.stringify(probes) } });
  t.teardown(async () => {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
    await child.exited;
  });
  const started = await sluiceStarted(child);
  const line = child.output().split('\n').find((l) => l.includes('"sluice started"'))!;
  const health = (JSON.parse(line) as { health: string }).health;
  const probe = async (p: string) => {
    const r = await run('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', '--max-time', '10', `http://${health}${p}`]);
    const lines = r.stdout.trimEnd().split('\n');
    return { status: Number(lines.pop()), body: lines.join('\n').trim() };
  };

  // what kubelet's own probe would meet on the application's (captured) port: strict refuses it
  const plain = await run('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${started.ports.in}/healthz`]);
  t.not(plain.code, 0, 'a plaintext probe of the strict port gets no answer');

  t.same(await probe('/app-health/web/livez'), { status: 200, body: 'application answered 200' }, 'HTTP probe: the app answered 200');
  t.same(await probe('/app-health/web/readyz'), { status: 200, body: 'connected' }, 'TCP probe');
  t.same(await probe('/app-health/web/startupz'), { status: 200, body: 'SERVING' }, 'gRPC health check');
  t.same(await probe('/app-health/moved/livez'), { status: 200, body: 'application answered 302' }, 'a redirect passes, as kubelet counts it, and is not handed on');

  healthy = 503;
  t.same(await probe('/app-health/web/livez'), { status: 503, body: 'application answered 503' }, 'the app failing its probe fails the rewritten one');
  healthy = 500;
  t.equal((await probe('/app-health/web/livez')).status, 500);
  serving = 2;
  t.same(await probe('/app-health/web/startupz'), { status: 503, body: 'health check answered status 2' }, 'NOT_SERVING fails');
  t.match(await probe('/app-health/other/livez'), { status: 503, body: /grpc-status 5/ }, 'an unknown gRPC service fails');
  t.match(await probe('/app-health/gone/livez'), { status: 503, body: /cannot connect: ECONNREFUSED/ });
  t.match(await probe('/app-health/gone/readyz'), { status: 503, body: /cannot reach the application: ECONNREFUSED/ });

  hang = true;
  const t0 = Date.now();
  t.same(await probe('/app-health/web/livez'), { status: 503, body: 'no answer within 1000 ms' }, 'a hung app fails within the probe\'s timeoutSeconds');
  t.ok(Date.now() - t0 < 3000, `answered in ${Date.now() - t0} ms`);
  hang = false;
  healthy = 200;
  // probes of one key arriving together share one request to the app
  let seen = 0;
  app.on('request', (req) => { if (req.url === '/healthz') seen++; });
  const together = await Promise.all(Array.from({ length: 5 }, () => probe('/app-health/web/livez')));
  t.same(together.map((r) => r.status), [200, 200, 200, 200, 200]);
  t.ok(seen >= 1 && seen <= 5, `${seen} request(s) to the app for 5 probes`);

  for (const p of ['/app-health/web/nope', '/app-health/nobody/livez', '/app-health/']) {
    t.equal((await probe(p)).status, 404, `${p}: no such probe`);
  }
  const post = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `http://${health}/app-health/web/livez`]);
  t.equal(post.stdout, '404', 'only GET');
  child.proc.kill('SIGTERM');
  t.equal(await child.exited, 0);
});

t.test('SLUICE_APP_PROBES that cannot be read stops start-up with the reason', async (t) => {
  const file = writeConfig(withTestDefaults({ listeners: [] }));
  const cases: Array<[string, string[], RegExp]> = [
    ['{not json', ['--health-address', '127.0.0.1:0'], /SLUICE_APP_PROBES: not JSON/],
    ['{"web/livez": {"httpGet": {"port": 0}}}', ['--health-address', '127.0.0.1:0'], /"web\/livez": httpGet\.port must be a port number/],
    ['{"web/alive": {"tcpSocket": {"port": 80}}}', ['--health-address', '127.0.0.1:0'], /the key must be "<container name>\/<livez\|readyz\|startupz>"/],
    ['{"web/livez": {"tcpSocket": {"port": 80}, "grpc": {"port": 81}}}', ['--health-address', '127.0.0.1:0'], /exactly one of httpGet, tcpSocket, grpc/],
    ['{"web/livez": {"httpGet": {"port": 80, "path": "/a b"}}}', ['--health-address', '127.0.0.1:0'], /httpGet\.path must start with \//],
    ['{"web/livez": {"tcpSocket": {"port": 80}}}', [], /SLUICE_APP_PROBES needs --health-address/],
  ];
  for (const [env, args, message] of cases) {
    const child = spawnSluice(['start', '--config', file, ...args], { env: { SLUICE_APP_PROBES: env } });
    t.equal(await child.exited, 2, `${env}: exit 2`);
    t.match(child.output(), message);
  }
});
