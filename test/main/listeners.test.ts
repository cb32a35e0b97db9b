/**
 * The main thread's listeners with real sockets: native accept, the hand-off queues, a worker that
 * dies with connections queued for it, the descriptor budget, and the no-addon fallback. Workers
 * are hand-off inboxes in this thread, so a test can decide exactly when one stops or dies; the
 * descriptors are real, so a leak or a double close shows in /proc/self/fd.
 */
import net from 'node:net';
import t, { type Test } from 'tap';
import { buildConfig, type SluiceConfig } from '../../src/config/config';
import { Listeners, type LocalServe } from '../../src/main/listeners';
import { loadNative } from '../../src/net/native';
import { HandoffInbox } from '../../src/shared/handoff';
import { SharedState } from '../../src/shared/shared-state';
import { openFds, waitFor } from '../helpers/harness';

const native = loadNative();
if (!native) throw new Error('these tests need the native addon (npm install builds it)');

const OK = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok';

function config(): SluiceConfig {
  return buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:9'] }],
  }, 'test config');
}

interface Counted { failed: number; overflow: number; requeued: number }

async function listenersFor(t: Test, opts: { native?: boolean; localServe?: LocalServe } = {}) {
  const shared = new SharedState();
  const counted: Counted = { failed: 0, overflow: 0, requeued: 0 };
  const listeners = new Listeners(shared, opts.native === false ? null : native, opts.localServe ?? ((s) => s.destroy()), {
    handoffFailed: () => counted.failed++,
    overflow: () => counted.overflow++,
    requeued: () => counted.requeued++,
  }, { slotOf: () => 5 });
  await listeners.apply(config());
  t.teardown(() => listeners.closeAll());
  return { shared, listeners, counted, port: listeners.address('app')!.port };
}

/** A worker in this thread: answers each connection once and closes it. */
function answeringWorker(shared: SharedState, threadId: number): { inbox: HandoffInbox; served: number[] } {
  const inbox = HandoffInbox.claim(shared.memory, threadId)!;
  const served: number[] = [];
  inbox.start((c) => {
    served.push(c.fd);
    const s = new net.Socket({ fd: c.fd, readable: true, writable: true });
    s.once('close', () => inbox.finished(c));
    s.on('error', () => s.destroy());
    s.once('data', () => s.end(OK));
  }, (err) => { throw err; });
  return { inbox, served };
}

/** One client: sends a request, and reports what became of it. */
function client(port: number): { outcome: Promise<string>; socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1');
  const outcome = new Promise<string>((resolve) => {
    let got = '';
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n'));
    socket.on('data', (d) => { got += d; });
    socket.on('error', () => {});
    socket.on('close', () => resolve(got.endsWith('ok') ? 'ok' : got === '' ? 'closed' : `partial: ${got}`));
  });
  return { outcome, socket };
}

/** Loopback pairs that must keep working: a descriptor closed twice would break one of them. */
async function bystanders(n: number): Promise<{ check(): Promise<boolean>; close(): void }> {
  const server = net.createServer((s) => s.on('data', (d) => s.write(d)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const socks = await Promise.all(Array.from({ length: n }, () => new Promise<net.Socket>((r) => { const s = net.connect(port, '127.0.0.1', () => r(s)); })));
  return {
    check: async () => (await Promise.all(socks.map((s) => new Promise<boolean>((r) => {
      s.once('data', (d) => r(d.toString() === 'ping'));
      s.once('error', () => r(false));
      s.write('ping');
    })))).every(Boolean),
    close: () => { for (const s of socks) s.destroy(); server.close(); },
  };
}

t.test('a worker dies with a batch queued: each connection is served by another worker, none leaks', async (t) => {
  const { shared, listeners, counted, port } = await listenersFor(t);
  const before = openFds();
  const dead = HandoffInbox.claim(shared.memory, 9001)!; // takes nothing: as good as dead
  const clients = Array.from({ length: 8 }, () => client(port));
  await waitFor(() => listeners.active === 8, 5000, 'eight connections queued');
  t.same(listeners.openByListener(), [['app', 8]], 'the open-connection gauge counts the queued ones');
  const live = answeringWorker(shared, 9002);
  listeners.workersChanged(new Set([9002])); // 9001 is gone
  const outcomes = await Promise.all(clients.map((c) => c.outcome));
  t.same(outcomes, clients.map(() => 'ok'), 'every one answered, once');
  t.equal(live.served.length, 8, 'by the live worker');
  t.equal(counted.requeued, 8);
  t.equal(counted.failed, 0);
  await listeners.idle();
  t.equal(listeners.active, 0);
  t.same(listeners.openByListener(), [['app', 0]]);
  await waitFor(() => openFds() <= before, 5000, `descriptors back to ${before}`);
  t.pass('no descriptor left open');
  t.not(dead.row, live.inbox.row);
  live.inbox.stop();
});

t.test('the second worker dies too before taking them: the main thread closes each exactly once', async (t) => {
  const { shared, listeners, counted, port } = await listenersFor(t);
  const before = openFds();
  HandoffInbox.claim(shared.memory, 9101);
  const clients = Array.from({ length: 6 }, () => client(port));
  await waitFor(() => listeners.active === 6, 5000, 'six connections queued');
  HandoffInbox.claim(shared.memory, 9102); // takes nothing either
  listeners.workersChanged(new Set([9102]));
  t.equal(counted.requeued, 6, 'handed to the other worker once');
  t.equal(listeners.active, 6);
  listeners.workersChanged(new Set());
  const outcomes = await Promise.all(clients.map((c) => c.outcome));
  t.same(outcomes, clients.map(() => 'closed'), 'then closed, without a byte');
  t.equal(counted.failed, 6, 'each counted as a failed hand-off');
  t.equal(listeners.active, 0);
  await waitFor(() => openFds() <= before, 5000, `descriptors back to ${before}`);
  // numbers freed by those closes are reused now; nothing may close them again
  const others = await bystanders(6);
  t.teardown(() => others.close());
  listeners.workersChanged(new Set());
  listeners.abandon();
  t.ok(await others.check(), 'connections that reused the numbers still work: nothing was closed twice');
});

t.test('past the descriptor budget a connection is closed at once and counted', async (t) => {
  const { shared, listeners, counted, port } = await listenersFor(t);
  listeners.budget = 3;
  const held: number[] = [];
  const inbox = HandoffInbox.claim(shared.memory, 9201)!;
  inbox.start((c) => held.push(c.fd), (err) => { throw err; });
  const first = Array.from({ length: 3 }, () => client(port));
  await waitFor(() => held.length === 3, 5000, 'three connections held by the worker');
  const more = Array.from({ length: 5 }, () => client(port));
  t.same(await Promise.all(more.map((c) => c.outcome)), more.map(() => 'closed'), 'the rest closed at once');
  t.equal(counted.overflow, 5, 'each refusal counted');
  t.equal(listeners.active, 3);
  // the worker closes what it held; room again
  for (const fd of held) native!.close(fd);
  for (const c of first) c.socket.destroy();
  inbox.stop();
  t.ok(listeners.active === 3, 'a connection counts until its worker says it finished');
});

t.test('without the addon: Node servers, served on the main thread, same budget and count', async (t) => {
  const served: string[] = [];
  const { listeners, counted, port } = await listenersFor(t, {
    native: false,
    localServe: (socket, listener, dst) => {
      served.push(`${listener} ${dst}`);
      socket.resume();
      socket.once('data', () => socket.end(OK));
    },
  });
  const a = client(port);
  t.equal(await a.outcome, 'ok');
  t.same(served, ['app null'], 'served here, with no original destination (no capture without the addon)');
  await listeners.idle();
  listeners.budget = 0;
  const b = client(port);
  t.equal(await b.outcome, 'closed', 'past the budget: closed at once');
  t.equal(counted.overflow, 1);
  t.same(listeners.openByListener(), [['app', 0]]);
});

t.test('a listener address in use is named', async (t) => {
  const { port } = await listenersFor(t);
  const shared = new SharedState();
  const other = new Listeners(shared, native, (s) => s.destroy(), { handoffFailed() {}, overflow() {} }, { slotOf: () => 0 });
  const cfg = config();
  await t.rejects(other.apply({ ...cfg, listeners: [{ ...cfg.listeners[0], address: `127.0.0.1:${port}` }] }),
    { code: 'ERR_LISTEN', message: `listener "app" cannot listen on 127.0.0.1:${port}: EADDRINUSE` });
});

t.test('EMFILE in the acceptor: refusals counted as overflow; a stopped acceptor is resumed', async (t) => {
  let onBatch: ((n: number, refused: number, status: number) => void) | null = null;
  let resumed = 0;
  // the addon's own functions, two of them watched
  const own = Object.fromEntries(Object.getOwnPropertyNames(native).map((k) => [k, (native as unknown as Record<string, unknown>)[k]]));
  const wrapped = Object.assign(own as unknown as NonNullable<typeof native>, {
    acceptStart: (fd: number, batch: Int32Array, capture: boolean, cb: (n: number, refused: number, status: number) => void) => {
      onBatch = cb;
      return native!.acceptStart(fd, batch, capture, cb);
    },
    acceptResume: (a: Parameters<NonNullable<typeof native>['acceptResume']>[0]) => { resumed++; return native!.acceptResume(a); },
  });
  const shared = new SharedState();
  const counted = { overflow: 0, failed: 0 };
  const listeners = new Listeners(shared, wrapped, (s) => s.destroy(), {
    handoffFailed: () => counted.failed++,
    overflow: () => counted.overflow++,
  }, { slotOf: () => 0 });
  await listeners.apply(config());
  t.teardown(() => listeners.closeAll());
  t.ok(onBatch, 'the acceptor reports to the listeners');
  onBatch!(0, 2, 0); // two connections closed on the spare descriptor
  t.equal(counted.overflow, 2, 'counted in sluice_downstream_cx_overflow_total');
  onBatch!(0, 0, -24); // not even the spare: the acceptor stopped
  await waitFor(() => resumed === 1, 5000, 'accepting resumed');
  t.equal(listeners.active, 0);
});

t.test('a listener renamed on the same address opens at once: the old socket is closed when it is dropped', async (t) => {
  const { listeners, port } = await listenersFor(t);
  const cfg = config();
  await listeners.apply({ ...cfg, listeners: [{ ...cfg.listeners[0], name: 'renamed', address: `127.0.0.1:${port}` }] });
  t.equal(listeners.address('renamed')?.port, port);
  t.equal(listeners.address('app'), null);
});
