/**
 * Inbound termination as a worker does it (TlsRuntime.terminate over accepted sockets), with real
 * TLS clients: the caller's identity on a full and on a resumed handshake, each refusal with its
 * reason (no certificate, another CA, a client that says nothing until the handshake timeout, a
 * client that leaves mid-handshake), and the certificates the server sends: the leaf and its CA,
 * as OpenSSL's own chain building sent them, now given with the certificate (withChain).
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate as X509 } from 'node:crypto';
import { IdentityMailbox } from '../../src/tls/identity-mailbox';
import { SharedMemory } from '../../src/shared/shared-memory';
import { TlsRuntime, withChain, type Terminated } from '../../src/tls/tls-runtime';
import { pemBlocks } from '../../src/tls/identity';
import { TestPki, type Workload } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const caOne = pki.ca('one');
const caTwo = pki.ca('two');
const server = pki.issue(caOne, 'spiffe://cluster.local/ns/shop/sa/orders');
const client = pki.issue(caOne, 'spiffe://cluster.local/ns/web/sa/frontend');
const stranger = pki.issue(caTwo, 'spiffe://cluster.local/ns/web/sa/frontend');
/** The bundle of a CA rotation: the old CA and the new one. */
const bundle = server.ca + stranger.ca;
const rootOf = (w: Workload) => new X509(w.ca);

function runtime(caPem: string): TlsRuntime {
  const mailbox = new IdentityMailbox(SharedMemory.create());
  mailbox.publish({
    generation: 1, id: 'cluster.local/ns/shop/sa/orders', certPem: server.cert, keyPem: server.key, caPem,
    ticketKeys: new Uint8Array(48).fill(9), ciphers: '',
  });
  return new TlsRuntime(mailbox);
}

/** A listener whose connections the runtime terminates; each outcome, in order. */
async function serve(t: Test, rt: TlsRuntime, timeoutMs = 5000): Promise<{ port: number; outcomes: Terminated[]; next(): Promise<Terminated> }> {
  const outcomes: Terminated[] = [];
  const waiting: Array<(r: Terminated) => void> = [];
  const srv = net.createServer({ pauseOnConnect: true }, (raw) => {
    rt.terminate(raw, timeoutMs, (r) => {
      outcomes.push(r);
      if (r.ok) { r.socket.on('end', () => r.socket.end()); r.socket.resume(); }
      waiting.shift()?.(r);
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  let seen = 0;
  const next = () => new Promise<Terminated>((resolve) => {
    if (outcomes.length > seen) { resolve(outcomes[seen++]); return; }
    waiting.push((r) => { seen++; resolve(r); });
  });
  return { port: (srv.address() as net.AddressInfo).port, outcomes, next };
}

async function handshake(port: number, who: Workload | null, session?: Buffer): Promise<{ session?: Buffer; resumed: boolean; error?: string }> {
  const s = tls.connect({
    host: '127.0.0.1', port, ca: server.ca, checkServerIdentity: () => undefined, session, minVersion: 'TLSv1.3',
    ...(who ? { cert: who.cert, key: who.key } : {}),
  });
  let last: Buffer | undefined;
  s.on('session', (b: Buffer) => { last = b; });
  try {
    await once(s, 'secureConnect');
  } catch (err) {
    return { resumed: false, error: (err as Error).message };
  }
  const resumed = s.isSessionReused();
  s.on('error', () => {});
  s.end();
  s.resume();
  await once(s, 'close');
  return { session: last, resumed };
}

t.test('the caller\'s identity, on a full handshake and on a resumed one', async (t) => {
  const rt = runtime(bundle);
  const srv = await serve(t, rt);
  const first = await handshake(srv.port, client);
  const r1 = await srv.next();
  t.match(r1, { ok: true, principal: 'cluster.local/ns/web/sa/frontend', ownId: 'cluster.local/ns/shop/sa/orders', resumed: false });
  t.ok(first.session, 'a session ticket came');
  const again = await handshake(srv.port, client, first.session);
  t.ok(again.resumed, 'the client resumed');
  t.match(await srv.next(), { ok: true, principal: 'cluster.local/ns/web/sa/frontend', resumed: true });
});

t.test('refusals, each with its reason', async (t) => {
  const rt = runtime(server.ca);
  const srv = await serve(t, rt, 300);
  await handshake(srv.port, null);
  t.match(await srv.next(), { ok: false, reason: 'no_client_cert' }, 'no client certificate');
  await handshake(srv.port, stranger);
  t.match(await srv.next(), { ok: false, reason: 'not_chained' }, 'a certificate of a CA outside the bundle');

  // connected, and silent: the handshake timeout refuses it and closes the connection
  const silent = net.connect(srv.port, '127.0.0.1');
  silent.on('error', () => {});
  const started = Date.now();
  const timedOut = await srv.next();
  t.match(timedOut, { ok: false, reason: 'handshake_timeout', message: 'no TLS handshake within 300 ms' });
  t.ok(Date.now() - started >= 250, 'not before its time');
  if (!silent.destroyed) await once(silent, 'close');
  t.pass('the silent connection was closed');

  // a ClientHello, then gone
  const hello = tls.connect({ host: '127.0.0.1', port: srv.port, cert: client.cert, key: client.key, ca: server.ca, checkServerIdentity: () => undefined });
  hello.on('error', () => {});
  hello.once('secureConnect', () => {});
  setImmediate(() => hello.destroy());
  t.match(await srv.next(), { ok: false, reason: 'handshake_failed' }, 'the caller left during the handshake');
  t.equal(srv.outcomes.length, 4, 'one outcome per connection');
});

t.test('withChain: the chain OpenSSL would build from the bundle, found once', async (t) => {
  const roots = pemBlocks(bundle).map((p) => new X509(p));
  const chained = pemBlocks(withChain(server.cert, roots));
  t.equal(chained.length, 2, 'the leaf, then its CA');
  t.ok(new X509(chained[0]).raw.equals(new X509(server.cert).raw), 'the leaf first');
  t.ok(new X509(chained[1]).raw.equals(rootOf(server).raw), "the leaf's own CA of the two in the bundle");
  const own = server.cert + server.ca;
  t.equal(withChain(own, roots), own, 'a file that holds its chain is taken as it is');
  t.equal(withChain(stranger.cert, [rootOf(server)]), stranger.cert, 'no path through the bundle: left to OpenSSL');
});

t.test('the certificates sent are the leaf and its CA, as before', async (t) => {
  const rt = runtime(bundle);
  const srv = await serve(t, rt);
  // s_client's stdin is empty: it sends nothing, and leaves once the handshake is done
  const child = promisify(execFile)('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-showcerts', '-cert', client.certFile, '-key', client.keyFile,
    '-CAfile', server.caFile], { timeout: 10_000 });
  child.child.stdin?.end();
  const out = (await child).stdout;
  const sent = pemBlocks(out).map((p) => new X509(p));
  t.equal(sent.length, 2);
  t.ok(sent[0].raw.equals(new X509(server.cert).raw), 'the leaf');
  t.ok(sent[1].raw.equals(rootOf(server).raw), 'its CA');
  t.match(out, /Verify return code: 0 \(ok\)/, 's_client verified it');
  t.match(await srv.next(), { ok: true, principal: 'cluster.local/ns/web/sa/frontend' });
});
