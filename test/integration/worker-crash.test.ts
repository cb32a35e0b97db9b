/**
 * A worker dies under load (POST /debug/kill_worker ends one abruptly, as a
 * crash would): its connections are lost, everything else keeps working, a new
 * worker replaces it, and no descriptor is left behind. Then 10,000 short
 * connections, and the descriptor count of the Sluice process comes back.
 *
 * Sluice runs as a child process so its descriptors can be counted in /proc.
 */
import net from 'node:net';
import t, { type Test } from 'tap';
import { ADMIN_AUTH, fdsBackTo, httpUpstream, run, settledFds, spawnSluice, stats, waitFor, withTestDefaults, writeConfig, type ChildSluice, type Upstream } from '../helpers/harness';
import { sluiceStarted, type StartedSluice } from '../helpers/netns';

/** A keep-alive HTTP/1.1 connection that sends one request at a time and reads a content-length response. */
class RawConn {
  readonly socket: net.Socket;
  closed = false;
  /** The last response that was not a 200, for failure messages. */
  lastError = '';
  private buf = '';
  private waiter: ((status: number) => void) | null = null;
  readonly ready: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('error', () => {});
    this.socket.on('data', (d: string) => { this.buf += d; this.check(); });
    this.socket.on('close', () => { this.closed = true; this.finish(0); });
  }

  private check(): void {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const m = /content-length: *(\d+)/i.exec(this.buf.slice(0, end));
    const total = end + 4 + (m ? Number(m[1]) : 0);
    if (this.buf.length < total) return;
    const status = Number(this.buf.slice(9, 12));
    if (status !== 200) this.lastError = this.buf.slice(0, total);
    this.buf = this.buf.slice(total);
    this.finish(status);
  }

  private finish(status: number): void {
    const w = this.waiter;
    this.waiter = null;
    w?.(status);
  }

  /** Status of the response, or 0 if the connection closed first. */
  request(path = '/', close = false): Promise<number> {
    if (this.closed) return Promise.resolve(0);
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.socket.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n${close ? 'Connection: close\r\n' : ''}\r\n`);
    });
  }
}

const failures: string[] = [];

/** One connection, one request with `Connection: close`, then wait for the close: the status, or 0. */
function oneShot(port: number): Promise<number> {
  return new Promise((resolve) => {
    const c = new RawConn(port);
    c.ready.catch(() => {});
    let status = 0;
    c.request('/', true).then((s) => { status = s; });
    c.socket.once('close', () => setImmediate(() => {
      if (status !== 200 && failures.length < 5) failures.push(c.lastError || '(closed without a response)');
      resolve(status);
    }));
    c.socket.setTimeout(20_000, () => c.socket.destroy());
  });
}

let up: Upstream;
let hits = 0;
let child: ChildSluice;
let started: StartedSluice;
let baseline = 0;

t.before(async () => {
  up = await httpUpstream((req, res) => { hits++; res.setHeader('content-length', 2); res.end('ok'); });
  const file = writeConfig(withTestDefaults({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    // idle upstream connections close soon, so the descriptor count can come back down
    http: { upstreamIdleTimeoutMs: 300 },
  }));
  child = spawnSluice(['start', '--config', file]);
  started = await sluiceStarted(child);
  // one request end to end, so everything created lazily exists before the baseline
  t.equal(await oneShot(started.ports.app), 200, 'warm-up request');
  baseline = await settledFds(child.proc.pid!);
});

t.teardown(async () => {
  if (child && child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited; }
  await up?.close();
});

/** Back to the descriptors it had before the test (idle upstream connections time out meanwhile). */
function fdsBack(t: Test, what: string): Promise<void> {
  return fdsBackTo(t, child.proc.pid!, baseline, what);
}

t.test('a worker killed under load: its connections fail, others and new ones work, no fd leak', async (t) => {
  const port = started.ports.app;
  const restartsBefore = (await stats(started.admin)).get('sluice_worker_restarts_total');
  t.equal(restartsBefore, 0);

  // 20 keep-alive connections, each proven to work before the crash
  const conns = Array.from({ length: 20 }, () => new RawConn(port));
  t.teardown(() => { for (const c of conns) c.socket.destroy(); });
  await Promise.all(conns.map((c) => c.ready));
  t.same(await Promise.all(conns.map((c) => c.request())), conns.map(() => 200), 'every connection answers before the crash');

  const wrk = run('wrk', ['-t', '2', '-c', '20', '-d', '5s', '--timeout', '5s', `http://127.0.0.1:${port}/`], 30_000);
  const hitsAtStart = hits;
  await waitFor(() => hits - hitsAtStart >= 300, 15_000, 'load through the proxy');
  const kill = await fetchPost(`${started.admin}/debug/kill_worker`);
  t.equal(kill, 200, 'kill_worker accepted');
  // new connections at once, while the worker is still going down: one handed to it before it
  // took the descriptor is given to another worker, not dropped
  const fresh = Promise.all(Array.from({ length: 10 }, () => oneShot(port)));

  // the dead worker's connections close; the others are untouched
  await waitFor(() => conns.some((c) => c.closed), 10_000, 'a connection of the killed worker to close');
  const after = await Promise.all(conns.map((c) => c.request()));
  const lost = after.filter((s) => s === 0).length;
  t.ok(lost >= 1 && lost < conns.length, `connections on the killed worker failed (${lost} of ${conns.length}), the rest did not`);
  t.same(after.filter((s) => s !== 0), after.filter((s) => s === 200), 'surviving connections still answer 200');

  const freshStatus = await fresh;
  t.same(freshStatus, freshStatus.map(() => 200), 'new connections made right after the kill succeed');
  const later = await Promise.all(Array.from({ length: 10 }, () => oneShot(port)));
  t.same(later, later.map(() => 200), 'and so do the ones after');
  await waitFor(async () => (await stats(started.admin)).get('sluice_worker_restarts_total') === 1, 10_000, 'restart counted');
  t.pass('sluice_worker_restarts_total is 1');

  const w = await wrk;
  t.equal(w.code, 0, w.stderr);
  const total = Number(/(\d+) requests in/.exec(w.stdout)?.[1] ?? 0);
  t.ok(total > 300, `wrk completed ${total} requests`);
  t.notMatch(w.stdout, /Non-2xx/, 'no error responses: a lost connection is a socket error, never a bad reply');

  for (const c of conns) c.socket.destroy();
  await fdsBack(t, 'after the crash and the load');
  const st = await stats(started.admin);
  t.equal(st.get('sluice_downstream_cx_active{listener="app"}'), 0, 'no connection left open');
  // Gauges a dead worker had raised are zeroed by the main thread: it never ran the code that lowers them.
  t.equal(st.get('sluice_upstream_cx_active{cluster="web"}'), 0, 'no upstream connection counted open');
  t.equal(st.get('sluice_downstream_rq_active{protocol="http1"}'), 0, 'no request counted in flight');
  t.equal(st.get('sluice_upstream_rq_active{cluster="web"}'), 0, 'no upstream request counted in flight');
  t.equal(st.get('sluice_worker_restarts_total'), 1);
  t.equal(st.get('sluice_handoff_failed_total'), 0, 'no connection was dropped by the main thread');
});

t.test('a worker killed with connections queued for it: each is served by another worker, none leaks', async (t) => {
  const port = started.ports.app;
  const before = await stats(started.admin);
  // the worker that kill_worker will end stops taking connections; new ones still reach its queue
  t.equal(await fetchPost(`${started.admin}/debug/stall_worker?ms=8000`), 200, 'a worker stalls');
  let answered = 0;
  const outcomes = Array.from({ length: 20 }, () => oneShot(port).then((s) => { answered++; return s; }));
  // the live worker answers its share; what was queued for the stalled one waits
  await waitFor(async () => {
    const open = (await stats(started.admin)).get('sluice_downstream_cx_active{listener="app"}') ?? 0;
    return answered > 0 && open > 0 && answered + open === 20;
  }, 15_000, 'some connections answered, the rest waiting in the stalled worker\'s queue');
  const waiting = 20 - answered;
  t.equal(await fetchPost(`${started.admin}/debug/kill_worker`), 200, 'the stalled worker is killed');
  const statuses = await Promise.all(outcomes);
  t.same(statuses, statuses.map(() => 200), `all 20 answered, the ${waiting} that waited by another worker`, { failures });
  const after = await stats(started.admin);
  const delta = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  t.ok(delta('sluice_handoff_requeued_total') >= 1 && delta('sluice_handoff_requeued_total') <= waiting,
    `the queued ones were handed on (${delta('sluice_handoff_requeued_total')} of ${waiting} waiting; a worker had claimed the rest before it stalled)`);
  t.equal(delta('sluice_handoff_failed_total'), 0, 'none closed by the main thread');
  t.equal(delta('sluice_downstream_cx_total{listener="app"}'), 20, 'each served once');
  await waitFor(async () => (await stats(started.admin)).get('sluice_worker_restarts_total') === (before.get('sluice_worker_restarts_total') ?? 0) + 1, 10_000, 'restart counted');
  await waitFor(async () => (await stats(started.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'all closed');
  await fdsBack(t, 'after the stalled worker was killed');
});

t.test('10,000 connections, one request each, 50 at a time: descriptors come back', async (t) => {
  const port = started.ports.app;
  const N = 10_000;
  const before = await stats(started.admin);
  let next = 0;
  let ok = 0;
  const statuses = new Map<number, number>();
  const lane = async () => {
    while (next < N) {
      next++;
      const s = await oneShot(port);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
      if (s === 200) ok++;
    }
  };
  await Promise.all(Array.from({ length: 50 }, lane));
  t.equal(next, N, 'exactly N connections');
  t.equal(ok, N, `every connection answered 200 (${JSON.stringify([...statuses])})`, { failures });
  const after = await stats(started.admin);
  const key = 'sluice_downstream_cx_total{listener="app"}';
  t.equal((after.get(key) ?? 0) - (before.get(key) ?? 0), N, 'Sluice accepted exactly N connections');
  await waitFor(async () => (await stats(started.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'all closed');
  t.equal(after.get('sluice_handoff_failed_total'), before.get('sluice_handoff_failed_total'), 'no hand-off failed');
  await fdsBack(t, 'after 10,000 connections');
});

async function fetchPost(url: string): Promise<number> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `authorization: ${ADMIN_AUTH}`, url], 10_000);
  return Number(r.stdout);
}
