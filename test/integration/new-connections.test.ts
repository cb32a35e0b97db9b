/**
 * The life of a connection from its hand-off to its close, attacked: clients that never send
 * (the sniff and header timeouts close them, each counted, none early), idle keep-alive
 * connections (the idle timeout), clients that reset or half-close before their first byte,
 * and a flood of connections that all close at once. After each, the Sluice process is back
 * to the descriptors it started with and still serves.
 *
 * Sluice runs as a child process (one worker, so every connection meets the same deadlines)
 * so that its descriptors can be counted in /proc.
 */
import { once } from 'node:events';
import net from 'node:net';
import t, { type Test } from 'tap';
import { fdsBackTo, httpUpstream, settledFds, spawnSluice, stats, waitFor, withTestDefaults, writeConfig, type ChildSluice, type Upstream } from '../helpers/harness';
import { sluiceStarted, type StartedSluice } from '../helpers/netns';

const SNIFF_MS = 300;
const HEADER_MS = 400;
const IDLE_MS = 500;

let up: Upstream;
let hits = 0;
let child: ChildSluice;
let started: StartedSluice;
let baseline = 0;

/** A client connection that records when it closed and what it was sent. */
function connect(port: number, opts: { allowHalfOpen?: boolean } = {}) {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: opts.allowHalfOpen ?? false });
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  s.on('error', () => {});
  const at = performance.now();
  const closed = once(s, 'close').then(() => ({ afterMs: performance.now() - at, data: Buffer.concat(chunks).toString('latin1') }));
  return { s, closed, connected: once(s, 'connect') };
}

async function counter(name: string, listener: string): Promise<number> {
  return (await stats(started.admin)).get(`${name}{listener="${listener}"}`) ?? 0;
}

/** One request with `connection: close` on a new connection: the response's status line. */
async function oneRequest(port: number): Promise<string> {
  const c = connect(port);
  await c.connected;
  c.s.write('GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n');
  const r = await c.closed;
  return r.data.split('\r\n')[0];
}

function fdsBack(t: Test, what: string): Promise<void> {
  return fdsBackTo(t, child.proc.pid!, baseline, what);
}

async function activeIs(listener: string, n: number): Promise<number> {
  return waitFor(async () => ((await counter('sluice_downstream_cx_active', listener)) === n ? 1 : 0), 10_000, `${listener}: ${n} open connections`);
}

t.before(async () => {
  up = await httpUpstream((_req, res) => { hits++; res.setHeader('content-length', 2); res.end('ok'); });
  const file = writeConfig(withTestDefaults({
    workers: { threads: 1 },
    listeners: [
      { name: 'auto', address: '127.0.0.1:0', cluster: 'web', opaque: 'refuse' },
      { name: 'http', address: '127.0.0.1:0', cluster: 'web', protocol: 'http' },
    ],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    tcp: { sniffTimeoutMs: SNIFF_MS },
    http: { headerTimeoutMs: HEADER_MS, idleTimeoutMs: IDLE_MS, upstreamIdleTimeoutMs: 300 },
  }));
  child = spawnSluice(['start', '--config', file]);
  started = await sluiceStarted(child);
  t.equal(await oneRequest(started.ports.auto), 'HTTP/1.1 200 OK', 'warm-up request');
  baseline = await settledFds(child.proc.pid!);
});

t.teardown(async () => {
  if (child && child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited; }
  await up?.close();
});

t.test('clients that never send: each is closed by the sniff timeout (auto) or the header timeout (http), none before it, each counted', async (t) => {
  const sniffed = await counter('sluice_downstream_cx_sniff_timeout_total', 'auto');
  const refused = await counter('sluice_downstream_cx_refused_total', 'auto');
  const headerTimedOut = await counter('sluice_downstream_cx_header_timeout_total', 'http');
  const silentAuto = Array.from({ length: 60 }, () => connect(started.ports.auto));
  const silentHttp = Array.from({ length: 40 }, () => connect(started.ports.http));
  const autoClosed = await Promise.all(silentAuto.map((c) => c.closed));
  const httpClosed = await Promise.all(silentHttp.map((c) => c.closed));
  const earliestAuto = Math.min(...autoClosed.map((r) => r.afterMs));
  const earliestHttp = Math.min(...httpClosed.map((r) => r.afterMs));
  t.ok(earliestAuto >= SNIFF_MS, `auto: the first silent client was let go after ${earliestAuto.toFixed(0)} ms (sniff timeout ${SNIFF_MS} ms)`);
  t.ok(earliestHttp >= HEADER_MS, `http: the first silent client was let go after ${earliestHttp.toFixed(0)} ms (header timeout ${HEADER_MS} ms)`);
  t.ok(autoClosed.every((r) => r.data === '') && httpClosed.every((r) => r.data === ''), 'nothing was sent to them');
  t.equal(await counter('sluice_downstream_cx_sniff_timeout_total', 'auto') - sniffed, 60, 'auto: 60 sniff timeouts');
  t.equal(await counter('sluice_downstream_cx_refused_total', 'auto') - refused, 60, 'auto: 60 refused (opaque: refuse)');
  t.equal(await counter('sluice_downstream_cx_header_timeout_total', 'http') - headerTimedOut, 40, 'http: 40 header timeouts');
  await activeIs('auto', 0);
  await activeIs('http', 0);
  await fdsBack(t, 'after the silent clients');
});

t.test('a client that stops after part of a request line, past the sniff timeout: refused at the header timeout, never passed on', async (t) => {
  const before = hits;
  const headerTimedOut = await counter('sluice_downstream_cx_header_timeout_total', 'auto');
  const slow = Array.from({ length: 20 }, () => connect(started.ports.auto));
  await Promise.all(slow.map((c) => c.connected));
  for (const c of slow) c.s.write('GE');
  const closed = await Promise.all(slow.map((c) => c.closed));
  t.ok(Math.min(...closed.map((r) => r.afterMs)) >= HEADER_MS, 'none before the header timeout');
  t.equal(await counter('sluice_downstream_cx_header_timeout_total', 'auto') - headerTimedOut, 20, '20 header timeouts');
  t.equal(hits, before, 'the upstream saw none of it');
  await fdsBack(t, 'after the slow request lines');
});

t.test('idle keep-alive connections are closed by the idle timeout, after their answers', async (t) => {
  const conns = Array.from({ length: 30 }, () => connect(started.ports.auto));
  await Promise.all(conns.map((c) => c.connected));
  for (const c of conns) c.s.write('GET / HTTP/1.1\r\nhost: t\r\n\r\n');
  await waitFor(() => conns.every((c) => c.s.bytesRead > 0), 10_000, 'every answer');
  const closed = await Promise.all(conns.map((c) => c.closed));
  t.ok(closed.every((r) => r.data.startsWith('HTTP/1.1 200 OK') && r.data.endsWith('ok')), 'each got its answer, whole');
  t.ok(Math.min(...closed.map((r) => r.afterMs)) >= IDLE_MS, 'none closed before the idle timeout');
  await activeIs('auto', 0);
  await fdsBack(t, 'after the idle connections');
});

t.test('clients that reset before their first byte: no timeout counted, nothing kept, the next client served', async (t) => {
  const sniffed = await counter('sluice_downstream_cx_sniff_timeout_total', 'auto');
  const refused = await counter('sluice_downstream_cx_refused_total', 'auto');
  const total = await counter('sluice_downstream_cx_total', 'auto');
  const conns = Array.from({ length: 200 }, () => connect(started.ports.auto));
  await Promise.all(conns.map((c) => c.connected));
  for (const c of conns) c.s.resetAndDestroy();
  await Promise.all(conns.map((c) => c.closed));
  // every one reached a worker, and went without a timeout
  await waitFor(async () => (await counter('sluice_downstream_cx_total', 'auto')) - total >= 200, 10_000, '200 connections taken');
  await activeIs('auto', 0);
  // past the sniff timeout: a reset connection left no deadline behind that fires now
  await new Promise((r) => setTimeout(r, SNIFF_MS * 2));
  t.equal(await counter('sluice_downstream_cx_sniff_timeout_total', 'auto') - sniffed, 0, 'no sniff timeout counted');
  t.equal(await counter('sluice_downstream_cx_refused_total', 'auto') - refused, 0, 'none counted as refused');
  t.equal(await oneRequest(started.ports.auto), 'HTTP/1.1 200 OK', 'the next client is served');
  await fdsBack(t, 'after the resets');
});

t.test('a client that half-closes before its first byte is let go at once, not at the sniff timeout', async (t) => {
  const sniffed = await counter('sluice_downstream_cx_sniff_timeout_total', 'auto');
  const refused = await counter('sluice_downstream_cx_refused_total', 'auto');
  const conns = Array.from({ length: 30 }, () => connect(started.ports.auto, { allowHalfOpen: true }));
  await Promise.all(conns.map((c) => c.connected));
  for (const c of conns) c.s.end();
  await Promise.all(conns.map((c) => c.closed));
  t.equal(await counter('sluice_downstream_cx_refused_total', 'auto') - refused, 30, 'each refused as opaque bytes (opaque: refuse)');
  t.equal(await counter('sluice_downstream_cx_sniff_timeout_total', 'auto') - sniffed, 0, 'none waited for the sniff timeout');
  await fdsBack(t, 'after the half-closes');
});

t.test('a flood of connections that all close at once, some with a request in flight: the worker keeps serving, nothing leaks', async (t) => {
  const conns = Array.from({ length: 400 }, () => connect(started.ports.auto));
  await Promise.all(conns.map((c) => c.connected));
  conns.forEach((c, i) => {
    if (i % 4 === 1) c.s.write('GET / HTTP/1.1\r\nhost: t\r\n\r\n');
    if (i % 4 === 2) c.s.write('GET / HTTP/1.1\r\nhost: t\r\n');
  });
  conns.forEach((c, i) => { if (i % 2 === 0) c.s.resetAndDestroy(); else c.s.destroy(); });
  await Promise.all(conns.map((c) => c.closed));
  const answers = await Promise.all(Array.from({ length: 20 }, () => oneRequest(started.ports.auto)));
  t.same(new Set(answers), new Set(['HTTP/1.1 200 OK']), 'new clients are served right after');
  await activeIs('auto', 0);
  await fdsBack(t, 'after the flood');
  t.equal(child.proc.exitCode, null, 'Sluice is still running');
});
