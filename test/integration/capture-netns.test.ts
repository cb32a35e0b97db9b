/**
 * Transparent capture for real: Sluice runs as uid 1337 inside a network
 * namespace of its own, with the iptables nat rules an init container would
 * install (outbound OUTPUT → 15001 with the proxy's uid exempt, inbound
 * PREROUTING → 15006). Upstreams live in the namespace too; clients are curl
 * and small Node scripts run with `ip netns exec`.
 *
 *   client ns ──veth── sluice ns: 10.x.0.2      inbound  → 15006 → 127.0.0.1:<original port>
 *                       lo: curl 127.0.0.2:port  outbound → 15001 → 127.0.0.2:<original port>
 */
import { mkdtempSync, chmodSync, statSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { BIN, ROOT } from '../helpers/harness';
import { createNetns, nodeInNetns, parseStats, sluiceStarted, spawnSluiceInNetns, vethPair, type Netns, type NsProcess } from '../helpers/netns';

const PROXY_UID = 1337;
const OUT_PORT = 15001;
const IN_PORT = 15006;
const ADMIN_PORT = 15000;
const UP = '127.0.0.2';
const H1_PORT = 8080;
const H2_PORT = 8081;
const BANNER_PORT = 8082;
const APP_PORT = 8090;
const NS_ADDR = '10.213.7.2';
const CLIENT_ADDR = '10.213.7.1';

/** Upstreams inside the namespace: each answers with who it is and what it saw. */
const UPSTREAMS = `
const http = require('http'), http2 = require('http2'), net = require('net');
const [up, h1, h2, banner, app] = process.argv.slice(1);
const info = (server, req) => JSON.stringify({ server, httpVersion: req.httpVersion, url: req.url, via: req.headers.via || null,
  local: req.socket.localAddress + ':' + req.socket.localPort });
const servers = [
  http.createServer((req, res) => res.end(info('h1', req))).listen(+h1, up),
  // h2c only: an HTTP/1 request here fails, so a 200 proves the request arrived as HTTP/2
  http2.createServer((req, res) => res.end(info('h2', req))).listen(+h2, up),
  net.createServer((s) => { s.write('BANNER sluice-test\\r\\n'); s.pipe(s); }).listen(+banner, up),
  http.createServer((req, res) => res.end(info('app', req))).listen(+app, '127.0.0.1'),
];
let n = 0;
for (const s of servers) s.on('listening', () => { if (++n === servers.length) console.log('READY'); });
`;

/** A TCP client: connects, optionally writes, collects what comes back until close or a deadline. */
const TCP_CLIENT = `
const net = require('net');
const [host, port, mode] = process.argv.slice(1);
const s = net.connect(+port, host);
let got = '';
s.setEncoding('latin1');
s.on('data', (d) => {
  got += d;
  if (mode === 'banner' && got.includes('\\r\\n') && !got.includes('ping')) s.write('ping\\n');
  if (mode === 'banner' && got.endsWith('ping\\n')) s.end();
});
if (mode === 'opaque') s.write(Buffer.from([0, 1, 2, 0xff]));
s.on('error', (e) => { got += '[error ' + e.code + ']'; });
const timer = setTimeout(() => { console.log(JSON.stringify({ got, closed: false })); process.exit(0); }, 8000);
s.on('close', () => { clearTimeout(timer); console.log(JSON.stringify({ got, closed: true })); });
`;

function worldReadable(file: string): string | null {
  // every directory on the way must be o+x, the file (or dir) o+r
  const parts = path.resolve(file).split(path.sep).filter(Boolean);
  let p = '/';
  for (const part of parts) {
    p = path.join(p, part);
    const st = statSync(p);
    const need = st.isDirectory() ? 0o005 : 0o004;
    if ((st.mode & need) !== need) return p;
  }
  return null;
}

let ns: Netns;
let client: Netns;
let sluice: NsProcess;
let upstreams: NsProcess;

t.before(async () => {
  ns = await createNetns('cap');
  client = await createNetns('cli');
});

t.teardown(async () => {
  await sluice?.kill();
  await upstreams?.kill();
  await client?.destroy();
  await ns?.destroy();
});

async function adminStats(): Promise<Map<string, number>> {
  const r = await ns.exec('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${ADMIN_PORT}/stats`]);
  if (r.code !== 0) throw new Error(`stats: ${r.stderr}`);
  return parseStats(r.stdout);
}

function delta(before: Map<string, number>, after: Map<string, number>, key: string): number {
  return (after.get(key) ?? 0) - (before.get(key) ?? 0);
}

async function tcpClient(where: Netns, host: string, port: number, mode: 'banner' | 'silent' | 'opaque'): Promise<{ got: string; closed: boolean }> {
  const r = await where.exec(process.execPath, ['-e', TCP_CLIENT, host, String(port), mode], 20_000);
  if (r.code !== 0) throw new Error(`tcp client: ${r.code} ${r.stderr}`);
  return JSON.parse(r.stdout) as { got: string; closed: boolean };
}

t.test('setup: rules, upstreams, and Sluice as uid 1337 in the namespace', async (t) => {
  for (const f of [BIN, path.join(ROOT, 'dist', 'src', 'cli.js'), path.join(ROOT, 'build', 'Release', 'sluice_net.node'), path.join(ROOT, 'node_modules', 'piscina', 'package.json')]) {
    t.equal(worldReadable(f), null, `${f} is readable by uid ${PROXY_UID}`);
  }
  const { ifA } = await vethPair(ns, NS_ADDR, client, CLIENT_ADDR);
  // outbound: the app's TCP goes to 15001, except the proxy's own and loopback-admin traffic
  await ns.must('iptables', ['-t', 'nat', '-N', 'SLUICE_OUTPUT']);
  await ns.must('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-j', 'SLUICE_OUTPUT']);
  await ns.must('iptables', ['-t', 'nat', '-A', 'SLUICE_OUTPUT', '-m', 'owner', '--uid-owner', String(PROXY_UID), '-j', 'RETURN']);
  await ns.must('iptables', ['-t', 'nat', '-A', 'SLUICE_OUTPUT', '-d', '127.0.0.1/32', '-j', 'RETURN']);
  await ns.must('iptables', ['-t', 'nat', '-A', 'SLUICE_OUTPUT', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(OUT_PORT)]);
  // inbound: everything arriving on the veth goes to 15006
  await ns.must('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-i', ifA, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(IN_PORT)]);

  upstreams = nodeInNetns(ns, ['-e', UPSTREAMS, UP, String(H1_PORT), String(H2_PORT), String(BANNER_PORT), String(APP_PORT)]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-capture-'));
  chmodSync(dir, 0o755);
  const file = path.join(dir, 'sluice.yaml');
  writeFileSync(file, YAML.stringify({
    admin: { address: `127.0.0.1:${ADMIN_PORT}` },
    workers: { threads: 2 },
    listeners: [
      { name: 'outbound', address: `0.0.0.0:${OUT_PORT}`, direction: 'outbound', capture: true },
      { name: 'inbound', address: `0.0.0.0:${IN_PORT}`, direction: 'inbound', capture: true },
    ],
    inbound: { applicationAddress: '127.0.0.1' },
  }), { mode: 0o644 });
  t.equal(worldReadable(file), null, 'config readable by the proxy uid');

  sluice = spawnSluiceInNetns(ns, ['start', '--config', file], { uid: PROXY_UID, gid: PROXY_UID });
  const started = await sluiceStarted(sluice);
  t.equal(started.ports.outbound, OUT_PORT);
  const status = readFileSync(`/proc/${sluice.proc.pid}/status`, 'utf8');
  t.match(status, new RegExp(`\\nUid:\\s+${PROXY_UID}\\s`), 'Sluice runs as uid 1337');
  const st = await adminStats();
  t.equal(st.get('sluice_capture_active'), 1, 'original destination recovery is on');
  await waitForOutput(upstreams, 'READY');
});

function waitForOutput(p: NsProcess, text: string, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (p.output().includes(text)) { done(); resolve(); }
    };
    const timer = setTimeout(() => { done(); reject(new Error(`no "${text}" from upstreams: ${p.output()}`)); }, timeoutMs);
    const done = () => { clearTimeout(timer); p.proc.stdout!.off('data', check); };
    p.proc.stdout!.on('data', check);
    check();
  });
}

t.test('outbound HTTP/1.1 is captured and reaches its original destination', async (t) => {
  const before = await adminStats();
  const r = await ns.exec('curl', ['-sS', '--max-time', '10', `http://${UP}:${H1_PORT}/hello`]);
  t.equal(r.code, 0, r.stderr);
  const body = JSON.parse(r.stdout);
  t.same(body, { server: 'h1', httpVersion: '1.1', url: '/hello', via: '1.1 sluice', local: `${UP}:${H1_PORT}` });
  const after = await adminStats();
  t.equal(delta(before, after, 'sluice_downstream_cx_total{listener="outbound"}'), 1, 'accepted on the capture listener');
  t.equal(delta(before, after, 'sluice_downstream_cx_protocol_total{listener="outbound",protocol="http1"}'), 1);
  t.equal(delta(before, after, 'sluice_upstream_rq_total{cluster="original_dst"}'), 1, 'sent to the original destination');
});

t.test('outbound HTTP/2 (prior knowledge) stays HTTP/2 to the original destination', async (t) => {
  const before = await adminStats();
  const r = await ns.exec('curl', ['-sS', '--max-time', '10', '--http2-prior-knowledge', '-D', '-', `http://${UP}:${H2_PORT}/h2`]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^HTTP\/2 200/);
  const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4));
  t.equal(body.server, 'h2');
  t.equal(body.httpVersion, '2.0', 'the upstream saw HTTP/2');
  t.equal(body.url, '/h2');
  const after = await adminStats();
  t.equal(delta(before, after, 'sluice_downstream_cx_total{listener="outbound"}'), 1);
  t.equal(delta(before, after, 'sluice_downstream_cx_protocol_total{listener="outbound",protocol="http2"}'), 1);
  t.equal(delta(before, after, 'sluice_upstream_rq_total{cluster="original_dst"}'), 1);
});

t.test('a server-speaks-first TCP protocol works through capture', async (t) => {
  const before = await adminStats();
  const r = await tcpClient(ns, UP, BANNER_PORT, 'banner');
  t.equal(r.got, 'BANNER sluice-test\r\nping\n', 'banner first, then the echo');
  t.equal(r.closed, true);
  const after = await adminStats();
  t.equal(delta(before, after, 'sluice_downstream_cx_protocol_total{listener="outbound",protocol="tcp"}'), 1);
  t.equal(delta(before, after, 'sluice_upstream_cx_total{cluster="original_dst"}'), 1);
});

t.test('inbound: PREROUTING redirect from the peer namespace reaches the local app at the original port', async (t) => {
  const before = await adminStats();
  const r = await client.exec('curl', ['-sS', '--max-time', '10', `http://${NS_ADDR}:${APP_PORT}/in`]);
  t.equal(r.code, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { server: 'app', httpVersion: '1.1', url: '/in', via: '1.1 sluice', local: `127.0.0.1:${APP_PORT}` },
    'the app listens on 127.0.0.1 only: only Sluice could have brought this request there');
  const after = await adminStats();
  t.equal(delta(before, after, 'sluice_downstream_cx_total{listener="inbound"}'), 1);
  t.equal(delta(before, after, 'sluice_upstream_rq_total{cluster="inbound_local"}'), 1);
  // a port where the app does not listen: captured all the same, and the failure is Sluice's reply
  const miss = await client.exec('curl', ['-sS', '--max-time', '10', '-D', '-', '-o', '/dev/null', `http://${NS_ADDR}:${APP_PORT + 1}/`]);
  t.match(miss.stdout, /^HTTP\/1\.1 503/);
  t.match(miss.stdout, /x-sluice-reason: upstream_connect_failed/i);
});

t.test('a connection straight to the capture port does not loop', async (t) => {
  const before = await adminStats();
  // not redirected (127.0.0.1 is exempt): the "original destination" is the listener itself
  const direct = await ns.exec('curl', ['-sS', '--max-time', '10', '-D', '-', `http://127.0.0.1:${OUT_PORT}/`]);
  t.equal(direct.code, 0, direct.stderr);
  t.match(direct.stdout, /^HTTP\/1\.1 404/);
  t.match(direct.stdout, /x-sluice-reason: no_route/i);
  // redirected from another local address at our own port: dialling it would come straight back
  const viaRedirect = await ns.exec('curl', ['-sS', '--max-time', '10', '-D', '-', `http://${UP}:${OUT_PORT}/`]);
  t.equal(viaRedirect.code, 0, viaRedirect.stderr);
  t.match(viaRedirect.stdout, /^HTTP\/1\.1 404/);
  t.match(viaRedirect.stdout, /x-sluice-reason: no_route/i);
  // opaque TCP with nowhere to go is closed, silent or not
  const silent = await tcpClient(ns, '127.0.0.1', OUT_PORT, 'silent');
  t.same(silent, { got: '', closed: true });
  const opaque = await tcpClient(ns, '127.0.0.1', OUT_PORT, 'opaque');
  t.same(opaque, { got: '', closed: true });
  const after = await adminStats();
  t.equal(delta(before, after, 'sluice_downstream_cx_total{listener="outbound"}'), 4, 'one accepted connection each, no second hop');
  t.equal(delta(before, after, 'sluice_upstream_cx_total{cluster="original_dst"}'), 0, 'nothing dialled');
  t.equal(delta(before, after, 'sluice_downstream_rq_no_route_total{protocol="http1"}'), 2, 'counted as no route');
});
