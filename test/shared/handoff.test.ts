/**
 * The shared-memory hand-off on its own: queues, claims, the count of open connections, and what
 * happens to the queue of a worker that dies. "Workers" here are inboxes in this thread; the
 * descriptors are real (one end of a socket pair each), so a leak or a double close shows.
 */
import { readlinkSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { FdOwnership } from '../../src/shared/fd-ownership';
import { formatDst, formatIPv6, HandoffInbox, HandoffSender, RING, type Claimed } from '../../src/shared/handoff';
import { SharedState } from '../../src/shared/shared-state';
import { loadNative } from '../../src/net/native';
import { openFds, waitFor } from '../helpers/harness';

const native = loadNative();
if (!native) throw new Error('these tests need the native addon (npm install builds it)');

const NO_ADDR = new Int32Array(4);

/** A connected TCP pair on loopback: `fd` is a duplicate of the server end's descriptor, which we then own. */
async function pair(): Promise<{ fd: number; client: net.Socket; close(): void }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [accepted] = await Promise.all([new Promise<net.Socket>((r) => server.once('connection', r)), new Promise((r) => client.once('connect', r))]);
  const fd = native!.dup((accepted as unknown as { _handle: { fd: number } })._handle.fd);
  accepted.destroy();
  server.close();
  client.on('error', () => {});
  return { fd, client, close: () => client.destroy() };
}

function isOpen(fd: number): boolean {
  try { readlinkSync(`/proc/self/fd/${fd}`); return true; } catch { return false; }
}

t.test('a connection goes to the row with the fewest open, is claimed once, and counted until finished', async (t) => {
  const shared = new SharedState();
  const sender = new HandoffSender(shared.memory, new FdOwnership(shared.memory));
  const a = HandoffInbox.claim(shared.memory, 101)!;
  const b = HandoffInbox.claim(shared.memory, 102)!;
  t.not(a.row, b.row);
  const got: Array<[string, Claimed]> = [];
  a.start((c) => got.push(['a', c]), (err) => t.fail(String(err)));
  b.start((c) => got.push(['b', c]), (err) => t.fail(String(err)));
  const pairs = await Promise.all(Array.from({ length: 4 }, pair));
  t.teardown(() => { for (const p of pairs) p.close(); });
  const addr = Int32Array.of(0x0100007f, 0, 0, 0); // 127.0.0.1 as the sockaddr's bytes
  for (const [i, p] of pairs.entries()) t.ok(sender.send(p.fd, i % 2, 40 + i, 0, 4, 8080 + i, addr, 0));
  t.equal(sender.outstanding, 4);
  t.equal(got.length, 0, 'nothing is visible before flush');
  sender.flush();
  await waitFor(() => got.length === 4, 5000, 'four claims');
  t.same(got.map(([w]) => w).sort(), ['a', 'a', 'b', 'b'], 'two each: the fewest open wins');
  t.same(got.map(([, c]) => c.slot).sort(), [40, 41, 42, 43]);
  t.same(got.find(([, c]) => c.slot === 41)![1].dst, { address: '127.0.0.1', port: 8081 });
  t.equal(sender.outstandingOf(0), 2);
  t.equal(sender.outstandingOf(1), 2);
  for (const [w, c] of got) {
    native!.close(c.fd);
    (w === 'a' ? a : b).finished(c);
  }
  t.equal(sender.outstanding, 0, 'finished connections are no longer open');
  t.equal(sender.outstandingOf(0), 0);
  const fds = new FdOwnership(shared.memory);
  for (const [, c] of got) t.equal(fds.peek(c.fd), 0, 'slot freed');
  a.stop();
  b.stop();
});

t.test('a dead worker: what it never claimed comes back exactly once, what it claimed is left alone', async (t) => {
  const shared = new SharedState();
  const fds = new FdOwnership(shared.memory);
  const sender = new HandoffSender(shared.memory, fds);
  const dead = HandoffInbox.claim(shared.memory, 201)!;
  const pairs = await Promise.all(Array.from({ length: 6 }, pair));
  t.teardown(() => { for (const p of pairs) p.close(); });
  const fdsBefore = openFds();
  for (const p of pairs) t.ok(sender.send(p.fd, 0, 7, 0, 0, 0, NO_ADDR, 0));
  sender.flush();
  // the worker claims two, then dies with four still queued in the same batch
  const claimed: Claimed[] = [];
  dead.start((c) => { claimed.push(c); if (claimed.length === 2) dead.stop(); }, (err) => t.fail(String(err)));
  t.equal(claimed.length, 2);
  const back = sender.release(dead.row);
  t.equal(back.length, 4, 'the four it never claimed');
  t.same(back.map((c) => c.fd).sort(), pairs.slice(2).map((p) => p.fd).sort(), 'those, and only those');
  t.ok(back.every((c) => c.attempt === 0 && c.slot === 7));
  for (const c of claimed) {
    t.ok(isOpen(c.fd), 'a claimed descriptor is not touched by the main thread');
    t.ok(fds.peek(c.fd) < 0, 'and stays the worker\'s');
  }
  for (const c of back) t.equal(fds.peek(c.fd), 0, 'a returned descriptor is main\'s again, slot free');
  t.equal(sender.outstanding, 0, 'the dead worker takes its count with it');
  t.same(sender.release(dead.row), [], 'released twice: nothing comes back twice');
  // a late claim by the dead worker (had it not been dead) would fail: the tokens were taken back
  t.equal(sender.owners().size, 0, 'the row is free for a new worker');
  // the returned ones go to a live worker, once
  const live = HandoffInbox.claim(shared.memory, 202)!;
  t.equal(live.row, dead.row, 'a new worker gets the freed row');
  const served: Claimed[] = [];
  live.start((c) => served.push(c), (err) => t.fail(String(err)));
  for (const c of back) t.ok(sender.send(c.fd, c.listener, c.slot, 1, c.family, c.port, c.addr, 0));
  sender.flush();
  await waitFor(() => served.length === back.length, 5000, 'the returned connections claimed');
  t.same(served.map((c) => c.fd).sort(), back.map((c) => c.fd).sort(), 'each returned connection is claimed by the new worker');
  for (const c of [...claimed, ...served]) { native!.close(c.fd); live.finished(c); }
  t.equal(openFds(), fdsBefore - 6, 'every descriptor closed, none twice, none leaked');
  live.stop();
});

t.test('no live row, all full, or all at their limit: send says no and the caller keeps the descriptor', async (t) => {
  const shared = new SharedState();
  const sender = new HandoffSender(shared.memory, new FdOwnership(shared.memory), 3);
  t.notOk(sender.send(1000, 0, 0, 0, 0, 0, NO_ADDR, 0), 'no worker at all');
  HandoffInbox.claim(shared.memory, 301); // never consumes
  sender.refresh();
  for (let i = 0; i < 3; i++) t.ok(sender.send(1000 + i, 0, 0, 0, 0, 0, NO_ADDR, 0));
  t.notOk(sender.send(1003, 0, 0, 0, 0, 0, NO_ADDR, 0), 'at maxPerRow');
  const other = new SharedState();
  const unbounded = new HandoffSender(other.memory, new FdOwnership(other.memory));
  HandoffInbox.claim(other.memory, 302);
  HandoffInbox.claim(other.memory, 303);
  unbounded.refresh();
  let n = 0;
  while (unbounded.send(2000 + n, 0, 0, 0, 0, 0, NO_ADDR, 0)) n++;
  t.equal(n, 2 * RING, 'two workers that take nothing: both rings full');
});

t.test('addresses as inet_ntop writes them', async (t) => {
  const v6 = (s: string) => {
    const b = new Uint8Array(16);
    const groups = s.split(':');
    groups.forEach((g, i) => { const v = parseInt(g, 16); b[2 * i] = v >> 8; b[2 * i + 1] = v & 255; });
    return b;
  };
  t.equal(formatIPv6(v6('2001:db8:0:0:0:0:0:1')), '2001:db8::1');
  t.equal(formatIPv6(v6('0:0:0:0:0:0:0:1')), '::1');
  t.equal(formatIPv6(v6('0:0:0:0:0:0:0:0')), '::');
  t.equal(formatIPv6(v6('2001:db8:0:1:0:0:0:1')), '2001:db8:0:1::1', 'the longest run of zeros');
  t.equal(formatIPv6(v6('2001:0:0:1:0:0:1:1')), '2001::1:0:0:1:1', 'the first of two as long');
  t.equal(formatIPv6(v6('2001:db8:1:1:1:1:0:1')), '2001:db8:1:1:1:1:0:1', 'a single zero group stays');
  t.equal(formatIPv6(v6('0:0:0:0:0:ffff:a00:1')), '::ffff:10.0.0.1', 'IPv4-mapped');
  const w = new Int32Array(new Uint8Array([10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).buffer);
  t.same(formatDst(4, w, 80), { address: '10.1.2.3', port: 80 });
  t.equal(formatDst(0, w, 80), null);
  // bytes of 128 and over (the word is negative as an Int32) come out as they went in
  const high = new Int32Array(new Uint8Array([255, 128, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).buffer);
  t.same(formatDst(4, high, 65535), { address: '255.128.0.200', port: 65535 });
  const top = new Int32Array(new Uint8Array([192, 168, 1, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).buffer);
  t.same(formatDst(4, top, 1), { address: '192.168.1.255', port: 1 });
});
