/**
 * /stats after real traffic through a real Sluice: HTTP/1 and HTTP/2 (curl), gRPC
 * (@grpc/grpc-js), Dubbo (dubbo-remoting). The exposition passes `promtool check
 * metrics`; request durations are histograms in seconds and body bytes are counted,
 * both exactly for known traffic; gRPC calls are counted by grpc-status, not as 2xx;
 * a response the upstream cuts off counts as a reset and in no response class.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { type ExecResult, get, h2Upstream, httpUpstream, ROOT, run, startSluice, stats, waitFor } from '../helpers/harness';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const remoting: any = require('dubbo-remoting');

type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Function>;
interface EchoRequest { message: string; count: number; failCode: number }

function loadEcho(): Ctor & { service: grpc.ServiceDefinition } {
  const def = protoLoader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true });
  return (grpc.loadPackageDefinition(def) as any).sluice.test.Echo;
}

async function grpcEcho(): Promise<{ port: number; server: grpc.Server }> {
  const Echo = loadEcho();
  const server = new grpc.Server();
  server.addService(Echo.service, {
    Unary(call: grpc.ServerUnaryCall<EchoRequest, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (call.request.failCode) { cb({ code: call.request.failCode, details: 'no such thing' } as grpc.ServiceError); return; }
      cb(null, { message: `echo:${call.request.message}`, index: 0, via: '' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { port, server };
}

function unary(client: grpc.Client & Record<string, Function>, req: Partial<EchoRequest>): Promise<number> {
  return new Promise((resolve) => {
    const call = client.Unary(req, { deadline: Date.now() + 10_000 }, () => {}) as grpc.ClientUnaryCall;
    call.on('status', (s: grpc.StatusObject) => resolve(s.code));
  });
}

/** A Dubbo provider (dubbo-remoting's codec) answering every call with "ok:<method>". */
async function dubboProvider(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const enc = remoting.encoder({});
    const dec = remoting.decoder({});
    enc.pipe(sock);
    sock.pipe(dec);
    dec.on('heartbeat', (hb: any) => enc.writeHeartbeatAck(hb));
    dec.on('request', (req: any) => enc.writeResponse(req, { appResponse: { $class: 'java.lang.String', $: `ok:${req.data.methodName}` }, isError: false }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** Makes `n` Dubbo calls over one connection with dubbo-remoting's encoder; resolves when all are answered. */
async function dubboCalls(port: number, n: number): Promise<void> {
  const sock = net.connect(port, '127.0.0.1');
  await once(sock, 'connect');
  const enc = remoting.encoder({});
  const dec = remoting.decoder({});
  enc.pipe(sock);
  sock.pipe(dec);
  let answered = 0;
  const done = new Promise<void>((resolve) => dec.on('response', () => { if (++answered === n) resolve(); }));
  for (let i = 0; i < n; i++) {
    enc.writeRequest(100 + i, { serverSignature: 'com.example.Metrics:1.0.0', methodName: 'hello', args: [{ $class: 'java.lang.String', $: `x${i}` }], requestProps: {}, timeout: 5000 });
  }
  await done;
  sock.destroy();
}

/**
 * curl with the response body to a pipe, unbuffered (-N): `onBody` runs once `n` body bytes have
 * come to curl (the result's stdout is their count). An upstream cuts its response there, not
 * before: bytes it wrote just before closing are not sure to reach Sluice (a close with bytes of
 * ours unread is an RST, and so is a write of Sluice's to the closed connection; a socket whose
 * write fails is destroyed with what it had not read yet), and Sluice then rightly answers on its
 * own (502, UNAVAILABLE) instead of passing on a cut-off response.
 */
function curlUntil(args: string[], n: number, onBody: () => void): Promise<ExecResult> {
  return new Promise((resolve) => {
    const p = spawn('curl', ['-sS', '-N', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => p.kill(), 30_000);
    let got = 0;
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { if (got < n && (got += d.length) >= n) onBody(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d; });
    // stdout: how many body bytes came
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout: String(got), stderr }); });
  });
}

async function closedPort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

t.test('/stats after HTTP/1, HTTP/2, gRPC and Dubbo traffic', async (t) => {
  // each upstream below that cuts its response off does so when the test says, once the client has the bytes before the cut
  const cuts = { web: () => {}, h2: () => {}, grpc: () => {} };
  const web = await httpUpstream((req, res) => {
    if (req.url === '/body') {
      req.resume();
      req.on('end', () => { res.setHeader('content-length', 1000); res.end(Buffer.alloc(1000, 0x61)); });
    } else if (req.url === '/slow') {
      setTimeout(() => { res.setHeader('content-length', 2); res.end('ok'); }, 300);
    } else if (req.url === '/cut') {
      // 10 of the 1000 bytes promised, then the connection is gone
      res.writeHead(200, { 'content-length': 1000 });
      res.write(Buffer.alloc(10, 0x62));
      cuts.web = () => res.socket?.destroy();
    }
  });
  const h2 = await h2Upstream((stream, headers) => {
    stream.on('error', () => {});
    if (headers[':path'] === '/h2cut') {
      stream.respond({ ':status': 200 });
      stream.write(Buffer.alloc(50, 0x63));
      cuts.h2 = () => stream.session?.destroy();
      return;
    }
    stream.resume();
    stream.on('end', () => { stream.respond({ ':status': 200, 'content-length': '500' }); stream.end(Buffer.alloc(500, 0x64)); });
  });
  const echo = await grpcEcho();
  // speaks gRPC framing: headers, one message, then the connection is gone
  const grpcCut = await h2Upstream((stream) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    const msg = Buffer.from([0x0a, 0x03, 0x6f, 0x6e, 0x65]);
    stream.write(Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]));
    cuts.grpc = () => stream.session?.destroy();
  });
  const provider = await dubboProvider();
  const dead = await closedPort();
  const s = await startSluice({
    listeners: [
      { name: 'web', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'h2', address: '127.0.0.1:0', cluster: 'h2' },
      { name: 'grpc', address: '127.0.0.1:0', cluster: 'echo' },
      { name: 'dead', address: '127.0.0.1:0', cluster: 'dead' },
      { name: 'grpccut', address: '127.0.0.1:0', cluster: 'grpccut' },
      { name: 'rpc', address: '127.0.0.1:0', cluster: 'dubbo' },
    ],
    clusters: [
      { name: 'web', endpoints: [`127.0.0.1:${web.port}`] },
      { name: 'h2', endpoints: [`127.0.0.1:${h2.port}`] },
      { name: 'echo', endpoints: [`127.0.0.1:${echo.port}`] },
      { name: 'dead', endpoints: [`127.0.0.1:${dead}`] },
      { name: 'grpccut', endpoints: [`127.0.0.1:${grpcCut.port}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${provider.port}`] },
    ],
  });
  const Echo = loadEcho();
  const clients = ['grpc', 'dead', 'grpccut'].map((l) => new Echo(`127.0.0.1:${s.port(l)}`, grpc.credentials.createInsecure()));
  t.teardown(async () => {
    for (const c of clients) c.close();
    await s.stop();
    await web.close();
    await h2.close();
    await grpcCut.close();
    await provider.close();
    echo.server.forceShutdown();
  });
  const body = 'x'.repeat(100);
  const webUrl = `http://127.0.0.1:${s.port('web')}`;
  const h2Url = `http://127.0.0.1:${s.port('h2')}`;

  // HTTP/1: four 100-byte uploads answered with 1000 bytes, one answer after 300 ms, one cut off
  for (let i = 0; i < 4; i++) {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--data-binary', body, `${webUrl}/body`]);
    t.equal(r.stdout, '200 1000');
  }
  t.equal((await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `${webUrl}/slow`])).stdout, '200');
  const cut = await curlUntil([`${webUrl}/cut`], 10, () => cuts.web());
  t.equal(cut.stdout, '10', 'curl had the 10 bytes before the cut');
  t.ok(cut.code !== null && cut.code !== 0, `curl sees the HTTP/1 response cut off (exit ${cut.code})`);

  // HTTP/2: two GETs and a 100-byte POST answered with 500 bytes, one cut off (its upstream connection closes)
  for (const args of [[], [], ['--data-binary', body]]) {
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', ...args, `${h2Url}/h2`]);
    t.equal(r.stdout, '200 500');
  }
  const h2cut = await curlUntil(['--http2-prior-knowledge', `${h2Url}/h2cut`], 50, () => cuts.h2());
  t.equal(h2cut.stdout, '50', 'curl had the 50 bytes before the reset');
  t.ok(h2cut.code !== null && h2cut.code !== 0, `curl sees the HTTP/2 response reset (exit ${h2cut.code})`);

  // gRPC: 3 OK, 2 NOT_FOUND from the server, 1 UNAVAILABLE from Sluice, 1 cut off mid-call
  const [grpcClient, deadClient, cutClient] = clients;
  const codes: number[] = [];
  for (let i = 0; i < 3; i++) codes.push(await unary(grpcClient, { message: `m${i}` }));
  for (let i = 0; i < 2; i++) codes.push(await unary(grpcClient, { message: 'nf', failCode: grpc.status.NOT_FOUND }));
  codes.push(await unary(deadClient, { message: 'd' }));
  t.same(codes, [0, 0, 0, 5, 5, 14], 'what the gRPC clients got');
  let cutMessages = 0;
  const cutCode = await new Promise<number>((resolve) => {
    const call = cutClient.ServerStream({ message: 'x', count: 5 }, { deadline: Date.now() + 10_000 }) as grpc.ClientReadableStream<unknown>;
    call.on('data', () => { cutMessages++; cuts.grpc(); }); // the message came through: now the upstream's connection goes
    call.on('error', () => {});
    call.on('status', (st: grpc.StatusObject) => resolve(st.code));
  });
  t.equal(cutMessages, 1, 'the cut-off call had its one message first');
  t.not(cutCode, grpc.status.OK, 'the cut-off call failed at the client');

  // Dubbo: three calls
  await dubboCalls(s.port('rpc'), 3);

  const st = await waitFor(async () => {
    const m = await stats(s.admin);
    const idle = ['http1', 'http2', 'grpc', 'dubbo'].every((p) => m.get(`sluice_downstream_rq_active{protocol="${p}"}`) === 0);
    // per-method Dubbo stats come from the workers about once a second
    return idle && (m.get('sluice_dubbo_rq_total{interface="com.example.Metrics",method="hello"}') ?? 0) === 3 ? m : null;
  }, 10_000, 'every request finished and the Dubbo stats delivered');
  const v = (k: string) => st.get(k);

  t.test('promtool check metrics accepts the exposition', async (t) => {
    const text = (await get(`${s.admin}/stats`)).body;
    t.match(text, /# TYPE sluice_downstream_rq_duration_seconds histogram\n/);
    t.match(text, /# TYPE sluice_dubbo_rq_duration_seconds histogram\n/);
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-metrics-')), 'stats.txt');
    writeFileSync(file, text);
    const r = await run('sh', ['-c', `promtool check metrics < '${file}'`]);
    t.equal(r.stdout + r.stderr, '', 'no lint problems');
    t.equal(r.code, 0, 'promtool exit code');
  });

  t.test('HTTP/1: durations and body bytes of known requests', async (t) => {
    const h = (le: string) => v(`sluice_downstream_rq_duration_seconds_bucket{protocol="http1",le="${le}"}`);
    t.equal(v('sluice_downstream_rq_duration_seconds_count{protocol="http1"}'), 6);
    t.equal(h('+Inf'), 6);
    t.ok(h('0.25')! <= 5, `the 300 ms answer is above le=0.25 (${h('0.25')} at or below)`);
    t.ok(v('sluice_downstream_rq_duration_seconds_sum{protocol="http1"}')! >= 0.3, 'the sum is in seconds and holds the 300 ms');
    t.equal(v('sluice_downstream_rq_rx_bytes_total{protocol="http1"}'), 400, '4 × 100 request bytes');
    t.equal(v('sluice_downstream_rq_tx_bytes_total{protocol="http1"}'), 4012, '4 × 1000 + 2 + the 10 bytes sent before the cut');
  });

  t.test('HTTP/1: the cut-off response is a reset, not a 2xx', async (t) => {
    t.equal(v('sluice_upstream_rq_reset_total{cluster="web"}'), 1);
    t.equal(v('sluice_downstream_rq_xx_total{protocol="http1",class="2xx"}'), 5, 'the five whole responses');
    t.equal(v('sluice_upstream_rq_xx_total{cluster="web",class="2xx"}'), 5);
    t.equal(v('sluice_downstream_rq_xx_total{protocol="http1",class="5xx"}'), 0);
  });

  t.test('HTTP/2: durations, bytes, and the reset', async (t) => {
    t.equal(v('sluice_downstream_rq_duration_seconds_count{protocol="http2"}'), 4);
    t.equal(v('sluice_downstream_rq_duration_seconds_bucket{protocol="http2",le="+Inf"}'), 4);
    t.equal(v('sluice_downstream_rq_rx_bytes_total{protocol="http2"}'), 100);
    t.equal(v('sluice_downstream_rq_tx_bytes_total{protocol="http2"}'), 1550, '3 × 500 + the 50 bytes before the cut');
    t.equal(v('sluice_upstream_rq_reset_total{cluster="h2"}'), 1);
    t.equal(v('sluice_downstream_rq_xx_total{protocol="http2",class="2xx"}'), 3);
    t.equal(v('sluice_upstream_rq_xx_total{cluster="h2",class="2xx"}'), 3);
  });

  t.test('gRPC: counted by grpc-status, not as 2xx; the cut-off call only as a reset', async (t) => {
    const g = (code: number) => v(`sluice_downstream_rq_grpc_status_total{grpc_status="${code}"}`);
    t.equal(g(0), 3, 'OK');
    t.equal(g(5), 2, 'NOT_FOUND');
    t.equal(g(14), 1, 'UNAVAILABLE (Sluice could not connect)');
    let all = 0;
    for (let c = 0; c <= 16; c++) all += g(c) ?? 0;
    t.equal(all, 6, 'the cut-off call has no status of ours');
    t.equal(v('sluice_downstream_rq_xx_total{protocol="grpc",class="2xx"}'), 3, 'only the OK calls are 2xx');
    t.equal(v('sluice_downstream_rq_xx_total{protocol="grpc",class="4xx"}'), 2, 'NOT_FOUND is charged as 404');
    t.equal(v('sluice_downstream_rq_xx_total{protocol="grpc",class="5xx"}'), 1, 'UNAVAILABLE is charged as 503');
    t.equal(v('sluice_upstream_rq_xx_total{cluster="echo",class="2xx"}'), 3);
    t.equal(v('sluice_upstream_rq_xx_total{cluster="echo",class="4xx"}'), 2);
    t.equal(v('sluice_upstream_rq_reset_total{cluster="grpccut"}'), 1);
    for (const c of ['2xx', '4xx', '5xx']) t.equal(v(`sluice_upstream_rq_xx_total{cluster="grpccut",class="${c}"}`), 0, `grpccut ${c}`);
    t.equal(v('sluice_downstream_rq_duration_seconds_count{protocol="grpc"}'), 7);
    t.ok(v('sluice_downstream_rq_rx_bytes_total{protocol="grpc"}')! > 0);
    t.ok(v('sluice_downstream_rq_tx_bytes_total{protocol="grpc"}')! > 0);
  });

  t.test('Dubbo: durations in seconds, per protocol and per method', async (t) => {
    t.equal(v('sluice_downstream_rq_duration_seconds_count{protocol="dubbo"}'), 3);
    t.ok(v('sluice_downstream_rq_rx_bytes_total{protocol="dubbo"}')! > 3 * 16, 'request frames, headers and bodies');
    t.ok(v('sluice_downstream_rq_tx_bytes_total{protocol="dubbo"}')! > 3 * 16, 'response frames');
    const l = 'interface="com.example.Metrics",method="hello"';
    t.equal(v(`sluice_dubbo_rq_duration_seconds_count{${l}}`), 3);
    t.equal(v(`sluice_dubbo_rq_duration_seconds_bucket{${l},le="+Inf"}`), 3);
  });
});
