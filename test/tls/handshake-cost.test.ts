/**
 * What the inbound handshake's cheaper paths rest on, over real TLS sockets: the peer's leaf read
 * from the encoded session is the certificate the peer presented (full and resumed handshakes,
 * none without a client certificate), and a server context set to one session ticket sends one,
 * which the client resumes with.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { certOfSession, oneSessionTicket, peerLeaf } from '../../src/tls/tls-runtime';
import { loadNative } from '../../src/net/native';
import { TestPki } from '../helpers/certs';

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
