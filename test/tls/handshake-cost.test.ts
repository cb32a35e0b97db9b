/**
 * What the inbound handshake's cheaper paths rest on, over real TLS sockets: the peer's leaf read
 * from the encoded session is the certificate the peer presented (full and resumed handshakes,
 * none without a client certificate), and a server context set to one session ticket sends one,
 * which the client resumes with. Then, through a running Sluice: inbound sessions stay in the
 * process (the addon's store, shared by the workers), so the one ticket of a full handshake is a
 * session ID, a resumed handshake gets no new ticket, and clients (Node's, openssl s_client,
 * Sluice's own upstream connections) resume with it again and again, with the caller's identity.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { certOfSession, oneSessionTicket, peerLeaf } from '../../src/tls/tls-runtime';
import { loadNative } from '../../src/net/native';
import { TestPki } from '../helpers/certs';
import { httpUpstream, startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('one');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const client = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');

interface Seen { leaf: Buffer | null; presented: Buffer | undefined; resumed: boolean }

/** A server of TLSSockets over accepted sockets, as Sluice terminates them; each handshake's view of the peer. */
async function serve(t: Test, ctx: tls.SecureContext, requestCert = true): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const srv = net.createServer((raw) => {
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx, requestCert, rejectUnauthorized: false });
    s.on('error', () => {});
    s.once('secure', () => {
      const c = s.getPeerCertificate(false) as tls.PeerCertificate | Record<string, never>;
      seen.push({ leaf: peerLeaf(s), presented: 'raw' in c ? c.raw : undefined, resumed: s.isSessionReused() });
    });
    // the client's request comes after the tickets the server sent at the handshake's end
    s.once('data', () => s.end('pong'));
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  return { port: (srv.address() as net.AddressInfo).port, seen };
}

/** One client connection; its session and how many tickets came. */
async function connect(port: number, session?: Buffer, withCert = true): Promise<{ session: Buffer | undefined; tickets: number; resumed: boolean }> {
  const s = tls.connect({
    host: '127.0.0.1', port, ca: client.ca, checkServerIdentity: () => undefined, session, minVersion: 'TLSv1.3',
    ...(withCert ? { cert: client.cert, key: client.key } : {}),
  });
  let last: Buffer | undefined;
  let tickets = 0;
  s.on('session', (b: Buffer) => { last = b; tickets++; });
  await once(s, 'secureConnect');
  const resumed = s.isSessionReused();
  s.end('ping');
  s.resume();
  await once(s, 'end');
  s.destroy();
  return { session: last, tickets, resumed };
}

function serverContext(): tls.SecureContext {
  return tls.createSecureContext({ cert: server.cert, key: server.key, ca: server.ca, ticketKeys: Buffer.alloc(48, 7), sessionIdContext: 'sluice' });
}

t.test('the leaf read from the session is the certificate the peer presented, full and resumed', async (t) => {
  const { port, seen } = await serve(t, serverContext());
  const first = await connect(port);
  t.ok(first.session, 'a ticket came');
  const again = await connect(port, first.session);
  t.ok(again.resumed, 'the second connection resumed');
  t.equal(seen.length, 2);
  for (const [i, s] of seen.entries()) {
    t.ok(s.presented && s.leaf && s.leaf.equals(s.presented), `handshake ${i + 1} (${s.resumed ? 'resumed' : 'full'}): the same DER`);
  }
  t.same(seen.map((s) => s.resumed), [false, true]);
});

t.test('no client certificate: no leaf', async (t) => {
  const { port, seen } = await serve(t, serverContext(), false);
  await connect(port, undefined, false);
  t.equal(seen.length, 1);
  t.equal(seen[0].leaf, null);
});

t.test('an encoding the reader does not know is left to getPeerCertificate', async (t) => {
  t.equal(certOfSession(Buffer.from([0x04, 0x02, 0x00, 0x00])), undefined, 'not a SEQUENCE');
  t.equal(certOfSession(Buffer.from([0x30, 0x05, 0x02, 0x01])), undefined, 'longer than the buffer');
  t.equal(certOfSession(Buffer.from([0x30, 0x04, 0xa3, 0x02, 0x02, 0x00])), undefined, '[3] without a certificate in it');
  t.equal(certOfSession(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01])), null, 'a session without a peer certificate');
});

t.test('one session ticket per full handshake, and the client resumes with it', { skip: typeof loadNative()?.tlsSetNumTickets !== 'function' && 'the addon is not built' }, async (t) => {
  const two = await serve(t, serverContext());
  t.equal((await connect(two.port)).tickets, 2, "OpenSSL's default: two");
  const ctx = serverContext();
  t.equal(oneSessionTicket(ctx), true, 'set');
  t.equal(oneSessionTicket(ctx), true, 'set again: the context already holds one');
  const one = await serve(t, ctx);
  const first = await connect(one.port);
  t.equal(first.tickets, 1);
  const again = await connect(one.port, first.session);
  t.ok(again.resumed, 'resumed with that ticket');
  t.equal(again.tickets, 0, 'a resumed handshake sends none (the ticket it was offered stays good)');
  t.same(one.seen.map((s) => s.resumed), [false, true]);
});

t.test('the addon refuses what is not a context address', { skip: typeof loadNative()?.tlsSetNumTickets !== 'function' && 'the addon is not built' }, async (t) => {
  const native = loadNative()!;
  t.throws(() => native.tlsSetNumTickets!('zz', 1), /hex address/);
  t.throws(() => native.tlsSetNumTickets!('0', 1), /hex address/);
  t.throws(() => native.tlsSetNumTickets!('1234567890abcdef12345', 1), /hex address/);
});

// ── inbound sessions kept in the process (the addon's store), through a running Sluice ───────────

// an addon that loads but predates the store fails these (it is an older build to rebuild), as it should
const storeBuilt = loadNative() !== null || 'the addon is not built';
const XFCC = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';

/** Sluice with two workers terminating mTLS in front of an application that answers with the caller's identity. */
async function twoWorkerSluice(t: Test): Promise<RunningSluice> {
  const up = await httpUpstream((req, res) => res.end(String(req.headers['x-forwarded-client-cert'])));
  const s = await startSluice({
    workers: { threads: 2 },
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  return s;
}

/** One HTTP request on a new mTLS connection offering `session`: what came back, the tickets and the last one's session. */
async function call(port: number, session?: Buffer): Promise<{ answer: string; resumed: boolean; tickets: number; session: Buffer | undefined }> {
  const c = tls.connect({ host: '127.0.0.1', port, cert: client.cert, key: client.key, ca: client.ca, checkServerIdentity: () => undefined, session, minVersion: 'TLSv1.3' });
  let last: Buffer | undefined;
  let tickets = 0;
  c.on('session', (b: Buffer) => { last = b; tickets++; });
  await once(c, 'secureConnect');
  const resumed = c.isSessionReused();
  c.write('GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n');
  let text = '';
  c.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  await once(c, 'close');
  return { answer: `${text.split('\r\n')[0]} ${text.slice(text.indexOf('\r\n\r\n') + 4)}`, resumed, tickets, session: last };
}

/** `openssl s_client` sending one request, with -sess_in/-sess_out: whether it resumed, and the NewSessionTicket messages it read (their lengths). */
async function sClient(port: number, sessIn: string | null, sessOut: string): Promise<{ reused: boolean; tickets: number[]; answer: string }> {
  const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-cert', client.certFile, '-key', client.keyFile, '-CAfile', client.caFile,
    '-tls1_3', '-msg', '-ign_eof', '-sess_out', sessOut, ...(sessIn ? ['-sess_in', sessIn] : [])];
  const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const timer = setTimeout(() => child.kill(), 10_000);
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString('latin1'); });
  child.stdin.end('GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n');
  await once(child, 'close');
  clearTimeout(timer);
  const tickets = [...out.matchAll(/<<< TLS 1\.3, Handshake \[length ([0-9a-f]+)\], NewSessionTicket/g)].map((m) => parseInt(m[1], 16));
  return { reused: /^Reused, TLSv1\.3/m.test(out), tickets, answer: /By=[^\s<]+/.exec(out)?.[0] ?? '(none)' };
}

t.test('a full handshake gets one ticket, a session ID; resumed ones get none and keep resuming on either worker, with the caller\'s identity', { skip: storeBuilt !== true && storeBuilt }, async (t) => {
  const s = await twoWorkerSluice(t);
  const first = await call(s.port('in'));
  t.same({ answer: first.answer, resumed: first.resumed, tickets: first.tickets }, { answer: `HTTP/1.1 200 OK ${XFCC}`, resumed: false, tickets: 1 }, 'full: one ticket');
  // five more with that one ticket: the two workers take connections in turn, and both resume it
  for (let i = 1; i <= 5; i++) {
    const again = await call(s.port('in'), first.session);
    t.same({ answer: again.answer, resumed: again.resumed, tickets: again.tickets }, { answer: `HTTP/1.1 200 OK ${XFCC}`, resumed: true, tickets: 0 }, `resumption ${i}: no new ticket, the caller's identity`);
  }
  const m = await stats(s.admin);
  t.equal(m.get('sluice_tls_inbound_resumed_total{listener="in"}'), 5, 'Sluice counted five resumptions');
  t.equal(m.get('sluice_tls_inbound_handshake_total{listener="in"}'), 6);
});

t.test('openssl s_client: one NewSessionTicket of a session ID on the full handshake, then resumptions without one', { skip: storeBuilt !== true && storeBuilt }, async (t) => {
  const s = await twoWorkerSluice(t);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-sess-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sess = path.join(dir, 'session.pem');
  const full = await sClient(s.port('in'), null, sess);
  t.same({ ...full, tickets: full.tickets.length }, { reused: false, tickets: 1, answer: XFCC }, 'full: one ticket');
  // a ticket that is the session's ID (32 bytes; the session stays in Sluice): 57 bytes of message, where a
  // ticket holding the session, encrypted, with the caller's certificate in it, made one of 745
  t.ok(full.tickets[0] < 64, `the ticket is a session ID (message of ${full.tickets[0]} bytes)`);
  for (let i = 1; i <= 3; i++) {
    t.same(await sClient(s.port('in'), sess, sess), { reused: true, tickets: [], answer: XFCC }, `resumption ${i}`);
  }
});

t.test("Sluice's own upstream mTLS connections resume with the session ID ticket, one connection after another", { skip: storeBuilt !== true && storeBuilt }, async (t) => {
  const echo = net.createServer((c) => { c.on('error', () => {}); c.pipe(c); });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.teardown(() => echo.close());
  const b = await startSluice({
    workers: { threads: 2 },
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${(echo.address() as net.AddressInfo).port}`] }],
  });
  t.teardown(() => b.stop());
  const a = await startSluice({
    // one worker: Sluice keeps an upstream session per worker thread, and the connections below must meet it
    workers: { threads: 1 },
    tls: { certFile: client.certFile, keyFile: client.keyFile, caFile: client.caFile, inbound: { mode: 'disabled' } },
    listeners: [{ name: 'out', address: '127.0.0.1:0', cluster: 'b' }],
    clusters: [{ name: 'b', endpoints: [`127.0.0.1:${b.port('in')}`], tls: { mode: 'mutual', principals: ['cluster.local/ns/shop/sa/orders'] } }],
  });
  t.teardown(() => a.stop());
  // bytes that are no HTTP: each client connection is one TCP connection from A to B, one handshake each
  for (let i = 0; i < 4; i++) {
    const c = net.connect(a.port('out'), '127.0.0.1');
    const msg = Buffer.from([0, 1, 2, i]);
    c.write(msg);
    const [echoed] = await once(c, 'data') as [Buffer];
    t.same([...echoed], [...msg], `connection ${i + 1} through A and B`);
    c.destroy();
    await waitFor(async () => ((await stats(a.admin)).get('sluice_tls_outbound_handshake_total{cluster="b"}') ?? 0) >= i + 1 || null, 5000, `handshake ${i + 1}`);
  }
  const sa = await stats(a.admin);
  t.equal(sa.get('sluice_tls_outbound_handshake_total{cluster="b"}'), 4);
  t.equal(sa.get('sluice_tls_outbound_resumed_total{cluster="b"}'), 3, 'A resumed all but the first');
  t.equal((await stats(b.admin)).get('sluice_tls_inbound_resumed_total{listener="in"}'), 3, 'and B resumed them');
});

t.test('the addon refuses what is not a context address or a session ID context', { skip: storeBuilt !== true && storeBuilt }, async (t) => {
  const native = loadNative()!;
  t.throws(() => native.tlsServerSessions!('zz', Buffer.from('x'), 16), /hex address/);
  t.throws(() => native.tlsServerSessions!('1234', Buffer.alloc(0), 16), /1\.\.32 bytes/);
  t.throws(() => native.tlsServerSessions!('1234', Buffer.alloc(33), 16), /1\.\.32 bytes/);
  t.throws(() => native.tlsServerSessions!('1234', Buffer.from('x'), 0), /slots/);
  t.equal(native.tlsServerSessionsRearm!('1234'), false, 'a context it did not take is not touched');
});
