/**
 * Scheduling policies of Sluice's threads, read from /proc as an operator would:
 * - by default (workers.mainThreadScheduling: batch) the main thread, which accepts and hands
 *   connections on, runs under SCHED_BATCH, and every worker under the default policy, a worker
 *   started after one died too;
 * - a backlog of a batch (64) or more in the accept queue puts the main thread back into the
 *   default policy at once, and a second without one makes it batch again;
 * - `normal` leaves the main thread in the default policy;
 * - a policy set by whoever started Sluice (chrt) is left as it is, on every thread.
 *
 * Sluice runs as a child process so its threads can be read in /proc.
 */
import fs from 'node:fs';
import net from 'node:net';
import t, { type Test } from 'tap';
import { ADMIN_AUTH, httpUpstream, run, spawnSluice, waitFor, withTestDefaults, writeConfig, type Upstream } from '../helpers/harness';
import { sluiceStarted, type StartedSluice } from '../helpers/netns';

const SCHED_OTHER = 0;
const SCHED_BATCH = 3;
const SCHED_IDLE = 5;

interface ThreadInfo { tid: number; name: string; policy: number }

/** Every thread of pid: its name and scheduling policy (field 41 of /proc/<pid>/task/<tid>/stat). */
function threads(pid: number): ThreadInfo[] {
  const out: ThreadInfo[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try { stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1'); } catch { continue; } // gone meanwhile
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    // fields after the name start at field 3
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.push({ tid: Number(tid), name, policy: Number(rest[41 - 3]) });
  }
  return out;
}

const workersOf = (pid: number) => threads(pid).filter((x) => x.name === 'sluice-worker');
const mainOf = (pid: number) => threads(pid).find((x) => x.tid === pid)!;

let up: Upstream;
t.before(async () => {
  up = await httpUpstream((_req, res) => { res.setHeader('content-length', 2); res.end('ok'); });
});
t.teardown(() => up?.close());

async function status(port: number): Promise<number> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/`], 10_000);
  return Number(r.stdout);
}

async function post(url: string): Promise<number> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `authorization: ${ADMIN_AUTH}`, url], 10_000);
  return Number(r.stdout);
}

/** A Sluice child with two workers, up and serving; stopped at the end of the test. */
async function start(t: Test, workers: Record<string, unknown>, wrap?: string[]): Promise<{ pid: number; started: StartedSluice }> {
  const file = writeConfig(withTestDefaults({
    workers: { threads: 2, ...workers },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  }));
  const child = spawnSluice(['start', '--config', file], { wrap });
  t.teardown(async () => { if (child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited; } });
  const started = await sluiceStarted(child);
  // both workers have started (they report in before "sluice started"), so both are named by now
  t.equal(await status(started.ports.app), 200, 'a request through the listener');
  return { pid: child.proc.pid!, started };
}

t.test('default: the main thread is batch, every worker is normal, a replacement worker too', async (t) => {
  const { pid, started } = await start(t, {});
  t.equal(mainOf(pid).policy, SCHED_BATCH, 'the main thread runs under SCHED_BATCH');
  const before = workersOf(pid);
  t.equal(before.length, 2, 'two threads named sluice-worker');
  t.same(before.map((w) => w.policy), [SCHED_OTHER, SCHED_OTHER], 'both workers in the default policy');

  t.equal(await post(`${started.admin}/debug/kill_worker`), 200, 'a worker is killed');
  const old = new Set(before.map((w) => w.tid));
  const fresh = await waitFor(() => {
    const now = workersOf(pid);
    const added = now.filter((w) => !old.has(w.tid));
    return now.length === 2 && added.length === 1 ? added[0] : null;
  }, 15_000, 'a new worker thread in place of the killed one');
  t.equal(fresh.policy, SCHED_OTHER, 'the replacement worker, started by the batch main thread, is in the default policy');
  t.equal(mainOf(pid).policy, SCHED_BATCH, 'the main thread is still batch');
  const statuses = await Promise.all(Array.from({ length: 6 }, () => status(started.ports.app)));
  t.same(statuses, statuses.map(() => 200), 'requests after the replacement are served');
});

/** A raw connection that sends one request and resolves with the status line's code (0: closed first). */
function oneRequest(port: number): { connected: Promise<void>; status: Promise<number> } {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  const connected = new Promise<void>((resolve) => s.once('connect', () => resolve()));
  const status = new Promise<number>((resolve) => {
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { buf += d; });
    s.on('close', () => resolve(/^HTTP\/1\.1 (\d{3})/.exec(buf) ? Number(buf.slice(9, 12)) : 0));
    s.setTimeout(20_000, () => s.destroy());
  });
  s.write('GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
  return { connected, status };
}

t.test('a backlog in the accept queue puts the main thread back into the default policy until it is gone', async (t) => {
  const { pid, started } = await start(t, {});
  t.equal(mainOf(pid).policy, SCHED_BATCH, 'batch to begin with');
  // every thread stopped: the kernel completes the handshakes and queues them on the listener
  process.kill(pid, 'SIGSTOP');
  let resumed = false;
  t.teardown(() => { if (!resumed) process.kill(pid, 'SIGCONT'); });
  const conns = Array.from({ length: 200 }, () => oneRequest(started.ports.app));
  await Promise.all(conns.map((c) => c.connected));
  t.equal(mainOf(pid).policy, SCHED_BATCH, 'still batch while stopped, 200 connections queued');
  process.kill(pid, 'SIGCONT');
  resumed = true;
  // the first wake-up finds the backlog: the main thread is a normal thread from then on
  await waitFor(() => mainOf(pid).policy === SCHED_OTHER, 5_000, 'the main thread in the default policy');
  t.pass('the main thread left SCHED_BATCH when it found 200 connections waiting');
  const statuses = await Promise.all(conns.map((c) => c.status));
  t.same(statuses, statuses.map(() => 200), 'all 200 answered');
  t.equal(mainOf(pid).policy, SCHED_OTHER, 'and it stays a normal thread with no new connection to look at');
  t.same(workersOf(pid).map((w) => w.policy), [SCHED_OTHER, SCHED_OTHER], 'the workers were never batch');
  // a second with no backlog: the next wake-up makes it batch again
  await new Promise((r) => setTimeout(r, 1100));
  t.equal(await status(started.ports.app), 200, 'one more request, a second later');
  t.equal(mainOf(pid).policy, SCHED_BATCH, 'batch again once the backlog is a second old');
});

t.test('normal: the main thread keeps the default policy', async (t) => {
  const { pid } = await start(t, { mainThreadScheduling: 'normal' });
  t.equal(mainOf(pid).policy, SCHED_OTHER, 'the main thread in the default policy');
  t.same(workersOf(pid).map((w) => w.policy), [SCHED_OTHER, SCHED_OTHER], 'so are the workers');
});

t.test('a policy set by whoever started Sluice is left on every thread', async (t) => {
  for (const [flag, policy, label] of [['--batch', SCHED_BATCH, 'SCHED_BATCH'], ['--idle', SCHED_IDLE, 'SCHED_IDLE']] as const) {
    const { pid } = await start(t, {}, ['chrt', flag, '0']);
    t.equal(mainOf(pid).policy, policy, `started under ${label}: the main thread keeps it`);
    t.same(workersOf(pid).map((w) => w.policy), [policy, policy], `and the workers keep it (not put back to the default)`);
  }
});

t.test('a bad value is refused at start with the field named', async (t) => {
  const file = writeConfig(withTestDefaults({ workers: { threads: 1, mainThreadScheduling: 'fifo' } }));
  const child = spawnSluice(['start', '--config', file]);
  t.teardown(async () => { if (child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited; } });
  const code = await child.exited;
  t.not(code, 0, 'sluice does not start');
  t.match(child.output(), /\/workers\/mainThreadScheduling/, 'the error names the field');
});
