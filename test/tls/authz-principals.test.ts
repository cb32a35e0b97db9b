/**
 * Authorization by principal end to end over mTLS. B is a server-side sidecar (permissive, so
 * plaintext callers reach it too) with two rules: deny `cluster.local/ns/untrusted/*`, allow only
 * `cluster.local/ns/web/sa/frontend`. Its callers:
 *
 *   - client sidecars A (frontend) and C (untrusted/evil) originating mTLS for HTTP/1.1 (curl),
 *     gRPC (@grpc/grpc-js) and Dubbo (a dubbo-remoting consumer);
 *   - direct mTLS clients: curl --cert, grpc-js with client certificates, a Dubbo consumer on a
 *     TLS socket;
 *   - plaintext callers, some forging x-forwarded-client-cert or other identity headers;
 *   - callers with certificates of another CA (another trust domain, or the same SPIFFE ID).
 *
 * What a user sees: the allowed identity is served with its identity passed on; the denied one
 * gets 403 / PERMISSION_DENIED / a Dubbo error; a plaintext caller has no principal whatever it
 * sends (an allow by principal refuses it, a deny by principal does not catch it); a foreign
 * certificate never completes a handshake; the access log line names the principal.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { httpUpstream, run, startSluice, stats, waitFor, withTestDefaults, type RunningSluice } from '../helpers/harness';
import { TestPki, type Workload } from '../helpers/certs';
import { Consumer, str, type Answer } from '../integration/dubbo-peers';
import { loadEcho } from '../integration/filter-peers';
import { xfccProvider } from './tls-peers';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const frontend = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const evil = pki.issue(ca, 'spiffe://cluster.local/ns/untrusted/sa/evil');
const stranger = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/other');
const otherTd = pki.issue(pki.ca('other', 'other.local'), 'spiffe://other.local/ns/web/sa/frontend');
const sameIdOtherCa = pki.issue(pki.ca('rogue'), 'spiffe://cluster.local/ns/web/sa/frontend');

const FRONTEND = 'cluster.local/ns/web/sa/frontend';
const EVIL = 'cluster.local/ns/untrusted/sa/evil';
const xfccOf = (id: string) => `By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://${id}`;
/** What a plaintext caller sends to pass for frontend. */
const FORGED: Record<string, string> = {
  'x-forwarded-client-cert': xfccOf(FRONTEND),
  'x-sluice-principal': FRONTEND,
  'x-spiffe-id': `spiffe://${FRONTEND}`,
  'x-client-principal': FRONTEND,
};

const RULES = [
  { name: 'no-untrusted', action: 'deny', principals: ['cluster.local/ns/untrusted/*'] },
  { name: 'frontend-only', action: 'allow', principals: [FRONTEND] },
];

// ── the application behind B ────────────────────────────────────────────────

let appRequests = 0;
let grpcCalls = 0;

async function applications() {
  const h1 = await httpUpstream((req, res) => {
    appRequests++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ xfcc: req.headers['x-forwarded-client-cert'] ?? null, principal: req.headers['x-sluice-principal'] ?? null }));
  });
  const g = new grpc.Server();
  g.addService(loadEcho().service, {
    Unary(call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<{ message: string; index: number; via: string }>) {
      grpcCalls++;
      cb(null, { message: String(call.metadata.get('x-forwarded-client-cert')[0] ?? 'none'), index: 0, via: '' });
    },
  });
  const gport = await new Promise<number>((res, rej) => g.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const dubbo = await xfccProvider();
  return { h1, gport, dubbo, close: async () => { await h1.close(); g.forceShutdown(); dubbo.close(); } };
}

// ── clients ─────────────────────────────────────────────────────────────────

interface HttpResult { code: number | null; status: number; reason: string | undefined; body: string }

/** curl, HTTP/1.1; with `w` over mTLS (https) with that workload's certificate. */
async function curlAs(port: number, w: Workload | null, headers: Record<string, string> = {}): Promise<HttpResult> {
  const args = ['-sS', '--http1.1', '-D', '-', '--max-time', '10'];
  if (w) args.push('-k', '--cert', w.certFile, '--key', w.keyFile);
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(`${w ? 'https' : 'http'}://127.0.0.1:${port}/orders`);
  const r = await run('curl', args);
  const cut = r.stdout.indexOf('\r\n\r\n');
  const head = cut >= 0 ? r.stdout.slice(0, cut) : '';
  return {
    code: r.code,
    status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head)?.[1] ?? 0),
    reason: /\r\nx-sluice-reason: *([^\r]*)/i.exec(head)?.[1],
    body: cut >= 0 ? r.stdout.slice(cut + 4) : '',
  };
}

/** One gRPC Unary call: plaintext, or with `w`'s client certificate (trusting B's CA, so that B is the side that refuses). */
async function grpcAs(port: number, w: Workload | null, md: Record<string, string> = {}): Promise<{ code: number; message: string }> {
  const Echo = loadEcho();
  const creds = w
    ? grpc.credentials.createSsl(Buffer.from(server.ca), Buffer.from(w.key), Buffer.from(w.cert), { checkServerIdentity: () => undefined })
    : grpc.credentials.createInsecure();
  const client = new Echo(`127.0.0.1:${port}`, creds);
  const meta = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) meta.set(k, v);
  try {
    return await new Promise((resolve) => {
      client.Unary({ message: 'hi' }, meta, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, r: { message: string } | undefined) => {
        resolve(err ? { code: err.code, message: err.details } : { code: grpc.status.OK, message: r!.message });
      });
    });
  } finally {
    client.close();
  }
}

/** One Dubbo call: plaintext, or on a TLS socket with `w`'s certificate. */
async function dubboAs(port: number, w: Workload | null, props: Record<string, string> = {}): Promise<Answer> {
  let c: Consumer;
  if (w) {
    const sock = tls.connect({ host: '127.0.0.1', port, cert: w.cert, key: w.key, ca: server.ca, checkServerIdentity: () => undefined });
    await once(sock, 'secureConnect');
    c = new Consumer(sock, true);
  } else {
    c = await Consumer.connect(port);
  }
  try {
    return await c.call('transfer', [str('x')], props, 10_000);
  } finally {
    c.close();
  }
}

const DUBBO_DENIED = /sluice: denied: access denied/;

// ── the sidecars ────────────────────────────────────────────────────────────

function serverDoc(apps: Awaited<ReturnType<typeof applications>>, log: string, rules: unknown[], ports?: { in1: number; ing: number; ind: number }) {
  return {
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'permissive' } },
    listeners: [
      { name: 'in1', address: `127.0.0.1:${ports?.in1 ?? 0}`, direction: 'inbound', cluster: 'app1' },
      { name: 'ing', address: `127.0.0.1:${ports?.ing ?? 0}`, direction: 'inbound', cluster: 'grpc' },
      { name: 'ind', address: `127.0.0.1:${ports?.ind ?? 0}`, direction: 'inbound', cluster: 'prov' },
    ],
    clusters: [
      { name: 'app1', endpoints: [`127.0.0.1:${apps.h1.port}`] },
      { name: 'grpc', protocol: 'http2', endpoints: [`127.0.0.1:${apps.gport}`] },
      { name: 'prov', endpoints: [`127.0.0.1:${apps.dubbo.port}`] },
    ],
    authorization: rules,
    accessLog: { enabled: true, path: log },
  };
}

/** A client-side sidecar with identity `w`, one outbound listener per listener of B. */
function clientSidecar(w: Workload, b: RunningSluice): Promise<RunningSluice> {
  const principals = ['cluster.local/ns/shop/sa/orders'];
  return startSluice({
    tls: { certFile: w.certFile, keyFile: w.keyFile, caFile: w.caFile, inbound: { mode: 'disabled' } },
    listeners: [
      { name: 'out1', address: '127.0.0.1:0', cluster: 'b1' },
      { name: 'outg', address: '127.0.0.1:0', cluster: 'bg' },
      { name: 'outd', address: '127.0.0.1:0', cluster: 'bd' },
    ],
    clusters: [
      { name: 'b1', endpoints: [`127.0.0.1:${b.port('in1')}`], tls: { mode: 'mutual', principals } },
      { name: 'bg', endpoints: [`127.0.0.1:${b.port('ing')}`], tls: { mode: 'mutual', principals } },
      { name: 'bd', endpoints: [`127.0.0.1:${b.port('ind')}`], tls: { mode: 'mutual', principals } },
    ],
  });
}

function logLines(file: string): Array<Record<string, unknown>> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('principals over mTLS: sidecar to sidecar, direct mTLS clients, plaintext callers, foreign CAs', async (t) => {
  const apps = await applications();
  const log = path.join(pki.root, 'access.log');
  const b = await startSluice(serverDoc(apps, log, RULES));
  const a = await clientSidecar(frontend, b);
  const c = await clientSidecar(evil, b);
  t.teardown(async () => { await a.stop(); await c.stop(); await b.stop(); await apps.close(); });
  const authz = async () => {
    const m = await stats(b.admin);
    return {
      denyUntrusted: m.get('sluice_authz_denied_total{rule="no-untrusted"}') ?? 0,
      defaultDeny: m.get('sluice_authz_denied_total{rule="default_deny"}') ?? 0,
      allowFrontend: m.get('sluice_authz_allowed_total{rule="frontend-only"}') ?? 0,
    };
  };

  await t.test('through client sidecars: frontend served on every protocol, untrusted refused in each one\'s form', async (t) => {
    const before = { app: appRequests, grpc: grpcCalls, dubbo: apps.dubbo.calls() };
    const h = await curlAs(a.port('out1'), null);
    t.equal(h.status, 200, h.body);
    t.same(JSON.parse(h.body).xfcc, xfccOf(FRONTEND), 'the app gets the caller\'s identity');
    const g = await grpcAs(a.port('outg'), null);
    t.same(g, { code: grpc.status.OK, message: xfccOf(FRONTEND) });
    const d = await dubboAs(a.port('outd'), null);
    t.same([d.status, d.value], [20, xfccOf(FRONTEND)]);

    const hd = await curlAs(c.port('out1'), null);
    t.same([hd.status, hd.reason, hd.body], [403, 'denied', 'access denied\n'], 'HTTP: 403 with x-sluice-reason: denied');
    const gd = await grpcAs(c.port('outg'), null);
    t.same(gd, { code: grpc.status.PERMISSION_DENIED, message: 'access denied' }, 'gRPC: PERMISSION_DENIED');
    const dd = await dubboAs(c.port('outd'), null);
    t.equal(dd.status, 70, 'Dubbo: an error response');
    t.match(dd.error, DUBBO_DENIED);
    t.same({ app: appRequests - before.app, grpc: grpcCalls - before.grpc, dubbo: apps.dubbo.calls() - before.dubbo }, { app: 1, grpc: 1, dubbo: 1 },
      'only frontend\'s calls reached the applications');
    t.same(await authz(), { denyUntrusted: 3, defaultDeny: 0, allowFrontend: 3 });
  });

  await t.test('direct mTLS clients: curl --cert, grpc-js with client certificates, Dubbo on a TLS socket', async (t) => {
    const before = await authz();
    const ok = await curlAs(b.port('in1'), frontend);
    t.equal(ok.status, 200, ok.body);
    t.same(JSON.parse(ok.body), { xfcc: xfccOf(FRONTEND), principal: null });
    const denied = await curlAs(b.port('in1'), evil);
    t.same([denied.status, denied.reason], [403, 'denied']);
    const notListed = await curlAs(b.port('in1'), stranger);
    t.same([notListed.status, notListed.reason], [403, 'denied'], 'an identity of the bundle that no allow rule names');
    t.same(await grpcAs(b.port('ing'), frontend), { code: grpc.status.OK, message: xfccOf(FRONTEND) });
    t.equal((await grpcAs(b.port('ing'), evil)).code, grpc.status.PERMISSION_DENIED);
    const d = await dubboAs(b.port('ind'), frontend, { 'x-forwarded-client-cert': xfccOf(EVIL) });
    t.same([d.status, d.value], [20, xfccOf(FRONTEND)], 'the attachment the caller sent is replaced by its verified identity');
    const dd = await dubboAs(b.port('ind'), evil, { 'x-forwarded-client-cert': xfccOf(FRONTEND) });
    t.equal(dd.status, 70, 'an evil caller claiming frontend in an attachment is denied');
    const after = await authz();
    t.same({ deny: after.denyUntrusted - before.denyUntrusted, dflt: after.defaultDeny - before.defaultDeny, allow: after.allowFrontend - before.allowFrontend },
      { deny: 3, dflt: 1, allow: 3 });
  });

  await t.test('plaintext callers have no principal, whatever headers they send', async (t) => {
    const before = { app: appRequests, grpc: grpcCalls, dubbo: apps.dubbo.calls(), ...(await authz()) };
    const plain = await curlAs(b.port('in1'), null);
    t.same([plain.status, plain.reason], [403, 'denied'], 'the allow rule by principal does not match a plaintext caller');
    const forged = await curlAs(b.port('in1'), null, FORGED);
    t.same([forged.status, forged.reason], [403, 'denied'], 'forged identity headers make no principal');
    const g = await grpcAs(b.port('ing'), null, FORGED);
    t.equal(g.code, grpc.status.PERMISSION_DENIED, 'gRPC metadata neither');
    const d = await dubboAs(b.port('ind'), null, FORGED);
    t.equal(d.status, 70, 'Dubbo attachments neither');
    t.match(d.error, DUBBO_DENIED);
    const after = await authz();
    t.same({ app: appRequests - before.app, grpc: grpcCalls - before.grpc, dubbo: apps.dubbo.calls() - before.dubbo }, { app: 0, grpc: 0, dubbo: 0 }, 'nothing reached the applications');
    t.equal(after.defaultDeny - before.defaultDeny, 4, 'each refused as matching no allow rule');
    t.equal(after.denyUntrusted, before.denyUntrusted);
  });

  await t.test('a certificate of another CA is refused at the handshake: another trust domain, or the allowed SPIFFE ID forged', async (t) => {
    for (const [what, w] of [['other trust domain', otherTd], ['same SPIFFE ID, another CA', sameIdOtherCa]] as const) {
      const r = await curlAs(b.port('in1'), w);
      t.not(r.code, 0, `${what}: curl fails`);
      t.equal(r.status, 0, `${what}: no HTTP answer at all`);
      t.not((await grpcAs(b.port('ing'), w)).code, grpc.status.OK, `${what}: gRPC fails`);
    }
    // the refusal is counted by the worker as it closes the connection: the client may hear of it first
    const m = await waitFor(async () => {
      const m = await stats(b.admin);
      const n = (l: string) => m.get(`sluice_tls_inbound_refused_total{listener="${l}",reason="not_chained"}`) ?? 0;
      return n('in1') >= 2 && n('ing') >= 2 ? m : null;
    }, 5000, 'the refusals counted');
    t.equal(m.get('sluice_tls_inbound_refused_total{listener="in1",reason="not_chained"}'), 2, 'curl: one refusal each');
    t.ok((m.get('sluice_tls_inbound_refused_total{listener="ing",reason="not_chained"}') ?? 0) >= 2, 'grpc-js: refused at each attempt');
  });

  await t.test('the access log line names the caller\'s principal; a plaintext line has none', async (t) => {
    const lines = await waitFor(() => {
      const l = logLines(log);
      return l.length >= 17 ? l : null;
    }, 10_000, 'a line for each of the 17 requests so far');
    const of = (p: string | undefined) => lines.filter((l) => l.principal === p);
    t.ok(of(FRONTEND).some((l) => l.protocol === 'http1' && l.status === 200), 'frontend over HTTP/1.1');
    t.ok(of(FRONTEND).some((l) => l.protocol === 'grpc' && l.status === 200), 'frontend over gRPC');
    t.ok(of(FRONTEND).some((l) => l.protocol === 'dubbo' && l.status === 20), 'frontend over Dubbo');
    const evilLines = of(EVIL);
    t.ok(evilLines.length >= 6, 'every call of evil is logged with its principal');
    t.ok(evilLines.every((l) => l.authz === 'denied' && l.authzRule === 'no-untrusted'));
    const plain = lines.filter((l) => !('principal' in l));
    t.ok(plain.length >= 4, 'plaintext lines');
    t.ok(plain.every((l) => l.authzRule === 'default_deny'), 'every plaintext call was refused as unlisted');
  });

  await t.test('deny rules only: plaintext is served in permissive mode, and a deny by principal never matches it', async (t) => {
    const ports = { in1: b.port('in1'), ing: b.port('ing'), ind: b.port('ind') };
    await b.sluice.applyConfig(buildConfig(withTestDefaults(serverDoc(apps, log, [RULES[0]], ports)), 'deny only'));
    const before = await authz();
    const forged = await curlAs(b.port('in1'), null, { ...FORGED, 'x-forwarded-client-cert': xfccOf(EVIL), 'x-sluice-principal': EVIL });
    t.equal(forged.status, 200, 'a plaintext caller claiming the denied identity is served: it has no principal');
    t.same(JSON.parse(forged.body), { xfcc: null, principal: EVIL }, 'its x-forwarded-client-cert was removed (others pass as application headers)');
    const d = await dubboAs(b.port('ind'), null, { 'x-forwarded-client-cert': xfccOf(EVIL) });
    t.same([d.status, d.value], [20, 'none'], 'a Dubbo attachment of that name is removed too');
    t.equal((await curlAs(b.port('in1'), evil)).status, 403, 'the denied identity over mTLS is still refused');
    t.equal((await curlAs(b.port('in1'), stranger)).status, 200, 'without the allow rule other identities are served');
    const after = await authz();
    t.equal(after.denyUntrusted - before.denyUntrusted, 1, 'the deny rule matched the mTLS caller only');
  });
});
