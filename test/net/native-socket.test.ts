/**
 * The native socket (src/net/native-socket.ts) on real connections: a descriptor accepted by the
 * addon, served with no Node socket, and a Node client on the other end. What the client sees is
 * what a net.Socket would have given it: every byte in order under backpressure, 'drain' after a
 * false write, the FIN after what was written, a reset reported as an error, the descriptor
 * closed exactly once; and promote() hands the connection to a Node socket with nothing lost.
 * A worker thread that ends with native sockets open closes them and does not take the process
 * down (a handle left in a worker's loop aborts Node).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import t, { type Test } from 'tap';
import { ACCEPT_ENTRY_WORDS, loadNative, type Acceptor } from '../../src/net/native';
import { NativeSocket } from '../../src/net/native-socket';
import { setReadSink } from '../../src/net/direct-read';
import { waitFor } from '../helpers/harness';

const native = loadNative();
const usable = native !== null && typeof native.connOpen === 'function';

/** Accepted descriptors of one listening socket of the addon, and its port. */
async function acceptor(t: Test): Promise<{ port: number; next(): Promise<number> }> {
  const lfd = native!.listen('127.0.0.1', 0, 64);
  const port = native!.localAddress(lfd).port;
  const batch = new Int32Array(ACCEPT_ENTRY_WORDS * 16);
  const fds: number[] = [];
  const waiting: ((fd: number) => void)[] = [];
  const a: Acceptor = native!.acceptStart(lfd, batch, false, (n) => {
    for (let i = 0; i < n; i++) {
      const fd = batch[i * ACCEPT_ENTRY_WORDS];
      const w = waiting.shift();
      if (w) w(fd); else fds.push(fd);
    }
  });
  t.teardown(() => native!.acceptStop(a));
  return {
    port,
    next: () => new Promise((resolve) => { const fd = fds.shift(); if (fd !== undefined) resolve(fd); else waiting.push(resolve); }),
  };
}

/** A native socket and the Node client connected to it. */
async function pair(t: Test): Promise<{ ns: NativeSocket; fd: number; peer: net.Socket; reads: Buffer[] }> {
  const acc = await acceptor(t);
  // half-open allowed: the peer keeps writing after the native socket's end
  const peer = net.connect({ port: acc.port, host: '127.0.0.1', allowHalfOpen: true });
  peer.on('error', () => {});
  const fd = await acc.next();
  await once(peer, 'connect');
  const ns = NativeSocket.open(fd)!;
  const reads: Buffer[] = [];
  ns.on('error', () => {});
  setReadSink(ns as unknown as net.Socket, { onRead(b: Buffer): boolean { reads.push(Buffer.from(b)); return true; } });
  t.teardown(() => { ns.destroy(); peer.destroy(); });
  return { ns, fd, peer, reads };
}

function fdOpen(fd: number): boolean {
  try { fs.fstatSync(fd); return true; } catch { return false; }
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Everything the peer reads until its end. */
function readAll(peer: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  peer.on('data', (d: Buffer) => parts.push(d));
  return new Promise((resolve) => peer.once('end', () => resolve(Buffer.concat(parts))));
}

t.test('the addon serves native sockets', { skip: !usable && 'the addon is an older build' }, async (t) => {
  t.ok(usable);
});

t.test('reads reach the sink, writes reach the peer in order, end() is a FIN after them, then close', { skip: !usable }, async (t) => {
  const { ns, fd, peer, reads } = await pair(t);
  peer.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n');
  await waitFor(() => reads.length > 0, 5000, 'the request read');
  t.equal(Buffer.concat(reads).toString('latin1'), 'GET / HTTP/1.1\r\nhost: a\r\n\r\n', 'the bytes as sent');
  t.equal(ns.remoteAddress, '127.0.0.1');
  t.equal(ns.remotePort, peer.localPort, 'the peer as the client knows itself');
  const got = readAll(peer);
  t.equal(ns.write('HTTP/1.1 200 OK\r\n', 'latin1'), true, 'a small write is taken at once');
  ns.write(Buffer.from('content-length: 2\r\n\r\nok'));
  let finished = false;
  ns.end(() => { finished = true; });
  t.equal((await got).toString('latin1'), 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', 'everything, then the end');
  t.ok(finished, "'finish' came");
  t.ok(fdOpen(fd), 'half-closed: the descriptor stays open while the peer may still write');
  const closed = once(ns, 'close');
  peer.end();
  const [hadError] = await closed;
  t.equal(hadError, false, 'both sides over: closed, without an error');
  t.notOk(fdOpen(fd), 'the descriptor is closed');
});

/**
 * A client whose bytes (and, with `end`, its FIN) are in this side's receive queue before a
 * native socket is opened: on loopback, once the client's write is done they are queued here.
 */
async function sentBeforeOpen(t: Test, bytes: string, end: boolean): Promise<{ ns: NativeSocket; peer: net.Socket; reads: Buffer[]; ended: () => boolean }> {
  const acc = await acceptor(t);
  const peer = net.connect({ port: acc.port, host: '127.0.0.1', allowHalfOpen: true });
  peer.on('error', () => {});
  const fd = await acc.next();
  await once(peer, 'connect');
  await new Promise<void>((resolve) => (end ? peer.end(bytes, () => resolve()) : peer.write(bytes, () => resolve())));
  const ns = NativeSocket.open(fd)!;
  t.teardown(() => { ns.destroy(); peer.destroy(); });
  let ended = false;
  ns.on('end', () => { ended = true; });
  return { ns, peer, reads: [], ended: () => ended };
}

function sinkInto(ns: NativeSocket, reads: Buffer[]): void {
  setReadSink(ns as unknown as net.Socket, { onRead(b: Buffer): boolean { reads.push(Buffer.from(b)); return true; } });
}

t.test('readNow(): what arrived before the reader was in place is read at once, in the same call; nothing there: it waits for the set', { skip: !usable }, async (t) => {
  const { ns, peer, reads, ended } = await sentBeforeOpen(t, 'GET / HTTP/1.1\r\n\r\n', false);
  ns.pause();
  ns.readNow();
  t.equal(reads.length, 0, 'paused: nothing read (and no reader yet either)');
  sinkInto(ns, reads);
  ns.readNow();
  t.equal(reads.length, 0, 'still paused: nothing read');
  ns.resume();
  ns.readNow();
  t.equal(Buffer.concat(reads).toString('latin1'), 'GET / HTTP/1.1\r\n\r\n', 'the request, read within readNow()');
  ns.readNow();
  t.equal(reads.length, 1, 'nothing more there: nothing read, and the socket lives');
  t.equal(ns.destroyed, false);
  peer.write('more');
  await waitFor(() => reads.length === 2, 5000, 'the next bytes, from the set');
  t.equal(reads[1].toString('latin1'), 'more');
  await new Promise<void>((resolve) => peer.end(() => resolve()));
  await waitFor(ended, 5000, 'the end, from the set');
  t.equal(ns.destroyed, false, 'half-closed by the peer, still open for writing');
});

t.test('readNow() on a connection whose client sent everything and its end before: the bytes, then the end', { skip: !usable }, async (t) => {
  const { ns, peer, reads, ended } = await sentBeforeOpen(t, 'GET / HTTP/1.1\r\n\r\n', true);
  sinkInto(ns, reads);
  ns.readNow();
  t.equal(Buffer.concat(reads).toString('latin1'), 'GET / HTTP/1.1\r\n\r\n', 'the request at once');
  t.equal(ended(), false, 'one read per call: the end comes from the set');
  await waitFor(ended, 5000, 'the end');
  const got = readAll(peer);
  ns.write('HTTP/1.1 204 No Content\r\n\r\n');
  ns.end();
  t.equal((await got).toString('latin1'), 'HTTP/1.1 204 No Content\r\n\r\n', 'the answer still reaches the half-closed client');
});

t.test('backpressure: false past the high-water mark, drain after, 8 MiB whole and in order', { skip: !usable }, async (t) => {
  const { ns, peer } = await pair(t);
  peer.pause();
  const body = randomBytes(8 << 20);
  let ok = true;
  let off = 0;
  while (ok && off < body.length) { ok = ns.write(body.subarray(off, off + 65536)); off += 65536; }
  t.equal(ok, false, 'write() says false once the kernel stops taking');
  t.ok(ns.writableLength > 0, 'bytes are queued');
  const got = readAll(peer);
  peer.resume();
  const pump = async (): Promise<void> => {
    while (off < body.length) {
      if (!ns.write(body.subarray(off, off + 65536))) { off += 65536; await once(ns, 'drain'); } else off += 65536;
    }
    ns.end();
  };
  await once(ns, 'drain');
  await pump();
  const all = await got;
  t.equal(all.length, body.length, 'every byte');
  t.equal(sha(all), sha(body), 'in order');
});

t.test('cork gathers writes into one send; uncork sends them', { skip: !usable }, async (t) => {
  const { ns, peer } = await pair(t);
  const got = readAll(peer);
  ns.cork();
  ns.write('a', 'latin1');
  ns.write(Buffer.from('b'));
  t.equal(ns.writableLength, 2, 'held while corked');
  ns.uncork();
  t.equal(ns.writableLength, 0, 'sent at uncork');
  ns.end();
  t.equal((await got).toString(), 'ab');
});

t.test('a reset peer: the error comes as "error" and close(true); writes after it fail quietly', { skip: !usable }, async (t) => {
  const { ns, fd, peer } = await pair(t);
  const errors: NodeJS.ErrnoException[] = [];
  ns.on('error', (e: NodeJS.ErrnoException) => errors.push(e));
  const closed = once(ns, 'close');
  peer.resetAndDestroy();
  // the reset shows on the next read, or on a write
  const [hadError] = await closed.then((v) => v, () => [true]);
  t.equal(hadError, true, 'closed with an error');
  t.ok(errors.length === 1 && /ECONNRESET|EPIPE/.test(errors[0].code ?? ''), `one error, a reset (${errors.map((e) => e.code)})`);
  t.notOk(fdOpen(fd), 'the descriptor is closed');
  let cbErr: Error | null | undefined;
  t.equal(ns.write('late', 'latin1', (e) => { cbErr = e; }), false, 'a write after the close is refused');
  await new Promise((r) => setImmediate(r));
  t.match(cbErr, { code: 'ERR_STREAM_DESTROYED' }, 'and its callback says why');
});

t.test('pause() stops reads until resume(); a sink returning false pauses', { skip: !usable }, async (t) => {
  const { ns, peer, reads } = await pair(t);
  ns.pause();
  peer.write('one');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(reads.length, 0, 'nothing read while paused');
  ns.resume();
  await waitFor(() => reads.length === 1, 5000, 'read after resume');
  setReadSink(ns as unknown as net.Socket, { onRead(b: Buffer): boolean { reads.push(Buffer.from(b)); return false; } });
  peer.write('two');
  await waitFor(() => reads.length === 2, 5000, 'read');
  t.equal(ns.isPaused(), true, 'a sink that says false pauses reading');
});

t.test('promote(): a Node socket over the same connection, with its listeners, fields, queued bytes and end', { skip: !usable }, async (t) => {
  const { ns, fd, peer, reads } = await pair(t);
  const mark = Symbol('mark');
  (ns as unknown as Record<symbol, unknown>)[mark] = 'carried';
  let closes = 0;
  ns.on('close', () => { closes++; });
  peer.pause();
  const body = randomBytes(4 << 20);
  ns.write(body);
  t.ok(ns.writableLength > 0, 'part of the body is still queued');
  const s = ns.promote();
  t.equal((s as unknown as Record<symbol, unknown>)[mark], 'carried', 'symbol-keyed fields carried');
  t.equal(ns.destroyed, true, 'the native socket is done');
  s.end();
  const got = readAll(peer);
  peer.resume();
  const all = await got;
  t.equal(sha(all), sha(body), 'every queued byte arrived, then the end');
  peer.write('after');
  await waitFor(() => reads.length > 0, 5000, 'a read after promote()');
  t.equal(Buffer.concat(reads).toString(), 'after', 'the Node socket reads what comes next, into the same sink');
  peer.end();
  await waitFor(() => closes === 1, 5000, "the 'close' listener carried over runs");
  await new Promise((r) => setTimeout(r, 50));
  t.equal(closes, 1, 'once: the native socket emits nothing after promote()');
  t.notOk(fdOpen(fd), 'the descriptor is closed, by the Node socket');
});

t.test('a destroy() that still reaches a promoted native socket destroys the Node socket it became', { skip: !usable }, async (t) => {
  const { ns, peer } = await pair(t);
  const s = ns.promote();
  const peerEnded = once(peer, 'end');
  peer.resume();
  ns.destroy();
  t.equal(s.destroyed, true, 'the Node socket is destroyed');
  await peerEnded;
  t.pass('the client sees its connection end');
});

t.test('a worker thread that ends with native sockets open closes them; the process lives on', { skip: !usable }, async (t) => {
  const acc = await acceptor(t);
  const peers = [0, 1, 2].map(() => { const p = net.connect(acc.port, '127.0.0.1'); p.on('error', () => {}); return p; });
  const fds = await Promise.all(peers.map(() => acc.next()));
  const src = path.join(__dirname, '..', '..', 'src', 'net', 'native-socket.js');
  const w = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads');
    const { NativeSocket } = require(${JSON.stringify(src)});
    const sockets = workerData.map((fd) => NativeSocket.open(fd));
    for (const s of sockets) { s.on('error', () => {}); s.write('hello', 'latin1'); }
    parentPort.postMessage('open');
  `, { eval: true, workerData: fds });
  await once(w, 'message');
  const ended = peers.map((p) => new Promise<string>((resolve) => {
    let data = '';
    p.on('data', (d: Buffer) => { data += d; });
    p.once('close', () => resolve(data));
  }));
  await w.terminate();
  t.same(await Promise.all(ended), ['hello', 'hello', 'hello'], 'each peer got its bytes, then its connection closed');
  t.same(fds.map(fdOpen), [false, false, false], 'no descriptor left open');
});

/** Whether some epoll set of this process still lists descriptor `fd` (from /proc/self/fdinfo). */
function inSomeEpollSet(fd: number): boolean {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    let link: string;
    try { link = fs.readlinkSync(`/proc/self/fd/${name}`); } catch { continue; }
    if (link !== 'anon_inode:[eventpoll]') continue;
    let info: string;
    try { info = fs.readFileSync(`/proc/self/fdinfo/${name}`, 'latin1'); } catch { continue; }
    if (new RegExp(`^tfd:\\s+${fd}\\s`, 'm').test(info)) return true;
  }
  return false;
}

t.test('closed while a child holds a copy of its descriptor: the set still reports it, to nobody; the next connections are served', { skip: !usable }, async (t) => {
  const { ns, fd, peer, reads: late } = await pair(t);
  // a child process inherits a copy (as one does between fork and exec): the connection's file outlives its close here
  const child = spawn('sleep', ['30'], { stdio: ['ignore', 'ignore', 'ignore', fd] });
  t.teardown(() => { if (child.exitCode === null) child.kill(); });
  await once(child, 'spawn');
  const closed = once(ns, 'close');
  ns.destroy();
  await closed;
  // close(2) took it out of nothing: the copy keeps it in the set, as it would any set's entry
  t.equal(fdOpen(fd), false, 'closed here');
  t.ok(inSomeEpollSet(fd), 'and still in the set: no epoll_ctl took it out, and the copy keeps it');
  // bytes for the closed connection: the set reports it readable at every turn until the copy goes
  peer.write('for nobody');
  for (let i = 0; i < 3; i++) {
    const next = await pair(t);
    next.peer.write(`request ${i}`);
    await waitFor(() => Buffer.concat(next.reads).toString('latin1') === `request ${i}`, 5000, `connection ${i} after it read`);
    const got = readAll(next.peer);
    next.ns.write(`answer ${i}`);
    next.ns.end();
    t.equal((await got).toString('latin1'), `answer ${i}`, `connection ${i} answered`);
  }
  t.same(late, [], 'nothing reached the closed connection');
  child.kill();
  await once(child, 'exit');
  await waitFor(() => !inSomeEpollSet(fd) || fdOpen(fd), 5000, 'the copy closed: the entry is gone');
});
