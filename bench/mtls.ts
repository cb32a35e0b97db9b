/**
 * The cost of link encryption, in one run, each number beside its baseline:
 *
 *   keep-alive   wrk ─▶ Sluice A ─plaintext──▶ Sluice B ─▶ nginx        CPU µs/req of A, of B, of both
 *                wrk ─▶ Sluice A' ─mTLS─────▶ Sluice B' ─▶ nginx       (added by mTLS: target ≤ 12 µs)
 *                wrk ─▶ Sluice A ─plaintext──▶ nginx N  ─▶ nginx        N in B's place: nginx terminating
 *                wrk ─▶ Sluice A' ─mTLS─────▶ nginx N' ─▶ nginx        mTLS (one worker), CPU µs/req of N
 *                wrk ─▶ nginx M ─plaintext──▶ Sluice B ─▶ nginx        M in A's place: nginx originating
 *                wrk ─▶ nginx M' ─mTLS──────▶ Sluice B' ─▶ nginx       mTLS, CPU µs/req of B beside it
 *   handshakes   a TLS 1.3 client with a client certificate ─▶ Sluice B' (strict), ─▶ nginx N' and
 *                ─▶ openssl s_server -Verify 1 (also with -num_tickets 1, the one ticket Sluice sends):
 *                full handshakes, then resumed ones (session tickets),
 *                CPU µs per handshake of the server                  (targets: full ≤ 1.3 × s_server,
 *                                                                      resumed ≤ ½ full)
 *
 *   node dist/bench/mtls.js [--seconds N] [--rounds N] [--connections 8[,1]] [--only keepalive|handshakes] [--out FILE]
 *
 * CPU is utime + stime of the server's process tree from /proc, after minus before, divided by
 * what was completed; the load tools (wrk, this process's TLS client) are not counted. The
 * Sluice figure per handshake includes what every connection costs it besides TLS (accepting,
 * handing the descriptor to a worker, sniffing), which s_server does not have; the plaintext
 * connection cost is measured too (for nginx as well) so it can be told apart. nginx N is
 * Debian's /usr/sbin/nginx with the same certificate, key and trust bundle as B',
 * `ssl_verify_client on`, TLS 1.3 only, session tickets on, keep-alive to the same upstream, and
 * x-forwarded-client-cert set from the client certificate as B' sets it (removed on plaintext).
 * Certificates: ECDSA P-256, made like `sluice certs` makes them. Everything is started and
 * stopped by pid; a temp dir holds the rest.
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
const connIdx = process.argv.indexOf('--connections');
/** wrk's connections for the keep-alive rows: 8 keeps two CPUs busy (four processes on them), 1 leaves them idle between requests. */
const CONNECTIONS = connIdx > 0 ? process.argv[connIdx + 1].split(',').map(Number) : [8];
const onlyIdx = process.argv.indexOf('--only');
/** One half of the bench only (the other's rows are left out of the tables). */
const ONLY = onlyIdx > 0 ? process.argv[onlyIdx + 1] : '';
if (ONLY !== '' && ONLY !== 'keepalive' && ONLY !== 'handshakes') throw new Error(`--only takes keepalive or handshakes, not ${ONLY}`);
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

/** The group of each server's key exchange as the handshake client saw it, by port (all the same: X25519, what the client offers first). */
const keyExchange: Record<number, string> = {};

/** TLS connections for `seconds`, two at a time, each closed once its handshake is done; with `resume`, each offers the last session ticket. */
async function handshakes(port: number, w: Workload, seconds: number, resume: boolean): Promise<{ done: number; resumed: number }> {
  const cert = readFileSync(w.certFile);
  const key = readFileSync(w.keyFile);
  const ca = readFileSync(w.caFile);
  let session: Buffer | undefined;
  let done = 0;
  const note = (s: tls.TLSSocket) => { keyExchange[port] ??= (s.getEphemeralKeyInfo() as { name?: string } | null)?.name ?? 'none'; };
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
    note(s);
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

async function cpuPer<T extends number | { done: number }>(pids: number[], run: () => Promise<T>): Promise<{ result: T; micros: number; per: number; each: number[] }> {
  const before = pids.map((p) => treeCpuMicros(p));
  const result = await run();
  const each = pids.map((p, i) => treeCpuMicros(p) - before[i]);
  const micros = each.reduce((a, b) => a + b, 0);
  const n = typeof result === 'number' ? result : result.done;
  return { result, micros, per: micros / n, each: each.map((m) => m / n) };
}

const median = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);

/**
 * One nginx (one worker) in two roles, never loaded at once. N, in B's place: terminates mTLS
 * (client certificate required) or plaintext and proxies keep-alive to `up`. M, in A's place:
 * plaintext in, to Sluice B over plaintext or mTLS (its own certificate; B's is not checked: it has
 * no DNS name for nginx to match, and a handshake's checks do not change the cost per request).
 */
function nginxConf(dir: string, p: { up: number; nPlain: number; nTls: number; mPlain: number; mTls: number; bPlain: number; bTls: number },
  server: Workload, client: Workload, ownId: string): string {
  const keep = 'proxy_http_version 1.1; proxy_set_header Connection "";';
  return `worker_processes 1; daemon off; master_process on; pid ${dir}/nginx-n.pid;
error_log ${dir}/nginx-n-error.log warn; events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}/nginx-n; proxy_temp_path ${dir}/nginx-n; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream app { server 127.0.0.1:${p.up}; keepalive 64; }
  upstream b_plain { server 127.0.0.1:${p.bPlain}; keepalive 64; }
  upstream b_tls { server 127.0.0.1:${p.bTls}; keepalive 64; }
  server { listen 127.0.0.1:${p.nPlain}; location / { proxy_pass http://app; ${keep} proxy_set_header x-forwarded-client-cert ""; } }
  server { listen 127.0.0.1:${p.nTls} ssl;
    ssl_certificate ${server.certFile}; ssl_certificate_key ${server.keyFile}; ssl_client_certificate ${server.caFile}; ssl_verify_client on;
    ssl_protocols TLSv1.3; ssl_session_tickets on;
    location / { proxy_pass http://app; ${keep} proxy_set_header x-forwarded-client-cert "By=${ownId};Hash=$ssl_client_fingerprint"; } }
  server { listen 127.0.0.1:${p.mPlain}; location / { proxy_pass http://b_plain; ${keep} } }
  server { listen 127.0.0.1:${p.mTls}; location / { proxy_pass https://b_tls; ${keep}
    proxy_ssl_certificate ${client.certFile}; proxy_ssl_certificate_key ${client.keyFile}; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on; } } }
`;
}

type Kind = 'plaintext' | 'mtls' | 'nginxPlaintext' | 'nginxMtls' | 'nginxAPlaintext' | 'nginxAMtls';

async function main(): Promise<void> {
  process.once('exit', killAllStartedSync);
  process.once('SIGINT', () => { killAllStartedSync(); process.exit(130); });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-mtls-'));
  const info = { node: process.version, cpus: os.availableParallelism(), commit: commit(), loadavg: os.loadavg()[0], seconds: SECONDS, rounds: ROUNDS };
  console.log(`node ${info.node}, ${info.cpus} CPUs, commit ${info.commit}, load average ${info.loadavg.toFixed(2)}`);
  try {
    const ids = pki(path.join(dir, 'pki'));
    const [up, aPlain, bPlain, aTls, bTls, bProbe, sServer, ad1, ad2, ad3, ad4, aPlainNgx, aTlsNgx, nPlain, nTls, mPlain, mTls, sServer1] = await freePorts(18);
    mkdirSync(path.join(dir, 'nginx'));
    mkdirSync(path.join(dir, 'nginx-n'));
    writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes 1; daemon off; master_process on; pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn; events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}/nginx; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:${up}; location / { return 200 "${'x'.repeat(100)}"; } } }
`);
    const nginx = startChild('nginx', NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'nginx-error.log')]);
    await waitHttp200(`http://127.0.0.1:${up}/`, 10_000, nginx);
    writeFileSync(path.join(dir, 'nginx-n.conf'), nginxConf(dir, { up, nPlain, nTls, mPlain, mTls, bPlain, bTls }, ids.server, ids.a, 'spiffe://cluster.local/ns/shop/sa/orders'));
    const ngxN = startChild('nginx-n', NGINX, ['-p', dir, '-c', path.join(dir, 'nginx-n.conf'), '-e', path.join(dir, 'nginx-n-error.log')]);
    await waitHttp200(`http://127.0.0.1:${nPlain}/`, 10_000, ngxN);
    const app = { name: 'app', endpoints: [`127.0.0.1:${up}`] };
    const b1 = startSluice(dir, 'b-plain', {
      admin: { address: `127.0.0.1:${ad1}` },
      listeners: [{ name: 'in', address: `127.0.0.1:${bPlain}`, direction: 'inbound', cluster: 'app' }], clusters: [app],
    });
    // A has a second listener for nginx N in B's place; the two are never loaded at once
    const a1 = startSluice(dir, 'a-plain', {
      admin: { address: `127.0.0.1:${ad2}` },
      listeners: [{ name: 'out', address: `127.0.0.1:${aPlain}`, cluster: 'b' }, { name: 'out-n', address: `127.0.0.1:${aPlainNgx}`, cluster: 'n' }],
      clusters: [{ name: 'b', endpoints: [`127.0.0.1:${bPlain}`] }, { name: 'n', endpoints: [`127.0.0.1:${nPlain}`] }],
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
    const mutual = { mode: 'mutual', principals: ['cluster.local/ns/shop/sa/orders'] };
    const a2 = startSluice(dir, 'a-mtls', {
      admin: { address: `127.0.0.1:${ad4}` }, tls: tlsOf(ids.a, 'disabled'),
      listeners: [{ name: 'out', address: `127.0.0.1:${aTls}`, cluster: 'b' }, { name: 'out-n', address: `127.0.0.1:${aTlsNgx}`, cluster: 'n' }],
      clusters: [{ name: 'b', endpoints: [`127.0.0.1:${bTls}`], tls: mutual }, { name: 'n', endpoints: [`127.0.0.1:${nTls}`], tls: mutual }],
    });
    const sv = startChild('s_server', 'openssl', ['s_server', '-accept', `127.0.0.1:${sServer}`, '-cert', ids.server.certFile, '-key', ids.server.keyFile,
      '-CAfile', ids.server.caFile, '-Verify', '1', '-quiet', '-naccept', '100000000'], { stdin: true });
    // the same with one session ticket per full handshake, as Sluice B sends (OpenSSL's default, and nginx's, is two)
    const sv1 = startChild('s_server-1', 'openssl', ['s_server', '-accept', `127.0.0.1:${sServer1}`, '-cert', ids.server.certFile, '-key', ids.server.keyFile,
      '-CAfile', ids.server.caFile, '-Verify', '1', '-quiet', '-naccept', '100000000', '-num_tickets', '1'], { stdin: true });
    for (const [port, c] of [[aPlain, a1], [aTls, a2], [aPlainNgx, a1], [aTlsNgx, a2], [mPlain, ngxN], [mTls, ngxN]] as const) await waitHttp200(`http://127.0.0.1:${port}/`, 20_000, c);
    for (const [port, c] of [[sServer, sv], [sServer1, sv1]] as const) {
      await waitFor('s_server', () => new Promise<boolean>((r) => { const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); }), 10_000, c);
    }

    // ── keep-alive: A and B, and A with nginx N in B's place ─────────────────────────
    // per connection count, kind and round: CPU µs/req of A and of the terminating side (B or N)
    const scenarios: Array<[Kind, number, Child, Child]> = [
      ['plaintext', aPlain, a1, b1], ['mtls', aTls, a2, b2], ['nginxPlaintext', aPlainNgx, a1, ngxN], ['nginxMtls', aTlsNgx, a2, ngxN],
      ['nginxAPlaintext', mPlain, ngxN, b1], ['nginxAMtls', mTls, ngxN, b2],
    ];
    type Sides = Record<Kind, { a: number[]; b: number[]; rps: number[] }>;
    const perConn = new Map<number, Sides>();
    let failures = 0;
    // warm-up, not counted
    if (ONLY !== 'handshakes') for (const [, port] of scenarios) await wrk(`http://127.0.0.1:${port}/`, { threads: 1, connections: 8, seconds: 1 });
    for (let r = 0; r < (ONLY === 'handshakes' ? 0 : ROUNDS); r++) {
      for (const conns of CONNECTIONS) {
        let sides = perConn.get(conns);
        if (!sides) perConn.set(conns, (sides = Object.fromEntries(scenarios.map(([k]) => [k, { a: [], b: [], rps: [] }])) as unknown as Sides));
        for (const [kind, port, a, b] of scenarios) {
          const m = await cpuPer([a.pid, b.pid], async () => {
            const res = await wrk(`http://127.0.0.1:${port}/`, { threads: 1, connections: conns, seconds: SECONDS });
            failures += res.non2xx + res.errors;
            sides![kind].rps.push(res.rps);
            return { done: res.requests };
          });
          sides[kind].a.push(m.each[0]);
          sides[kind].b.push(m.each[1]);
          console.log(`keep-alive -c${conns} ${kind.padEnd(15)} round ${r + 1}: ${a === ngxN ? 'nginx M' : 'A'} ${m.each[0].toFixed(1)} + ${b === ngxN ? 'nginx N' : 'B'} ${m.each[1].toFixed(1)} = ${m.per.toFixed(1)} µs/req, ${m.result.done} requests`);
        }
      }
    }
    const keepAlive = (sides: Sides) => {
      const med = (k: Kind, side: 'a' | 'b') => median(sides[k][side]);
      const pair = (k: Kind) => median(sides[k].a.map((x, i) => x + sides[k].b[i]));
      const side = (k: 'mtls' | 'nginxMtls' | 'nginxAMtls', w: 'a' | 'b') => {
        const plain = med(k === 'mtls' ? 'plaintext' : k === 'nginxMtls' ? 'nginxPlaintext' : 'nginxAPlaintext', w);
        return { plaintext: plain, mtls: med(k, w), added: med(k, w) - plain };
      };
      return {
        plaintextMicrosPerReq: pair('plaintext'), mtlsMicrosPerReq: pair('mtls'), addedMicrosPerReq: pair('mtls') - pair('plaintext'), target: 12,
        sluiceA: side('mtls', 'a'), sluiceB: side('mtls', 'b'), nginxN: side('nginxMtls', 'b'), sluiceAToNginx: side('nginxMtls', 'a'),
        nginxM: side('nginxAMtls', 'a'), sluiceBBehindNginx: side('nginxAMtls', 'b'),
        rps: Object.fromEntries(scenarios.map(([k]) => [k, median(sides[k].rps)])),
      };
    };

    // ── handshakes ─────────────────────────────────────────────────────────────────
    const hs: Record<string, number[]> = {
      sluiceFull: [], sluiceResumed: [], sServerFull: [], sServerResumed: [], sServer1Full: [], sServer1Resumed: [], sluicePlainCx: [], nginxFull: [], nginxResumed: [], nginxPlainCx: [],
    };
    let resumedShare = { sluice: 0, sServer: 0, nginx: 0 };
    for (let r = 0; r < (ONLY === 'keepalive' ? 0 : ROUNDS); r++) {
      const sf = await cpuPer([b2.pid], () => handshakes(bTls, ids.client, SECONDS, false));
      const sr = await cpuPer([b2.pid], () => handshakes(bTls, ids.client, SECONDS, true));
      const of = await cpuPer([sv.pid], () => handshakes(sServer, ids.client, SECONDS, false));
      const or = await cpuPer([sv.pid], () => handshakes(sServer, ids.client, SECONDS, true));
      const o1f = await cpuPer([sv1.pid], () => handshakes(sServer1, ids.client, SECONDS, false));
      const o1r = await cpuPer([sv1.pid], () => handshakes(sServer1, ids.client, SECONDS, true));
      const nf = await cpuPer([ngxN.pid], () => handshakes(nTls, ids.client, SECONDS, false));
      const nr = await cpuPer([ngxN.pid], () => handshakes(nTls, ids.client, SECONDS, true));
      const pc = await cpuPer([b2.pid], () => plainConnections(bProbe, SECONDS));
      const npc = await cpuPer([ngxN.pid], () => plainConnections(nPlain, SECONDS));
      hs.sluiceFull.push(sf.per); hs.sluiceResumed.push(sr.per); hs.sServerFull.push(of.per); hs.sServerResumed.push(or.per); hs.sServer1Full.push(o1f.per); hs.sServer1Resumed.push(o1r.per); hs.sluicePlainCx.push(pc.per);
      hs.nginxFull.push(nf.per); hs.nginxResumed.push(nr.per); hs.nginxPlainCx.push(npc.per);
      resumedShare = { sluice: sr.result.resumed / sr.result.done, sServer: or.result.resumed / or.result.done, nginx: nr.result.resumed / nr.result.done };
      const pct = (x: number) => `${(x * 100).toFixed(0)}% resumed`;
      console.log(`handshakes round ${r + 1}: Sluice full ${sf.per.toFixed(0)} µs (${sf.result.done}), resumed ${sr.per.toFixed(0)} µs (${sr.result.done}, ${pct(resumedShare.sluice)}), plaintext connection ${pc.per.toFixed(0)} µs; `
        + `s_server full ${of.per.toFixed(0)} µs (${of.result.done}), resumed ${or.per.toFixed(0)} µs (${pct(resumedShare.sServer)}); `
        + `s_server -num_tickets 1 full ${o1f.per.toFixed(0)} µs, resumed ${o1r.per.toFixed(0)} µs; `
        + `nginx full ${nf.per.toFixed(0)} µs (${nf.result.done}), resumed ${nr.per.toFixed(0)} µs (${pct(resumedShare.nginx)}), plaintext connection ${npc.per.toFixed(0)} µs`);
    }
    const m = (k: string) => median(hs[k]);
    const summary = {
      ...info,
      keepAlive: Object.fromEntries([...perConn].map(([c, sides]) => [`connections${c}`, keepAlive(sides)])),
      failures,
      handshake: {
        sluiceFullMicros: m('sluiceFull'), sluiceResumedMicros: m('sluiceResumed'), sluicePlainConnectionMicros: m('sluicePlainCx'),
        sServerFullMicros: m('sServerFull'), sServerResumedMicros: m('sServerResumed'),
        sServerOneTicketFullMicros: m('sServer1Full'), sServerOneTicketResumedMicros: m('sServer1Resumed'), keyExchange,
        nginxFullMicros: m('nginxFull'), nginxResumedMicros: m('nginxResumed'), nginxPlainConnectionMicros: m('nginxPlainCx'),
        sluiceFullTlsOnlyMicros: m('sluiceFull') - m('sluicePlainCx'), sluiceResumedTlsOnlyMicros: m('sluiceResumed') - m('sluicePlainCx'),
        nginxFullTlsOnlyMicros: m('nginxFull') - m('nginxPlainCx'), nginxResumedTlsOnlyMicros: m('nginxResumed') - m('nginxPlainCx'),
        resumedShare,
      },
      rounds: { keepAlive: Object.fromEntries([...perConn].map(([c, sides]) => [`connections${c}`, sides])), handshakes: hs },
    };
    const h = summary.handshake;
    const us = (x: number) => `${x.toFixed(1)} µs/req`;
    const x = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
    console.log('');
    console.log('| keep-alive, CPU per request | plaintext | mTLS | added by mTLS | target |');
    console.log('| --- | ---: | ---: | ---: | --- |');
    for (const [c, sides] of perConn) {
      const k = keepAlive(sides);
      console.log(`| -c${c}: Sluice A + Sluice B | ${us(k.plaintextMicrosPerReq)} | ${us(k.mtlsMicrosPerReq)} | **${us(k.addedMicrosPerReq)}** | ≤ 12 |`);
      console.log(`| -c${c}: Sluice A (originates) | ${us(k.sluiceA.plaintext)} | ${us(k.sluiceA.mtls)} | ${us(k.sluiceA.added)} | |`);
      console.log(`| -c${c}: Sluice B (terminates) | ${us(k.sluiceB.plaintext)} | ${us(k.sluiceB.mtls)} | ${us(k.sluiceB.added)} | |`);
      console.log(`| -c${c}: nginx N in B's place (terminates) | ${us(k.nginxN.plaintext)} | ${us(k.nginxN.mtls)} | ${us(k.nginxN.added)} | |`);
      console.log(`| -c${c}: Sluice A in front of nginx N | ${us(k.sluiceAToNginx.plaintext)} | ${us(k.sluiceAToNginx.mtls)} | ${us(k.sluiceAToNginx.added)} | |`);
      console.log(`| -c${c}: nginx M in A's place (originates) | ${us(k.nginxM.plaintext)} | ${us(k.nginxM.mtls)} | ${us(k.nginxM.added)} | |`);
      console.log(`| -c${c}: Sluice B behind nginx M | ${us(k.sluiceBBehindNginx.plaintext)} | ${us(k.sluiceBBehindNginx.mtls)} | ${us(k.sluiceBBehindNginx.added)} | |`);
    }
    if (ONLY !== 'keepalive') {
      console.log('');
      console.log('| handshake (CPU of the server) | whole connection | less a plaintext connection | target |');
      console.log('| --- | ---: | ---: | --- |');
      console.log(`| full, openssl s_server | ${h.sServerFullMicros.toFixed(0)} µs | | |`);
      console.log(`| full, openssl s_server -num_tickets 1 | ${h.sServerOneTicketFullMicros.toFixed(0)} µs | (Sluice B's TLS part: ${x(h.sluiceFullTlsOnlyMicros, h.sServerOneTicketFullMicros)} of it) | |`);
      console.log(`| full, Sluice B | ${h.sluiceFullMicros.toFixed(0)} µs (${x(h.sluiceFullMicros, h.sServerFullMicros)} s_server) | ${h.sluiceFullTlsOnlyMicros.toFixed(0)} µs (**${x(h.sluiceFullTlsOnlyMicros, h.sServerFullMicros)}** s_server; plaintext connection ${h.sluicePlainConnectionMicros.toFixed(0)} µs) | ≤ 1.3× s_server |`);
      console.log(`| full, nginx N | ${h.nginxFullMicros.toFixed(0)} µs (${x(h.nginxFullMicros, h.sServerFullMicros)} s_server) | ${h.nginxFullTlsOnlyMicros.toFixed(0)} µs (${x(h.nginxFullTlsOnlyMicros, h.sServerFullMicros)} s_server; plaintext connection ${h.nginxPlainConnectionMicros.toFixed(0)} µs) | |`);
      console.log(`| resumed, openssl s_server | ${h.sServerResumedMicros.toFixed(0)} µs (${x(h.sServerResumedMicros, h.sServerFullMicros)} full) | | |`);
      console.log(`| resumed, openssl s_server -num_tickets 1 | ${h.sServerOneTicketResumedMicros.toFixed(0)} µs (${x(h.sServerOneTicketResumedMicros, h.sServerOneTicketFullMicros)} full) | | |`);
      console.log(`| resumed, Sluice B | ${h.sluiceResumedMicros.toFixed(0)} µs (${x(h.sluiceResumedMicros, h.sluiceFullMicros)} full) | ${h.sluiceResumedTlsOnlyMicros.toFixed(0)} µs (**${x(h.sluiceResumedTlsOnlyMicros, h.sluiceFullTlsOnlyMicros)}** full) | ≤ 0.5× full |`);
      console.log(`| resumed, nginx N | ${h.nginxResumedMicros.toFixed(0)} µs (${x(h.nginxResumedMicros, h.nginxFullMicros)} full) | ${h.nginxResumedTlsOnlyMicros.toFixed(0)} µs (${x(h.nginxResumedTlsOnlyMicros, h.nginxFullTlsOnlyMicros)} full) | |`);
    }
    if (ONLY !== 'keepalive') console.log(`key exchange by port: ${JSON.stringify(keyExchange)} (Sluice B ${bTls}, s_server ${sServer} and ${sServer1}, nginx N ${nTls})`);
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
