/**
 * Inbound mTLS trusts OpenSSL's verify result (tls-runtime.ts, the fast path), and on a resumed
 * session that result is the one stored in the session when it was made. A session made under one
 * trust bundle must therefore never resume under another: a rotation gives the listener new ticket
 * keys and a new context (no session-ID cache carried over), so a caller that comes back after it
 * makes a full handshake and is checked against the bundle in force. Both TLS 1.3 (tickets) and
 * TLS 1.2 (tickets or session IDs), with a real client that offers its saved session.
 */
import tls from 'node:tls';
import t from 'tap';
import { adminPost, httpUpstream, startSluice, stats, waitFor } from '../helpers/harness';
import { TestPki } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const mesh = pki.ca('mesh');
const other = pki.ca('other');
const server1 = pki.issue(mesh, 'spiffe://cluster.local/ns/shop/sa/orders');
const server2 = pki.issue(other, 'spiffe://cluster.local/ns/shop/sa/orders');
const caller = pki.issue(mesh, 'spiffe://cluster.local/ns/web/sa/frontend');
const XFCC = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';

for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
  t.test(`${maxVersion}: a session made before the trust bundle rotated is not resumed after it`, async (t) => {
    const up = await httpUpstream((req, res) => res.end(String(req.headers['x-forwarded-client-cert'])));
    const s = await startSluice({
      workers: { threads: 1 },
      tls: { certFile: server1.certFile, keyFile: server1.keyFile, caFile: server1.caFile, inbound: { mode: 'strict' } },
      listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
      clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
    });
    t.teardown(async () => { await s.stop(); await up.close(); });
    let session: Buffer | undefined;
    /** One request on a new connection that offers the last session it was given. */
    const call = async (): Promise<{ answer: string; reused: boolean | null }> => {
      const c = tls.connect({ host: '127.0.0.1', port: s.port('in'), cert: caller.cert, key: caller.key, rejectUnauthorized: false, session, maxVersion });
      c.on('session', (x: Buffer) => { session = x; });
      c.on('error', () => {});
      let reused: boolean | null = null;
      c.once('secureConnect', () => {
        reused = c.isSessionReused();
        c.write('GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n');
      });
      let text = '';
      c.on('data', (d: Buffer) => { text += d.toString('latin1'); });
      await new Promise<void>((resolve) => c.once('close', () => resolve()));
      return { answer: text === '' ? '(closed)' : `${text.split('\r\n')[0]} ${text.slice(text.indexOf('\r\n\r\n') + 4)}`, reused };
    };
    t.same(await call(), { answer: `HTTP/1.1 200 OK ${XFCC}`, reused: false }, 'first call: a full handshake');
    t.same(await call(), { answer: `HTTP/1.1 200 OK ${XFCC}`, reused: true }, 'second call: resumed');

    // a bundle that still trusts the caller's CA: served, after a full handshake
    const both = await adminPost(s.admin, '/certs', JSON.stringify({ cert: server2.cert, key: server2.key, ca: server2.ca + server1.ca }));
    t.equal(both.status, 200, both.body);
    t.same(await call(), { answer: `HTTP/1.1 200 OK ${XFCC}`, reused: false }, 'after a rotation: checked again, not resumed');

    // a bundle without it: the saved session must not get the caller in
    const r = await adminPost(s.admin, '/certs', JSON.stringify({ cert: server2.cert, key: server2.key, ca: server2.ca }));
    t.equal(r.status, 200, r.body);
    const after = await call();
    t.equal(after.answer, '(closed)', `a caller whose CA left the bundle gets no answer (resumed: ${after.reused})`);
    // the worker counts the refusal as it closes: the client may hear the close first
    const refused = await waitFor(async () => {
      const m = [...(await stats(s.admin))].filter(([k, v]) => k.startsWith('sluice_tls_inbound_refused_total') && v > 0);
      return m.length > 0 ? m : null;
    }, 5000, 'a refusal counted');
    t.same(refused.map(([k, v]) => `${k} ${v}`), ['sluice_tls_inbound_refused_total{listener="in",reason="not_chained"} 1']);
  });
}
