/**
 * Graceful shutdown of the real process: SIGTERM closes the listeners, lets
 * requests in flight finish (HTTP/1 answers with `connection: close`, HTTP/2
 * clients get GOAWAY), closes idle connections, and exits 0. A connection that
 * outlives drain.timeoutMs is cut and the process still exits 0.
 */
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { ADMIN_AUTH, get, httpUpstream, run, spawnSluice, startSluice, waitFor, withTestDefaults, writeConfig, type ChildSluice } from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

/** An upstream that holds /slow* requests until release() (the test decides when responses go out). */
async function holdingUpstream() {
  const held: http.ServerResponse[] = [];
  let released = false;
  const up = await httpUpstream((req, res) => {
    const answer = () => { res.setHeader('content-length', 4); res.end('done'); };
    if (released || !req.url?.startsWith('/slow')) answer(); else held.push(res);
  });
  return {
    up,
    get held() { return held.length; },
    release() { released = true; for (const res of held.splice(0)) { res.setHeader('content-length', 4); res.end('done'); } },
  };
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

function killIfRunning(child: ChildSluice): Promise<unknown> {
  if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  return child.exited;
}

/** The exit code, or a failure if the process is still running after `ms`. */
async function exitWithin(child: ChildSluice, ms: number): Promise<number | null | 'running'> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([child.exited, new Promise<'running'>((res) => { timer = setTimeout(() => res('running'), ms); })]);
  clearTimeout(timer);
  return r;
}

interface H1Result { status: number; headers: http.IncomingHttpHeaders; body: string }

function h1Request(port: number, agent: http.Agent): Promise<H1Result> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/slow', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

t.test('SIGTERM with requests in flight: they complete, new connections are refused, exit 0', async (t) => {
  const hold = await holdingUpstream();
  const file = writeConfig(withTestDefaults({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', protocol: 'http1', endpoints: [`127.0.0.1:${hold.up.port}`] }],
    drain: { periodMs: 0, timeoutMs: 20_000 },
  }));
  const child = spawnSluice(['start', '--config', file]);
  t.teardown(async () => { await killIfRunning(child); await hold.up.close(); });
  const { ports, admin } = await sluiceStarted(child);
  const port = ports.app;

  // HTTP/1: three requests in flight on keep-alive connections, and one idle keep-alive connection
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
  t.teardown(() => agent.destroy());
  const idle = new net.Socket();
  idle.connect(port, '127.0.0.1');
  await once(idle, 'connect');
  let idleGot = '';
  idle.setEncoding('latin1');
  idle.on('data', (d: string) => { idleGot += d; });
  idle.on('error', () => {});
  const idleClosed = once(idle, 'close');
  idle.write('GET /warm HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => idleGot.endsWith('done'), 10_000, 'the answer on the idle connection');
  t.notMatch(idleGot, /connection: close/i, 'kept alive before the drain');
  const h1 = [h1Request(port, agent), h1Request(port, agent), h1Request(port, agent)];

  // HTTP/2: one stream in flight
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  let goaway: { code: number; lastStreamID: number } | null = null;
  session.on('goaway', (code, lastStreamID) => { goaway = { code, lastStreamID }; });
  const stream = session.request({ ':path': '/slow-h2' });
  stream.setEncoding('utf8');
  let h2Status = 0;
  let h2Body = '';
  stream.on('response', (h) => { h2Status = Number(h[':status']); });
  stream.on('data', (d: string) => { h2Body += d; });
  const h2Ended = new Promise<boolean>((resolve) => { stream.on('end', () => resolve(true)); stream.on('close', () => resolve(false)); });

  await waitFor(() => hold.held === 4, 15_000, 'four requests held at the upstream');

  child.proc.kill('SIGTERM');
  await waitFor(() => refused(port), 10_000, 'new connections to be refused');
  t.pass('the listener is closed: new connections are refused');
  t.equal((await get(`${admin}/ready`)).status, 503, 'admin says draining');
  // a config pushed now must not reopen the listeners the drain closed
  const push = await run('curl', ['-sS', '-X', 'POST', '-H', `authorization: ${ADMIN_AUTH}`, '--data-binary', `@${file}`, '-w', '\n%{http_code}', `${admin}/config`]);
  t.match(push.stdout, /"ERR_DRAINING"[\s\S]*\n400$/, 'POST /config refused while draining');
  t.equal(await refused(port), true, 'still refused after the push');
  await waitFor(() => goaway !== null, 10_000, 'GOAWAY on the HTTP/2 session');
  t.equal(goaway!.code, http2.constants.NGHTTP2_NO_ERROR, 'graceful GOAWAY');
  t.ok(goaway!.lastStreamID >= 1, 'GOAWAY keeps the stream in flight');
  await idleClosed;
  t.pass('the idle keep-alive connection was closed by the drain');
  t.equal(child.proc.exitCode, null, 'still running while requests are in flight');

  hold.release();
  const results = await Promise.all(h1);
  for (const r of results) {
    t.equal(r.status, 200);
    t.equal(r.body, 'done');
    t.equal(r.headers.connection, 'close', 'HTTP/1 response during drain says connection: close');
  }
  t.equal(await h2Ended, true, 'the HTTP/2 stream completed (END_STREAM, not a reset)');
  t.equal(h2Status, 200);
  t.equal(h2Body, 'done');
  t.equal(await exitWithin(child, 20_000), 0, 'exit code 0');
});

t.test('a connection open past drain.timeoutMs is cut and the process still exits 0', async (t) => {
  const echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  const echoPort = (echo.address() as AddressInfo).port;
  const file = writeConfig(withTestDefaults({
    listeners: [{ name: 'tcp', address: '127.0.0.1:0', cluster: 'echo' }],
    clusters: [{ name: 'echo', endpoints: [`127.0.0.1:${echoPort}`] }],
    drain: { periodMs: 0, timeoutMs: 1500 },
  }));
  const child = spawnSluice(['start', '--config', file]);
  t.teardown(async () => { await killIfRunning(child); echo.close(); });
  const { ports } = await sluiceStarted(child);

  // opaque TCP does not drain by itself: it stays until the drain timeout
  const c = net.connect(ports.tcp, '127.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  c.setEncoding('latin1');
  let got = '';
  c.on('data', (d: string) => { got += d; });
  c.write('\x00\x01opaque');
  await waitFor(() => got === '\x00\x01opaque', 10_000, 'the echo through the proxy');
  const closed = once(c, 'close');

  child.proc.kill('SIGTERM');
  await waitFor(() => refused(ports.tcp), 10_000, 'the listener to close');
  t.equal(c.destroyed, false, 'the open connection survives the start of the drain');
  c.write('\x00\x02still');
  await waitFor(() => got.endsWith('\x00\x02still'), 10_000, 'the connection to keep working while draining');
  t.pass('bytes still flow during the drain');

  t.equal(await exitWithin(child, 20_000), 0, 'exit code 0 after the drain timeout');
  await closed;
  t.pass('the connection was closed');
});

t.test('stopping one in-process Sluice does not drain another', async (t) => {
  const up = await httpUpstream((req, res) => { res.setHeader('content-length', 2); res.end('ok'); });
  const doc = { listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }], clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }] };
  const first = await startSluice(doc);
  const second = await startSluice(doc);
  t.teardown(async () => { await first.stop(); await second.stop(); await up.close(); });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const before = await h1Request(second.port('app'), agent);
  t.equal(before.status, 200);
  await first.stop();
  const after = await h1Request(second.port('app'), agent);
  t.equal(after.status, 200);
  t.not(after.headers.connection, 'close', 'the other instance is not draining');
  t.equal((await get(`${second.admin}/ready`)).status, 200);
});
