/**
 * Two pods, each with its own Sluice and the init container's capture rules, in network
 * namespaces joined by veth, and a third host without a sidecar:
 *
 *   pod A 10.236.0.2 (frontend) ──veth── pod B 10.236.0.3 (orders) ──veth── host C 10.236.1.3
 *     curl, a Dubbo consumer          apps :8080 HTTP/1.1, :8443 h2c,        curl, no sidecar
 *     Sluice: outbound mTLS to           :20880 Dubbo (each answers with the
 *       10.236.0.0/24                    x-forwarded-client-cert it got)
 *                                      Sluice: inbound strict mTLS
 *
 * A's applications call B's by B's address, as if there were no mesh. What a user must see: every
 * call (HTTP/1.1, HTTP/2, Dubbo) answered, with A's identity at B's application; on the wire
 * between the pods (tcpdump on B's side of the veth) TLS records only, no request line, no HTTP/2
 * preface, no Dubbo header; C's plaintext calls to B refused by strict mode.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import YAML from 'yaml';
import { TestPki, type Workload } from '../helpers/certs';
import { DUBBO_CONSUMER, DUBBO_PROVIDER, REMOTING } from '../helpers/dubbo-scripts';
import { ROOT, waitFor } from '../helpers/harness';
import { createNetns, nodeInNetns, parseStats, sluiceStarted, spawnSluiceInNetns, vethPair, type Netns, type NsProcess } from '../helpers/netns';

const SCRIPT = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables.sh');
const ID_A = 'cluster.local/ns/web/sa/frontend';
const ID_B = 'cluster.local/ns/shop/sa/orders';
const XFCC = `By=spiffe://${ID_B};URI=spiffe://${ID_A}`;

const HTTP_APP = `
const http = require('http');
http.createServer((req, res) => res.end('h1 ' + req.url + ' ' + (req.headers['x-forwarded-client-cert'] || 'none')))
  .listen(8080, '0.0.0.0', () => console.log('listening'));
`;
const H2_APP = `
const http2 = require('http2');
const s = http2.createServer();
s.on('stream', (stream, h) => { stream.respond({ ':status': 200 }); stream.end('h2 ' + h[':path'] + ' ' + (h['x-forwarded-client-cert'] || 'none')); });
s.listen(8443, '0.0.0.0', () => console.log('listening'));
`;

/** The TCP payloads of a pcap file (Ethernet, IPv4), in order. */
function tcpPayloads(file: string): Buffer {
  const b = readFileSync(file);
  const out: Buffer[] = [];
  let off = 24;
  while (off + 16 <= b.length) {
    const incl = b.readUInt32LE(off + 8);
    const frame = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    const ihl = (ip[0] & 0x0f) * 4;
    if (ip[9] !== 6) continue;
    const tcp = ip.subarray(ihl, ip.readUInt16BE(2));
    const doff = (tcp[12] >> 4) * 4;
    if (tcp.length > doff) out.push(tcp.subarray(doff));
  }
  return Buffer.concat(out);
}

t.test('pod to pod through both sidecars: encrypted on the wire, the caller\'s identity at the application, plaintext refused', async (t) => {
  const pki = new TestPki();
  const ca = pki.ca('mesh');
  const a = pki.issue(ca, `spiffe://${ID_A}`);
  const b = pki.issue(ca, `spiffe://${ID_B}`);
  const podA = await createNetns('pa');
  const podB = await createNetns('pb');
  const hostC = await createNetns('hc');
  const procs: NsProcess[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-2pods-'));
  let dump: ReturnType<typeof spawn> | null = null;
  t.teardown(async () => {
    if (dump && dump.exitCode === null) { dump.kill('SIGKILL'); await once(dump, 'exit'); }
    for (const p of procs) await p.kill();
    for (const ns of [podA, podB, hostC]) await ns.destroy();
    rmSync(dir, { recursive: true, force: true });
    pki.cleanup();
  });
  const { ifB } = await vethPair(podA, '10.236.0.2', podB, '10.236.0.3');
  await vethPair(hostC, '10.236.1.3', podB, '10.236.1.2');

  const app = async (ns: Netns, args: string[]) => {
    const p = nodeInNetns(ns, args);
    procs.push(p);
    await waitFor(() => {
      if (p.proc.exitCode !== null) throw new Error(`an application exited: ${p.output()}`);
      return p.output().includes('listening');
    }, 10_000, 'an application listening');
  };
  await app(podB, ['-e', HTTP_APP]);
  await app(podB, ['-e', H2_APP]);
  await app(podB, ['-e', DUBBO_PROVIDER, REMOTING, '0.0.0.0', '20880', '@xfcc']);

  for (const ns of [podA, podB]) {
    const init = await ns.exec(SCRIPT, []);
    t.equal(init.code, 0, init.stderr);
  }

  // the sidecars run as uid 1337: their certificates and configs must be readable by it
  chmodSync(dir, 0o755);
  const sidecar = async (ns: Netns, name: string, w: Workload, tls: Record<string, unknown>) => {
    for (const f of [w.certFile, w.keyFile, w.caFile]) chmodSync(f, 0o644);
    chmodSync(w.dir, 0o755);
    chmodSync(pki.root, 0o755);
    const file = path.join(dir, `${name}.yaml`);
    writeFileSync(file, YAML.stringify({
      admin: { address: '127.0.0.1:15000' },
      workers: { threads: 1 },
      tls: { certFile: w.certFile, keyFile: w.keyFile, caFile: w.caFile, ...tls },
    }));
    chmodSync(file, 0o644);
    const p = spawnSluiceInNetns(ns, ['start', '--config', file], { uid: 1337, gid: 1337 });
    procs.push(p);
    await sluiceStarted(p);
  };
  await sidecar(podA, 'a', a, { inbound: { mode: 'permissive' }, outbound: { mode: 'mutual', destinations: ['10.236.0.0/24'] } });
  await sidecar(podB, 'b', b, { inbound: { mode: 'strict' } });

  // everything that crosses between the pods, seen from B's side of the veth
  const pcap = path.join(dir, 'wire.pcap');
  dump = spawn('ip', ['netns', 'exec', podB.name, 'tcpdump', '-i', ifB, '--immediate-mode', '-U', '-w', pcap, 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let dumpErr = '';
  dump.stderr!.on('data', (d) => { dumpErr += d; });
  await waitFor(() => dumpErr.includes('listening on'), 10_000, 'tcpdump listening');

  const curlA = async (args: string[]) => {
    const r = await podA.exec('curl', ['-sS', '--max-time', '10', ...args], 15_000);
    return { code: r.code, out: r.stdout, err: r.stderr };
  };
  const h1 = await curlA(['http://10.236.0.3:8080/orders?id=7']);
  t.equal(h1.out, `h1 /orders?id=7 ${XFCC}`, `HTTP/1.1 answered with A's identity: ${h1.err}`);
  const h2 = await curlA(['--http2-prior-knowledge', 'http://10.236.0.3:8443/stock']);
  t.equal(h2.out, `h2 /stock ${XFCC}`, `HTTP/2 answered with A's identity: ${h2.err}`);
  const consumer = nodeInNetns(podA, ['-e', DUBBO_CONSUMER, REMOTING, '10.236.0.3', '20880', 'com.example.TransferService:1.0.0', '3']);
  procs.push(consumer);
  await consumer.exited;
  const line = consumer.output().split('\n').find((l) => l.startsWith('['));
  t.same(line ? JSON.parse(line) : consumer.output(), [1, 2, 3].map(() => ({ status: 20, value: XFCC })), 'Dubbo answered, with A\'s identity as the attachment');

  // C has no sidecar: its plaintext reaches B's strict inbound and is refused
  const plain = await hostC.exec('curl', ['-sS', '--max-time', '5', 'http://10.236.1.2:8080/orders'], 10_000);
  t.not(plain.code, 0, 'plaintext from a host without a sidecar gets no answer');
  t.equal(plain.stdout, '');

  const statsB = parseStats((await podB.exec('curl', ['-sS', '--max-time', '10', 'http://127.0.0.1:15000/stats'])).stdout);
  const handshakes = [...statsB].filter(([k]) => k.startsWith('sluice_tls_inbound_handshake_total')).reduce((n, [, v]) => n + v, 0);
  t.ok(handshakes >= 3, `B terminated mTLS for each protocol's connections: ${handshakes}`);
  const refused = [...statsB].filter(([k]) => k.startsWith('sluice_tls_inbound_plaintext_refused_total')).reduce((n, [, v]) => n + v, 0);
  t.ok(refused >= 1, `B counted the plaintext refusal: ${refused}`);

  // packets still in the kernel's capture ring when tcpdump stops are lost: wait for them on disk
  await waitFor(() => statSync(pcap).size > 4000, 10_000, `the capture written (${dumpErr})`);
  dump.kill('SIGINT');
  await once(dump, 'exit');
  // both directions: neither may carry plaintext
  const fromA = tcpPayloads(pcap);
  t.ok(fromA.length > 2000, `bytes crossed between the pods: ${fromA.length}`);
  t.ok(fromA.includes(Buffer.from([0x16, 0x03])), 'TLS handshake records on the wire');
  for (const [what, bytes] of [
    ['an HTTP/1.1 request line', Buffer.from('GET /orders')],
    ['the HTTP/1.1 answer', Buffer.from('h1 /orders')],
    ['the HTTP/2 preface', Buffer.from('PRI * HTTP/2.0')],
    ['the HTTP/2 answer', Buffer.from('h2 /stock')],
    ['a Dubbo request header (magic, two-way request with Hessian2)', Buffer.from([0xda, 0xbb, 0xc2])],
    ['the Dubbo interface name', Buffer.from('com.example.TransferService')],
    ['the caller\'s SPIFFE ID in clear', Buffer.from(`URI=spiffe://${ID_A}`)],
  ] as const) {
    t.notOk(fromA.includes(bytes), `${what}: not on the wire`);
  }
});
