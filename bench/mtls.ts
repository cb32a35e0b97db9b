/**
 * The cost of link encryption, in one run, each number beside its baseline:
 *
 *   keep-alive   wrk ─▶ Sluice A ─plaintext──▶ Sluice B ─▶ nginx      CPU µs/req of A + B
 *                wrk ─▶ Sluice A' ─mTLS─────▶ Sluice B' ─▶ nginx     (added by mTLS: target ≤ 12 µs)
 *   handshakes   a TLS 1.3 client with a client certificate ─▶ Sluice B' (strict) and ─▶ openssl s_server -Verify 1
 *                full handshakes, then resumed ones (session tickets)  CPU µs per handshake of the server
 *                                                                    (target: resumed ≤ ½ full)
 *
 *   node dist/bench/mtls.js [--seconds N] [--rounds N] [--out FILE]
 *
 * CPU is utime + stime of the server's process tree from /proc, after minus before, divided by
 * what was completed; the load tools (wrk, this process's TLS client) are not counted. The
 * Sluice figure per handshake includes what every connection costs it besides TLS (accepting,
 * handing the descriptor to a worker, sniffing), which s_server does not have; the plaintext
 * connection cost is measured too so it can be told apart. Certificates: ECDSA P-256, made like
 * `sluice certs` makes them. Everything is started and stopped by pid; a temp dir holds the rest.
 */
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import YAML from 'yaml';
import { wrk } from './lib/clients';
import { freePorts, killAllStartedSync, startChild, stopAllStarted, treeCpuMicros, waitFor, waitHttp200, withOpenFileLimit, type Child } from './lib/procs';
import { commit } from './lib/run-info';
import { createCa, issueCert } from '../src/tls/test-ca';

const ROOT = path.resolve(__dirname, '..', '..');
const SLUICE_BIN = path.join(ROOT, 'bin', 'sluice.js');
const NGINX = '/usr/sbin/nginx';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const SECONDS = arg('seconds', 5);
const ROUNDS = arg('rounds', 3);
const outIdx = process.argv.indexOf('--out');
const OUT = outIdx > 0 ? process.argv[outIdx + 1] : path.join(ROOT, 'bench', 'results', 'mtls-latest.json');

interface Workload { certFile: string; keyFile: string; caFile: string }

function pki(dir: string): { server: Workload; client: Workload; a: Workload } {
  const ca = path.join(dir, 'ca');
  createCa({ dir: ca });
  const w = (name: string, id: string): Workload => {
    const out = path.join(dir, name);
    issueCert({ caDir: ca, out, spiffe: id });
    return { certFile: path.join(out, 'cert.pem'), keyFile: path.join(out, 'key.pem'), caFile: path.join(out, 'ca.pem') };
  };
  return { server: w('b', 'spiffe://cluster.local/ns/shop/sa/orders'), a: w('a', 'spiffe://cluster.local/ns/web/sa/frontend'), client: w('c', 'spiffe://cluster.local/ns/bench/sa/client') };
}

function startSluice(dir: string, name: string, doc: Record<string, unknown>): Child {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify({ logLevel: 'warn', workers: { threads: 1 }, ...doc }));
  const [cmd, args] = withOpenFileLimit(65536, process.execPath, [SLUICE_BIN, 'start', '--config', file]);
  return startChild(name, cmd, args, { pidFile: path.join(dir, `${name}.pid`) });
}

function tlsOf(w: Workload, mode: string) {
  return { certFile: w.certFile, keyFile: w.keyFile, caFile: w.caFile, inbound: { mode } };
}

/** TLS connections for `seconds`, two at a time, each closed once its handshake is done; with `resume`, each offers the last session ticket. */
async function handshakes(port: number, w: Workload, seconds: number, resume: boolean): Promise<{ done: number; resumed: number }> {
  const cert = readFileSync(w.certFile);
  const key = readFileSync(w.keyFile);
  const ca = readFileSync(w.caFile);
  let session: Buffer | undefined;
  let done = 0;
  let resumed = 0;
  const deadline = Date.now() + seconds * 1000;
  const one = async () => {
    const s = tls.connect({ host: '127.0.0.1', port, cert, key, ca, checkServerIdentity: () => undefined, session: resume ? session : undefined, minVersion: 'TLSv1.3' });
    s.on('session', (b: Buffer) => { session = b; });
    s.on('error', () => {});
    try {
      await once(s, 'secureConnect');
    } catch (err) {
      throw new Error(`handshake with 127.0.0.1:${port} (${resume ? 'resumed' : 'full'}): ${(err as Error).message}`);
    }
    if (s.isSessionReused()) resumed++;
    // a ticket comes after the handshake in TLS 1.3: read until the server has sent it
    if (resume && !session) await once(s, 'session');
    // an alert the server sends as it closes is no failure of the handshake measured
    const closed = new Promise((r) => s.once('close', r));
    s.end();
    await closed;
    done++;
  };
  if (resume) await one(); // the session to resume; not counted below
  done = 0; resumed = 0;
  await Promise.all([0, 1].map(async () => { while (Date.now() < deadline) await one(); }));
  return { done, resumed };
}

/** Plaintext connections closed without a byte: what accepting, handing off and sniffing cost Sluice per connection. */
async function plainConnections(port: number, seconds: number): Promise<number> {
  let done = 0;
  const deadline = Date.now() + seconds * 1000;
  await Promise.all([0, 1].map(async () => {
    while (Date.now() < deadline) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      await once(s, 'connect');
      s.end();
      await once(s, 'close');
      done++;
    }
  }));
  return done;
}

async function cpuPer<T extends number | { done: number }>(pids: number[], run: () => Promise<T>): Promise<{ result: T; micros: number; per: number }> {
  const before = pids.reduce((a, p) => a + treeCpuMicros(p), 0);
  const result = await run();
  const micros = pids.reduce((a, p) => a + treeCpuMicros(p), 0) - before;
  const n = typeof result === 'number' ? result : result.done;
  return { result, micros, per: micros / n };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  process.once('exit', killAllStartedSync);
  process.once('SIGINT', () => { killAllStartedSync(); process.exit(130); });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-mtls-'));
  const info = { node: process.version, cpus: os.availableParallelism(), commit: commit(), loadavg: os.loadavg()[0], seconds: SECONDS, rounds: ROUNDS };
  console.log(`node ${info.node}, ${info.cpus} CPUs, commit ${info.commit}, load average ${info.loadavg.toFixed(2)}`);
  try {
    const ids = pki(path.join(dir, 'pki'));
    const [up, aPlain, bPlain, aTls, bTls, bProbe, sServer, ad1, ad2, ad3, ad4] = await freePorts(11);
    mkdirSync(path.join(dir, 'nginx'));
    writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes 1; daemon off; master_process on; pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn; events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}/nginx; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:${up}; location / { return 200 "${'x'.repeat(100)}"; } } }
`);
    const nginx = startChild('nginx', NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'nginx-error.log')]);
    await waitHttp200(`http://127.0.0.1:${up}/`, 10_000, nginx);
    const app = { name: 'app', endpoints: [`127.0.0.1:${up}`] };
    const b1 = startSluice(dir, 'b-plain', {
      admin: { address: `127.0.0.1:${ad1}` },
      listeners: [{ name: 'in', address: `127.0.0.1:${bPlain}`, direction: 'inbound', cluster: 'app' }], clusters: [app],
    });
    const a1 = startSluice(dir, 'a-plain', {
      admin: { address: `127.0.0.1:${ad2}` },
      listeners: [{ name: 'out', address: `127.0.0.1:${aPlain}`, cluster: 'b' }], clusters: [{ name: 'b', endpoints: [`127.0.0.1:${bPlain}`] }],
    });
    const b2 = startSluice(dir, 'b-mtls', {
      admin: { address: `127.0.0.1:${ad3}` }, tls: tlsOf(ids.server, 'strict'),
      listeners: [
        { name: 'in', address: `127.0.0.1:${bTls}`, direction: 'inbound', cluster: 'app' },
        // the plaintext connection cost: a port of the same process without mTLS
        { name: 'probe', address: `127.0.0.1:${bProbe}`, direction: 'inbound', cluster: 'app', tls: { mode: 'disabled' } },
      ],
      clusters: [app],
    });
    const a2 = startSluice(dir, 'a-mtls', {
      admin: { address: `127.0.0.1:${ad4}` }, tls: tlsOf(ids.a, 'disabled'),
      listeners: [{ name: 'out', address: `127.0.0.1:${aTls}`, cluster: 'b' }],
      clusters: [{ name: 'b', endpoints: [`127.0.0.1:${bTls}`], tls: { mode: 'mutual', principals: ['cluster.local/ns/shop/sa/orders'] } }],
    });
    const sv = startChild('s_server', 'openssl', ['s_server', '-accept', `127.0.0.1:${sServer}`, '-cert', ids.server.certFile, '-key', ids.server.keyFile,
      '-CAfile', ids.server.caFile, '-Verify', '1', '-quiet', '-naccept', '100000000'], { stdin: true });
    for (const [port, c] of [[aPlain, a1], [aTls, a2]] as const) await waitHttp200(`http://127.0.0.1:${port}/`, 20_000, c);
    await waitFor('s_server', () => new Promise<boolean>((r) => { const s = net.connect(sServer, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); }), 10_000, sv);

    // ── keep-alive through two sidecars ───────────────────────────────────────────
    const keepAlive: Record<'plaintext' | 'mtls', number[]> = { plaintext: [], mtls: [] };
    const rps: Record<'plaintext' | 'mtls', number[]> = { plaintext: [], mtls: [] };
    let failures = 0;
    // warm-up, not counted
    for (const port of [aPlain, aTls]) await wrk(`http://127.0.0.1:${port}/`, { threads: 1, connections: 8, seconds: 1 });
    for (let r = 0; r < ROUNDS; r++) {
      for (const [kind, port, pair] of [['plaintext', aPlain, [a1, b1]], ['mtls', aTls, [a2, b2]]] as const) {
        const m = await cpuPer(pair.map((c) => c.pid), async () => {
          const res = await wrk(`http://127.0.0.1:${port}/`, { threads: 1, connections: 8, seconds: SECONDS });
          failures += res.non2xx + res.errors;
          rps[kind].push(res.rps);
          return { done: res.requests };
        });
        keepAlive[kind].push(m.per);
        console.log(`keep-alive ${kind.padEnd(9)} round ${r + 1}: ${m.per.toFixed(1)} µs/req (A + B), ${m.result.done} requests`);
      }
    }
    const kaPlain = median(keepAlive.plaintext);
    const kaTls = median(keepAlive.mtls);

    // ── handshakes ─────────────────────────────────────────────────────────────────
    const hs: Record<string, number[]> = { sluiceFull: [], sluiceResumed: [], sServerFull: [], sServerResumed: [], sluicePlainCx: [] };
    let resumedShare = { sluice: 0, sServer: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      const sf = await cpuPer([b2.pid], () => handshakes(bTls, ids.client, SECONDS, false));
      const sr = await cpuPer([b2.pid], () => handshakes(bTls, ids.client, SECONDS, true));
      const of = await cpuPer([sv.pid], () => handshakes(sServer, ids.client, SECONDS, false));
      const or = await cpuPer([sv.pid], () => handshakes(sServer, ids.client, SECONDS, true));
      const pc = await cpuPer([b2.pid], () => plainConnections(bProbe, SECONDS));
      hs.sluiceFull.push(sf.per); hs.sluiceResumed.push(sr.per); hs.sServerFull.push(of.per); hs.sServerResumed.push(or.per); hs.sluicePlainCx.push(pc.per);
      resumedShare = { sluice: sr.result.resumed / sr.result.done, sServer: or.result.resumed / or.result.done };
      console.log(`handshakes round ${r + 1}: Sluice full ${sf.per.toFixed(0)} µs (${sf.result.done}), resumed ${sr.per.toFixed(0)} µs (${sr.result.done}, ${(resumedShare.sluice * 100).toFixed(0)}% resumed); `
        + `s_server full ${of.per.toFixed(0)} µs (${of.result.done}), resumed ${or.per.toFixed(0)} µs (${(resumedShare.sServer * 100).toFixed(0)}% resumed); Sluice plaintext connection ${pc.per.toFixed(0)} µs`);
    }
    const m = (k: string) => median(hs[k]);
    const summary = {
      ...info,
      keepAlive: { plaintextMicrosPerReq: kaPlain, mtlsMicrosPerReq: kaTls, addedMicrosPerReq: kaTls - kaPlain, target: 12, rpsPlaintext: median(rps.plaintext), rpsMtls: median(rps.mtls), failures },
      handshake: {
        sluiceFullMicros: m('sluiceFull'), sluiceResumedMicros: m('sluiceResumed'), sluicePlainConnectionMicros: m('sluicePlainCx'),
        sServerFullMicros: m('sServerFull'), sServerResumedMicros: m('sServerResumed'),
        sluiceFullTlsOnlyMicros: m('sluiceFull') - m('sluicePlainCx'), sluiceResumedTlsOnlyMicros: m('sluiceResumed') - m('sluicePlainCx'),
        resumedShare,
      },
      rounds: { keepAlive, handshakes: hs },
    };
    const h = summary.handshake;
    console.log('');
    console.log('| measurement | value | target |');
    console.log('| --- | --- | --- |');
    console.log(`| keep-alive through A and B, plaintext | ${kaPlain.toFixed(1)} µs/req | |`);
    console.log(`| keep-alive through A and B, mTLS | ${kaTls.toFixed(1)} µs/req | |`);
    console.log(`| added by mTLS | ${(kaTls - kaPlain).toFixed(1)} µs/req | ≤ 12 |`);
    console.log(`| full handshake, Sluice (whole connection) | ${h.sluiceFullMicros.toFixed(0)} µs | |`);
    console.log(`| full handshake, Sluice, less a plaintext connection (${h.sluicePlainConnectionMicros.toFixed(0)} µs) | ${h.sluiceFullTlsOnlyMicros.toFixed(0)} µs | ≤ 1.3 × s_server |`);
    console.log(`| full handshake, openssl s_server | ${h.sServerFullMicros.toFixed(0)} µs | |`);
    console.log(`| resumed handshake, Sluice (whole connection) | ${h.sluiceResumedMicros.toFixed(0)} µs (${(h.sluiceResumedMicros / h.sluiceFullMicros).toFixed(2)} × full) | ≤ 0.5 × full |`);
    console.log(`| resumed handshake, Sluice, less a plaintext connection | ${h.sluiceResumedTlsOnlyMicros.toFixed(0)} µs (${(h.sluiceResumedTlsOnlyMicros / h.sluiceFullTlsOnlyMicros).toFixed(2)} × full) | ≤ 0.5 × full |`);
    console.log(`| resumed handshake, openssl s_server | ${h.sServerResumedMicros.toFixed(0)} µs (${(h.sServerResumedMicros / h.sServerFullMicros).toFixed(2)} × full) | |`);
    if (failures > 0) console.log(`FAILED requests: ${failures}`);
    mkdirSync(path.dirname(OUT), { recursive: true });
    writeFileSync(OUT, JSON.stringify(summary, null, 2));
    console.log(`results: ${OUT}`);
    if (failures > 0) process.exitCode = 1;
  } finally {
    await stopAllStarted();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
