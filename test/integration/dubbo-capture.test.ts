/**
 * Dubbo 2 through a captured pod: the init-container script's rules, Sluice as uid 1337 with the
 * embedded default config, and dubbo-remoting (an independent Hessian2 implementation) as both the
 * consumer's and the provider's codec, each in its own process inside a namespace:
 *
 *   pod 10.233.0.2 ──veth── remote 10.233.0.3
 *     provider 0.0.0.0:20881         provider 10.233.0.3:20880
 *     consumer → 10.233.0.3:20880    consumer → 10.233.0.2:20881
 *     Sluice (outbound 15001, inbound 15006, admin 127.0.0.1:15000)
 *
 * Every answer names the provider, the method, the argument and the peer address the provider
 * saw, so the test can tell a call that went through Sluice from one that bypassed it.
 */
import path from 'node:path';
import t from 'tap';
import { ROOT, waitFor } from '../helpers/harness';
import { DUBBO_PROVIDER as PROVIDER, REMOTING } from '../helpers/dubbo-scripts';
import { createNetns, nodeInNetns, parseStats, sluiceStarted, spawnSluiceInNetns, vethPair, type Netns, type NsProcess } from '../helpers/netns';

const SCRIPT = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables.sh');
/**
 * argv: remoting-path host port method arg. One call, then prints
 * {"status": <response status byte>, "value": ..., "error": ...} and exits; gives up after 10 s.
 */
const CONSUMER = `
const net = require('net');
const [mod, host, port, method, arg] = process.argv.slice(1);
const remoting = require(mod);
const done = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
setTimeout(() => done({ status: -2, error: 'consumer timeout' }), 10000).unref();
const sock = net.connect(Number(port), host);
sock.on('error', (e) => done({ status: -1, error: String(e.message) }));
sock.on('close', () => done({ status: -1, error: 'connection closed' }));
const enc = remoting.encoder({});
const dec = remoting.decoder({});
enc.pipe(sock);
let raw = Buffer.alloc(0);
let status = -1;
sock.on('data', (d) => {
  raw = Buffer.concat([raw, d]);
  if (raw.length >= 16 && status === -1) status = raw[3];
});
sock.pipe(dec);
dec.on('error', (e) => done({ status: -1, error: 'decode: ' + e.message }));
dec.on('response', (r) => {
  if (r.packetId !== 7) return;
  if (r.data.error) done({ status, error: String(r.data.error.message || r.data.error) });
  else done({ status, value: r.data.appResponse });
});
sock.on('connect', () => {
  enc.writeRequest(7, {
    serverSignature: 'com.example.TransferService:1.0.0',
    methodName: method,
    args: [{ $class: 'java.lang.String', $: arg }],
    requestProps: {},
    timeout: 5000,
  });
});
`;

interface Answer { status: number; value?: unknown; error?: string }

async function curl(ns: Netns, args: string[]): Promise<string> {
  const r = await ns.exec('curl', ['-sS', '--max-time', '10', ...args], 15_000);
  if (r.code !== 0) throw new Error(`curl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

t.test('Dubbo in a captured pod', async (t) => {
  const pod = await createNetns('dp');
  const remote = await createNetns('dr');
  const procs: NsProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.kill();
    for (const ns of [pod, remote]) await ns.destroy();
  });
  await vethPair(pod, '10.233.0.2', remote, '10.233.0.3');

  const provider = async (ns: Netns, host: string, port: number, name: string) => {
    const p = nodeInNetns(ns, ['-e', PROVIDER, REMOTING, host, String(port), name, 'from']);
    procs.push(p);
    await waitFor(() => {
      if (p.proc.exitCode !== null) throw new Error(`provider ${name} exited: ${p.output()}`);
      return p.output().includes('listening');
    }, 10_000, `provider ${name}`);
  };
  /** Runs one consumer call to completion (bounded: the script gives up after 10 s, we after 20 s). */
  const call = async (ns: Netns, host: string, port: number, method: string, arg: string): Promise<Answer> => {
    const p = nodeInNetns(ns, ['-e', CONSUMER, REMOTING, host, String(port), method, arg]);
    procs.push(p);
    const timer = setTimeout(() => { void p.kill(); }, 20_000);
    try {
      await p.exited;
    } finally {
      clearTimeout(timer);
    }
    const line = p.output().split('\n').find((l) => l.startsWith('{'));
    if (!line) throw new Error(`consumer printed no answer: ${p.output()}`);
    return JSON.parse(line) as Answer;
  };

  await provider(remote, '10.233.0.3', 20880, 'remote');
  await provider(pod, '0.0.0.0', 20881, 'pod');

  const init = await pod.exec(SCRIPT, []);
  t.equal(init.code, 0, init.stderr);
  t.match(init.stdout, /capture works/);

  const sluice = spawnSluiceInNetns(pod, ['start'], { uid: 1337, gid: 1337 });
  procs.push(sluice);
  const started = await sluiceStarted(sluice);
  t.same(started.ports, { outbound: 15001, inbound: 15006 });
  const stats = async () => parseStats(await curl(pod, [`${started.admin}/stats`]));
  t.equal((await stats()).get('sluice_capture_active'), 1);

  await t.test('outbound: a consumer in the pod reaches the remote provider through Sluice, as Dubbo', async (t) => {
    const s0 = await stats();
    const a = await call(pod, '10.233.0.3', 20880, 'transfer', 'out-1');
    t.same(a, { status: 20, value: 'remote:transfer:out-1 from=10.233.0.2' }, 'the provider\'s result');
    // counters are published by the workers; wait for them rather than assuming they are already there
    const rq0 = s0.get('sluice_downstream_rq_total{protocol="dubbo"}') ?? 0;
    const s = await waitFor(async () => {
      const cur = await stats();
      return (cur.get('sluice_downstream_rq_total{protocol="dubbo"}') ?? 0) > rq0 ? cur : null;
    }, 10_000, 'the Dubbo request counter');
    t.ok((s.get('sluice_downstream_cx_protocol_total{listener="outbound",protocol="dubbo"}') ?? 0) >= 1,
      'the captured connection was detected as Dubbo');
    t.equal((s.get('sluice_downstream_rq_total{protocol="dubbo"}') ?? 0) - rq0, 1, 'one Dubbo request');
    t.ok((s.get('sluice_downstream_cx_total{listener="outbound"}') ?? 0) >= 1, 'went through the outbound listener');
    const up = 'sluice_upstream_rq_total{cluster="original_dst"}';
    t.equal((s.get(up) ?? 0) - (s0.get(up) ?? 0), 1, 'Sluice sent it on to the original destination');
  });

  await t.test('inbound: a consumer without a sidecar reaches the pod\'s provider through Sluice', async (t) => {
    const s0 = await stats();
    const in0 = s0.get('sluice_downstream_cx_total{listener="inbound"}') ?? 0;
    const a = await call(remote, '10.233.0.2', 20881, 'query', 'in-1');
    // the provider sees Sluice (over loopback) as its peer
    t.same(a, { status: 20, value: 'pod:query:in-1 from=127.0.0.1' }, 'the provider\'s result, delivered by Sluice');
    const s = await waitFor(async () => {
      const cur = await stats();
      return (cur.get('sluice_downstream_cx_total{listener="inbound"}') ?? 0) > in0 ? cur : null;
    }, 10_000, 'the inbound connection counter');
    t.equal((s.get('sluice_downstream_cx_total{listener="inbound"}') ?? 0) - in0, 1, 'one inbound connection');
    t.ok((s.get('sluice_downstream_cx_protocol_total{listener="inbound",protocol="dubbo"}') ?? 0) >= 1,
      'detected as Dubbo on the inbound listener');
    const up = 'sluice_upstream_rq_total{cluster="inbound_local"}';
    t.equal((s.get(up) ?? 0) - (s0.get(up) ?? 0), 1, 'Sluice sent it on to the local application');
  });
});
