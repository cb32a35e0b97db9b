/**
 * The addon's acceptor at the descriptor limit (EMFILE during accept), in a child process with a
 * limit of 64 descriptors that it fills itself. A pending connection is accepted on the spare
 * descriptor and closed at once (counted as refused) rather than left in the queue with the
 * listening socket readable forever; when even the spare is gone, accepting pauses until resumed.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { ROOT, waitFor } from '../helpers/harness';

const ADDON = path.join(ROOT, 'build', 'Release', 'sluice_net.node');

/** The child: listen, accept (reporting each batch), fill the descriptor table before or after starting. */
const CHILD = `
const n = require(${JSON.stringify(ADDON)});
const fs = require('node:fs');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const fd = n.listen('127.0.0.1', 0, 64);
const port = n.localAddress(fd).port;
const batch = new Int32Array(14 * 8);
const filler = [];
const fill = () => { for (;;) { try { filler.push(fs.openSync('/dev/null', 'r')); } catch (e) { return e.code; } } };
let h;
const start = () => { h = n.acceptStart(fd, batch, false, (k, refused, status) => {
  say({ k, refused, status });
  for (let i = 0; i < k; i++) n.close(batch[i * 14]);
}); };
let why;
if (process.argv[1] === 'fill-first') { why = fill(); start(); } else { start(); why = fill(); }
say({ port, filled: filler.length, why });
process.stdin.on('data', (d) => {
  for (const cmd of d.toString().trim().split('\\n')) {
    if (cmd === 'free') { for (const f of filler.splice(0, 8)) fs.closeSync(f); say({ freed: 8 }); }
    if (cmd === 'resume') say({ resumed: n.acceptResume(h) });
  }
});
`;

function child(t: Test, mode: 'fill-first' | 'fill-after') {
  const proc = spawn('prlimit', ['--nofile=64:64', '--', process.execPath, '-e', CHILD, mode], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => { proc.kill('SIGKILL'); });
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    partial += d;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) { lines.push(JSON.parse(partial.slice(0, i))); partial = partial.slice(i + 1); }
  });
  proc.stderr.on('data', (d: Buffer) => { stderr += d; });
  const line = (pred: (l: Record<string, unknown>) => boolean, what: string) =>
    waitFor(() => lines.find(pred), 10_000, `${what} (child said ${JSON.stringify(lines)}, stderr ${stderr})`);
  return { proc, lines, line, send: (cmd: string) => proc.stdin.write(`${cmd}\n`) };
}

/** Connects and sends a request; resolves with 'closed' once the other side closes it. */
function connectAndWait(port: number): { closed: Promise<string>; socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\n\r\n'));
  socket.on('error', () => {});
  return { socket, closed: new Promise((r) => socket.once('close', () => r('closed'))) };
}

t.test('at EMFILE a pending connection is accepted on the spare descriptor and closed at once', async (t) => {
  const c = child(t, 'fill-after');
  const ready = await c.line((l) => 'port' in l, 'the child filled its table');
  t.equal(ready.why, 'EMFILE', 'the table is full');
  const clients = Array.from({ length: 3 }, () => connectAndWait(ready.port as number));
  t.same(await Promise.all(clients.map((x) => x.closed)), ['closed', 'closed', 'closed'], 'each client is closed, none left waiting');
  const refused = () => c.lines.reduce((n, l) => n + ((l.refused as number) ?? 0), 0);
  await waitFor(() => refused() === 3, 10_000, 'three refusals reported');
  t.equal(c.lines.filter((l) => typeof l.k === 'number' && (l.k as number) > 0).length, 0, 'none handed over as a connection');
  t.ok(c.lines.every((l) => l.status === undefined || l.status === 0), 'accepting never stopped');
  // with descriptors free again, connections are accepted as usual
  c.send('free');
  await c.line((l) => 'freed' in l, 'descriptors freed');
  const again = connectAndWait(ready.port as number);
  await c.line((l) => l.k === 1, 'a connection accepted');
  t.equal(await again.closed, 'closed');
});

t.test('with not even the spare descriptor left, accepting pauses until resumed, then takes what waited', async (t) => {
  const c = child(t, 'fill-first');
  const ready = await c.line((l) => 'port' in l, 'the child filled its table');
  const waiting = connectAndWait(ready.port as number);
  const stalled = await c.line((l) => typeof l.status === 'number' && (l.status as number) < 0, 'accepting stopped');
  t.equal(stalled.status, -24, 'reported as -EMFILE');
  t.equal(stalled.k, 0);
  c.send('free');
  await c.line((l) => 'freed' in l, 'descriptors freed');
  c.send('resume');
  t.same(await c.line((l) => 'resumed' in l, 'resumed'), { resumed: true });
  await c.line((l) => l.k === 1, 'the waiting connection accepted');
  t.equal(await waiting.closed, 'closed', 'and it was served (here: closed by the child)');
});

/**
 * The acceptor takes as many connections as the kernel says are queued (TCP_INFO), not one more
 * that would find the queue empty. Nothing may be left behind by it: a queue longer than the
 * batch, connections reset while queued, and connections that come one at a time afterwards.
 */
const QUEUE_CHILD = `
const n = require(${JSON.stringify(ADDON)});
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const fd = n.listen('127.0.0.1', 0, 256);
const batch = new Int32Array(14 * 8);
say({ port: n.localAddress(fd).port });
process.stdin.once('data', () => {
  n.acceptStart(fd, batch, false, (k, refused, status) => {
    const peers = [];
    for (let i = 0; i < k; i++) { peers.push(batch[i * 14 + 9]); n.close(batch[i * 14]); }
    say({ k, refused, status, peers });
  });
  say({ started: true });
});
`;

t.test('a queue longer than the batch is taken whole, in batches; later connections one at a time too', async (t) => {
  const proc = spawn(process.execPath, ['-e', QUEUE_CHILD], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => { proc.kill('SIGKILL'); });
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  proc.stdout.on('data', (d: Buffer) => {
    partial += d;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) { lines.push(JSON.parse(partial.slice(0, i))); partial = partial.slice(i + 1); }
  });
  const port = (await waitFor(() => lines.find((l) => 'port' in l), 10_000, 'the child listens')).port as number;
  const accepted = () => lines.reduce((n, l) => n + ((l.k as number) ?? 0), 0);
  const ports = () => new Set(lines.flatMap((l) => (l.peers as number[] | undefined) ?? []));
  // 50 connections queued before anything accepts (each is in the queue once connected), 5 of them reset there
  const clients = await Promise.all(Array.from({ length: 50 }, () => new Promise<{ s: net.Socket; port: number }>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => resolve({ s, port: s.localPort! }));
    s.on('error', () => {});
  })));
  t.teardown(() => { for (const c of clients) c.s.destroy(); });
  for (const c of clients.slice(0, 5)) c.s.resetAndDestroy();
  await new Promise((r) => setTimeout(r, 50));
  proc.stdin.write('start\n');
  await waitFor(() => accepted() >= 45, 10_000, `the queue taken (child said ${JSON.stringify(lines)})`);
  await new Promise((r) => setTimeout(r, 100));
  const batches = lines.filter((l) => typeof l.k === 'number');
  t.ok(batches.every((l) => (l.k as number) <= 8), 'no batch beyond its capacity');
  t.ok(batches.length >= 6, `taken in several batches (${batches.length})`);
  t.ok(batches.every((l) => l.status === 0), 'no error');
  for (const c of clients.slice(5)) t.ok(ports().has(c.port), `client ${c.port} accepted`);
  // then one at a time: each is taken, none waits for the next
  for (let i = 0; i < 3; i++) {
    const c = await new Promise<{ s: net.Socket; port: number }>((resolve) => { const s = net.connect(port, '127.0.0.1', () => resolve({ s, port: s.localPort! })); s.on('error', () => {}); });
    t.teardown(() => { c.s.destroy(); });
    await waitFor(() => ports().has(c.port), 5000, `connection ${i + 1} after the burst accepted`);
  }
});
