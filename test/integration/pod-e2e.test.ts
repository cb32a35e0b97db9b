/**
 * A pod and its neighbours, in network namespaces joined by veth:
 *
 *   remote-a 10.232.0.3 ──veth── pod 10.232.0.2 / 10.232.1.2 ──veth── remote-b 10.232.1.3
 *     :8080 HTTP/1.1               app :9080 (HTTP)                     :8080 HTTP/1.1
 *     :8443 h2c                    Sluice as uid 1337, default config
 *     :3306 HTTP (excluded port)   rules by scripts/iptables/sluice-iptables.sh
 *                                    -o 3306 (port excluded) -x 10.232.1.0/24 (range excluded)
 *
 * Every upstream answers with the `via` header it received, so the test can tell a
 * request that went through Sluice from one that bypassed it.
 */
import path from 'node:path';
import t from 'tap';
import { ROOT, waitFor } from '../helpers/harness';
import { createNetns, nodeInNetns, parseStats, sluiceStarted, spawnSluiceInNetns, vethPair, type Netns } from '../helpers/netns';

const SCRIPT = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables.sh');
const CLEAN = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables-clean.sh');

const HTTP_SERVER = `
const http = require('http');
const [host, port, name] = process.argv.slice(1);
http.createServer((req, res) => {
  res.end(name + ' ' + req.url + ' http/' + req.httpVersion + ' via=' + (req.headers.via || 'none') + ' from=' + req.socket.remoteAddress);
}).listen(Number(port), host, () => console.log('listening'));
`;

const H2_SERVER = `
const http2 = require('http2');
const [host, port] = process.argv.slice(1);
const s = http2.createServer();
s.on('stream', (stream, h) => {
  stream.respond({ ':status': 200 });
  stream.end('h2 ' + h[':path'] + ' via=' + (h.via || 'none'));
});
s.listen(Number(port), host, () => console.log('listening'));
`;

async function curl(ns: Netns, args: string[]): Promise<string> {
  const r = await ns.exec('curl', ['-sS', '--max-time', '10', ...args], 15_000);
  if (r.code !== 0) throw new Error(`curl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

t.test('pod-like capture with the init-container script', async (t) => {
  const pod = await createNetns('pod');
  const remoteA = await createNetns('ra');
  const remoteB = await createNetns('rb');
  const procs: Array<{ kill(): Promise<void> }> = [];
  t.teardown(async () => {
    for (const p of procs) await p.kill();
    for (const ns of [pod, remoteA, remoteB]) await ns.destroy();
  });
  await vethPair(pod, '10.232.0.2', remoteA, '10.232.0.3');
  await vethPair(pod, '10.232.1.2', remoteB, '10.232.1.3');

  const start = async (ns: Netns, script: string, args: string[]) => {
    const p = nodeInNetns(ns, ['-e', script, ...args]);
    procs.push(p);
    await waitFor(() => p.output().includes('listening'), 10_000, `server ${args.join(' ')}`);
  };
  await start(remoteA, HTTP_SERVER, ['10.232.0.3', '8080', 'remote-a']);
  await start(remoteA, H2_SERVER, ['10.232.0.3', '8443']);
  await start(remoteA, HTTP_SERVER, ['10.232.0.3', '3306', 'excluded-port']);
  await start(remoteB, HTTP_SERVER, ['10.232.1.3', '8080', 'remote-b']);
  await start(pod, HTTP_SERVER, ['0.0.0.0', '9080', 'app']);

  const before = (await pod.must('iptables', ['-t', 'nat', '-S']));
  // the init container: rules, then the self-check (before the proxy starts: it borrows :15001)
  const init = await pod.exec(SCRIPT, ['-o', '3306', '-x', '10.232.1.0/24']);
  t.equal(init.code, 0, init.stderr);
  t.match(init.stdout, /capture works/);

  // the sidecar: the embedded default config, as uid 1337
  const sluice = spawnSluiceInNetns(pod, ['start'], { uid: 1337, gid: 1337 });
  procs.push(sluice);
  const started = await sluiceStarted(sluice);
  t.same(started.ports, { outbound: 15001, inbound: 15006 });
  const stats = async () => parseStats(await curl(pod, [`${started.admin}/stats`]));
  t.equal((await stats()).get('sluice_capture_active'), 1);

  await t.test('outbound HTTP/1.1 is captured and reaches its original destination', async (t) => {
    t.equal(await curl(pod, ['http://10.232.0.3:8080/orders']), 'remote-a /orders http/1.1 via=1.1 sluice from=10.232.0.2');
  });

  await t.test('outbound HTTP/2 is captured and stays HTTP/2', async (t) => {
    t.equal(await curl(pod, ['--http2-prior-knowledge', 'http://10.232.0.3:8443/grpc.like/Call']), 'h2 /grpc.like/Call via=1.1 sluice');
  });

  await t.test('the proxy\'s own upstream connections are not captured again', async (t) => {
    const s = await stats();
    // two requests so far, two captured connections: a re-captured upstream connection would add more
    t.equal(s.get('sluice_downstream_cx_total{listener="outbound"}'), 2);
    t.equal(s.get('sluice_upstream_rq_total{cluster="original_dst"}'), 2);
  });

  await t.test('excluded port and excluded range bypass the proxy', async (t) => {
    t.equal(await curl(pod, ['http://10.232.0.3:3306/db']), 'excluded-port /db http/1.1 via=none from=10.232.0.2');
    t.equal(await curl(pod, ['http://10.232.1.3:8080/b']), 'remote-b /b http/1.1 via=none from=10.232.1.2');
    t.equal((await stats()).get('sluice_downstream_cx_total{listener="outbound"}'), 2);
  });

  await t.test('inbound calls reach the application through the inbound listener', async (t) => {
    const body = await curl(remoteA, ['http://10.232.0.2:9080/hello']);
    // the app sees Sluice (over loopback) as its peer, and the via header it added
    t.equal(body, 'app /hello http/1.1 via=1.1 sluice from=127.0.0.1');
    t.equal((await stats()).get('sluice_downstream_cx_total{listener="inbound"}'), 1);
  });

  await t.test('after the removal script the pod behaves as if Sluice had never been there', async (t) => {
    const clean = await pod.exec(CLEAN, []);
    t.equal(clean.code, 0, clean.stderr);
    t.equal(await pod.must('iptables', ['-t', 'nat', '-S']), before);
    t.equal(await curl(pod, ['http://10.232.0.3:8080/after']), 'remote-a /after http/1.1 via=none from=10.232.0.2');
    t.equal(await curl(remoteA, ['http://10.232.0.2:9080/after']), 'app /after http/1.1 via=none from=10.232.0.3');
    const s = await stats();
    t.equal(s.get('sluice_downstream_cx_total{listener="outbound"}'), 2);
    t.equal(s.get('sluice_downstream_cx_total{listener="inbound"}'), 1);
  });
});
