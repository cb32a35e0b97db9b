/**
 * A thread's TLS: the secure contexts of the identity in force (rebuilt when the mailbox has a
 * newer one), peer checks, inbound termination over a handed-off socket, and the upstream session
 * cache. One per WorkerRuntime; nothing here is shared between threads but the mailbox.
 *
 *   inbound   raw socket (first bytes 16 03, unshifted) ─▶ TLSSocket (server, client cert
 *             requested) ─▶ 'secure' ─▶ peer chain checked against the bundle, one SPIFFE ID ─▶
 *             the caller's principal, or a refusal with its reason
 *   outbound  dial ─▶ TLSSocket (client, our identity, the session of the last connection to the
 *             same endpoint) ─▶ OpenSSL checks the chain ─▶ checkServerIdentity: one SPIFFE ID,
 *             one the config expects ─▶ 'connect' for the pool
 *
 * Inbound, OpenSSL verifies the caller's chain against the bundle. When it accepts, only the leaf's
 * SPIFFE ID is ours to check (cached by fingerprint). When it refuses, our code checks the chain
 * again, so that the refusal says why (expired, another CA, no SPIFFE ID); that result is cached
 * per chain for the generation, so a repeated handshake costs a hash, not a signature check.
 */
import crypto, { X509Certificate, createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { chainsTo, pemBlocks, principalMatches, spiffeIdOf, validityProblem } from './identity';
import type { IdentityMailbox, IdentityMessage } from './identity-mailbox';
import { adoptDirectRead } from '../net/direct-read';
import { loadNative } from '../net/native';
import { addDeadline, clearDeadline, type DeadlineList, type Timed } from '../exchange/deadlines';

export type PeerRefusal = 'no_identity' | 'no_client_cert' | 'not_chained' | 'expired' | 'not_yet_valid' | 'no_spiffe_id'
  | 'principal_mismatch' | 'handshake_failed' | 'handshake_timeout';
export const PEER_REFUSALS: readonly PeerRefusal[] = ['no_identity', 'no_client_cert', 'not_chained', 'expired', 'not_yet_valid', 'no_spiffe_id',
  'principal_mismatch', 'handshake_failed', 'handshake_timeout'];

export type PeerCheck = { id: string } | { reason: PeerRefusal; message: string };

/**
 * What an inbound connection may negotiate, in the order Sluice prefers (OpenSSL picks the first
 * of these the client offers). A client that offers both is served HTTP/1.1 unless the listener's
 * upstream speaks HTTP/2: with an upstream protocol of `auto` the application gets what the client
 * spoke, and an application behind a sidecar is HTTP/1.1 far more often than HTTP/2 alone (curl
 * offers both; gRPC clients and Sluice's own HTTP/2 pools offer h2 alone, and get it).
 */
const INBOUND_ALPN_H1_FIRST = ['http/1.1', 'h2'];
const INBOUND_ALPN_H2_FIRST = ['h2', 'http/1.1'];
const MAX_CACHED = 4096;

interface Verified { id: string; notBeforeMs: number; notAfterMs: number }

/** What one identity gives a thread. */
export class Generation {
  readonly id: string;
  /** What it was made of: retirement compares a connection's generation with the one in force. */
  readonly certPem: string;
  readonly keyPem: string;
  readonly caPem: string;
  readonly server: tls.SecureContext;
  /** The server context's address when its sessions are kept in the process (serverSessionsInProcess), else null. */
  readonly sessionStore: string | null;
  readonly client: tls.SecureContext;
  private readonly roots: X509Certificate[];
  private readonly verified = new Map<string, Verified | { reason: PeerRefusal; message: string }>();
  /** Leaves of chains OpenSSL verified, by fingerprint: their SPIFFE ID and validity. */
  private readonly leaves = new Map<string, Verified | { reason: PeerRefusal; message: string }>();
  /** Upstream TLS sessions by endpoint, resumed on the next connection there. */
  readonly sessions = new Map<string, Buffer>();

  constructor(readonly seq: number, m: IdentityMessage) {
    this.id = m.id;
    this.certPem = m.certPem;
    this.keyPem = m.keyPem;
    this.caPem = m.caPem;
    const ticketKeys = Buffer.from(m.ticketKeys);
    const ciphers = m.ciphers || undefined;
    this.roots = pemBlocks(m.caPem).map((p) => new X509Certificate(p));
    const cert = withChain(m.certPem, this.roots);
    // the identity's own: a session made under one identity (its trust bundle) never resumes under another
    const sessionIdContext = createHash('sha256').update(ticketKeys).digest('hex').slice(0, 32);
    this.server = tls.createSecureContext({ cert, key: m.keyPem, ca: m.caPem, ticketKeys, sessionIdContext, minVersion: 'TLSv1.2', ciphers });
    oneSessionTicket(this.server);
    this.sessionStore = serverSessionsInProcess(this.server, sessionIdContext);
    this.client = tls.createSecureContext({ cert, key: m.keyPem, ca: m.caPem, minVersion: 'TLSv1.2', ciphers });
  }

  /**
   * The fast path of a handshake OpenSSL already verified against this generation's bundle
   * (its verify result: chain, signatures, validity): only the leaf's SPIFFE ID is ours to check,
   * cached by the leaf's SHA-256. `leaf` is the peer's certificate (DER), read from the session
   * (see peerLeaf).
   */
  checkAuthorizedLeaf(leaf: Buffer | null, now = Date.now()): PeerCheck {
    if (!leaf) return { reason: 'no_client_cert', message: 'the peer presented no certificate' };
    const key = sha256(leaf);
    let v = this.leaves.get(key);
    if (!v) {
      let cert: X509Certificate | null = null;
      try { cert = new X509Certificate(leaf); } catch { /* OpenSSL verified it: cannot happen */ }
      const sid = cert ? spiffeIdOf(cert) : { error: 'cannot be parsed' };
      v = 'error' in sid
        ? { reason: 'no_spiffe_id', message: `the peer's certificate ${sid.error}` }
        : { id: sid.id, notBeforeMs: Date.parse(cert!.validFrom), notAfterMs: Date.parse(cert!.validTo) };
      if (this.leaves.size >= MAX_CACHED) this.leaves.delete(this.leaves.keys().next().value as string);
      this.leaves.set(key, v);
    }
    return this.inWindow(v, now);
  }

  /** A peer's certificate chain (leaf first, DER) against the bundle; cached per chain. */
  checkPeer(chain: readonly Buffer[], now = Date.now()): PeerCheck {
    if (chain.length === 0) return { reason: 'no_client_cert', message: 'the peer presented no certificate' };
    const h = createHash('sha256');
    for (const c of chain) h.update(c);
    const key = h.digest('base64');
    let v = this.verified.get(key);
    if (!v) {
      v = this.verify(chain, now);
      if (this.verified.size >= MAX_CACHED) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(key, v);
    }
    return this.inWindow(v, now);
  }

  private inWindow(v: Verified | { reason: PeerRefusal; message: string }, now: number): PeerCheck {
    if ('reason' in v) return v;
    if (now < v.notBeforeMs) return { reason: 'not_yet_valid', message: `the peer's certificate (${v.id}) is not valid yet` };
    if (now > v.notAfterMs) return { reason: 'expired', message: `the peer's certificate (${v.id}) expired` };
    return { id: v.id };
  }

  private verify(chain: readonly Buffer[], now: number): Verified | { reason: PeerRefusal; message: string } {
    let certs: X509Certificate[];
    try { certs = chain.map((c) => new X509Certificate(c)); } catch {
      return { reason: 'handshake_failed', message: 'the peer presented a certificate that cannot be parsed' };
    }
    const leaf = certs[0];
    const sid = spiffeIdOf(leaf);
    if ('error' in sid) return { reason: 'no_spiffe_id', message: `the peer's certificate ${sid.error}` };
    if (!chainsTo(leaf, certs.slice(1), this.roots, now)) {
      const vp = validityProblem(leaf, now);
      if (vp && chainsTo(leaf, certs.slice(1), this.roots, vp.reason === 'expired' ? Date.parse(leaf.validTo) : Date.parse(leaf.validFrom))) {
        return { reason: vp.reason === 'expired' ? 'expired' : 'not_yet_valid', message: `the peer's certificate (${sid.id}) ${vp.message}` };
      }
      return { reason: 'not_chained', message: `the peer's certificate (${sid.id}, issuer ${leaf.issuer.replace(/\n/g, ', ')}) is not signed by a CA of the trust bundle` };
    }
    return { id: sid.id, notBeforeMs: Date.parse(leaf.validFrom), notAfterMs: Date.parse(leaf.validTo) };
  }
}

/**
 * The certificate as the secure contexts take it: with the chain it is sent with. A certificate
 * file that holds only the leaf leaves OpenSSL to build the chain from the trust bundle, and it
 * does so on every handshake it sends the certificate in (a chain verification, the CA's
 * signature checked: about 1.5% of a full handshake's CPU, server and client alike). The same
 * chain, found once here (leaf, then each issuer in the bundle up to the self-signed root, as
 * OpenSSL sends it), is given with the certificate, so the handshake only copies it. A file that
 * holds its own chain is taken as it is (OpenSSL then sends that, and builds nothing); a leaf with
 * no path through the bundle (the main thread refuses such an identity) is left to OpenSSL.
 */
export function withChain(certPem: string, roots: readonly X509Certificate[]): string {
  const blocks = pemBlocks(certPem);
  if (blocks.length !== 1) return certPem;
  let cur: X509Certificate;
  try { cur = new X509Certificate(blocks[0]); } catch { return certPem; }
  const path: string[] = [];
  for (let depth = 0; depth < 8; depth++) {
    const issuer = roots.find((r) => cur.checkIssued(r) && cur.verify(r.publicKey));
    if (!issuer) return certPem;
    path.push(issuer.toString());
    if (issuer.checkIssued(issuer)) return blocks[0] + path.join('');
    cur = issuer;
  }
  return certPem;
}

/**
 * A TLS 1.3 server sends OpenSSL's default of two session tickets after each full handshake (none
 * after a resumed one: the ticket it was offered stays good); a client of Sluice's keeps only the
 * last, so one is enough, and each costs the server a copy of the session with the peer's
 * certificate decoded again. Node has no option for it: the project's addon sets it on the
 * context's SSL_CTX (src/net/native.ts). Without the addon, two it is.
 */
export function oneSessionTicket(ctx: tls.SecureContext): boolean {
  const native = loadNative();
  const addr = contextAddress(ctx);
  return typeof native?.tlsSetNumTickets === 'function' && addr !== null && native.tlsSetNumTickets(addr, 1);
}

/** The SSL_CTX's address (hex) of a SecureContext, or null. Node-API cannot read an External that Node's core made; Node shows its address. */
function contextAddress(ctx: tls.SecureContext): string | null {
  const external = (ctx as unknown as { context?: { _external?: unknown } }).context?._external;
  if (external === undefined) return null;
  const m = /^\[External: ([0-9a-f]{1,16})\]$/.exec(inspect(external));
  return m === null ? null : m[1];
}

/** Sessions the process keeps for inbound TLS (the addon's store, shared by all threads): at most this many. */
export const SERVER_SESSION_SLOTS = 4096;

/**
 * Inbound sessions kept in the process, the tickets being their IDs (stateful tickets), instead
 * of sessions encrypted into the tickets. With OpenSSL 3.0 a stateless ticket costs the server an
 * encoding of the session, a decoding of it again (the peer's certificate and its public key:
 * about 100 µs of OSSL_DECODER set-up) and an encryption when it is sent, and a decryption and the
 * same decoding on every resumption; a stateful one costs an ID and a lookup, so a full handshake
 * and a resumed one both get about 100 µs cheaper. The store is the addon's, one for every
 * thread's contexts (a caller resumes on whichever worker it lands), bounded to
 * SERVER_SESSION_SLOTS sessions; a session goes back only to a context of the same identity
 * (`sessionIdContext`), and a resumed connection gets no new ticket (the client keeps the one it
 * has, as with Node's stateless tickets, which OpenSSL does not renew). Without the addon's
 * function, stateless tickets as before.
 */
export function serverSessionsInProcess(ctx: tls.SecureContext, sessionIdContext: string): string | null {
  const native = loadNative();
  const addr = contextAddress(ctx);
  return typeof native?.tlsServerSessions === 'function' && typeof native.tlsServerSessionsRearm === 'function' && addr !== null
    && native.tlsServerSessions(addr, Buffer.from(sessionIdContext, 'latin1'), SERVER_SESSION_SLOTS) ? addr : null;
}

/**
 * Node sets its own session callbacks on a context each time it makes a TLS socket of it: after
 * each inbound TLSSocket, the store's go back, before the socket reads (Node reads what is
 * buffered on the next tick). Each thread has its own contexts, so nothing runs between the two.
 */
export function rearmServerSessions(gen: Generation): void {
  if (gen.sessionStore !== null) loadNative()!.tlsServerSessionsRearm!(gen.sessionStore);
}

const sha256: (b: Buffer) => string = typeof (crypto as { hash?: unknown }).hash === 'function'
  ? (b) => (crypto as unknown as { hash(alg: string, data: Buffer, enc: 'base64'): string }).hash('sha256', b, 'base64')
  : (b) => createHash('sha256').update(b).digest('base64');

/**
 * The peer's certificate (DER) on a TLS socket whose handshake is done, or null when it sent none.
 * Read from the session as OpenSSL encodes it (SSL_SESSION_ASN1: a SEQUENCE whose `[3] EXPLICIT
 * Certificate` is the peer's leaf), which costs about 11 µs; getPeerCertificate() builds an object
 * of every field with three fingerprints, about 70 µs (getPeerX509Certificate() 160 µs: OpenSSL 3.0
 * decodes the certificate again, public key included, to copy it). Where the session cannot be
 * read that way, getPeerCertificate() it is.
 */
export function peerLeaf(s: tls.TLSSocket): Buffer | null {
  const session = s.getSession();
  const leaf = session ? certOfSession(session) : undefined;
  if (leaf !== undefined) return leaf;
  const c = s.getPeerCertificate(false) as tls.PeerCertificate | Record<string, never>;
  return c && 'raw' in c && c.raw ? c.raw : null;
}

/** One DER element at `at`: where its content starts and ends; null if it does not fit in `b`. */
function derElement(b: Buffer, at: number): { tag: number; start: number; end: number } | null {
  if (at + 2 > b.length) return null;
  const tag = b[at];
  let len = b[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || start + n > b.length) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[start + i];
    start += n;
  }
  return start + len > b.length ? null : { tag, start, end: start + len };
}

/**
 * The peer certificate of an encoded session: the element tagged [3] (0xa3) of the outer SEQUENCE,
 * holding one Certificate SEQUENCE. null: the session has none (no client certificate);
 * undefined: not an encoding this reads.
 */
export function certOfSession(der: Buffer): Buffer | null | undefined {
  const outer = derElement(der, 0);
  if (!outer || outer.tag !== 0x30) return undefined;
  for (let at = outer.start; at < outer.end;) {
    const e = derElement(der, at);
    if (!e || e.end > outer.end) return undefined;
    if (e.tag === 0xa3) {
      const cert = derElement(der, e.start);
      return cert && cert.tag === 0x30 && cert.end === e.end ? der.subarray(e.start, cert.end) : undefined;
    }
    at = e.end;
  }
  return null;
}

/** The DER chain a TLS socket's peer presented, leaf first (the trust anchor OpenSSL added left out only if it is the peer's own). */
export function peerChain(s: tls.TLSSocket): Buffer[] {
  const leaf = s.getPeerCertificate(true) as tls.DetailedPeerCertificate | Record<string, never>;
  if (!leaf || !('raw' in leaf) || !leaf.raw) return [];
  const out: Buffer[] = [leaf.raw];
  let cur = leaf as tls.DetailedPeerCertificate;
  for (let i = 0; i < 8 && cur.issuerCertificate && cur.issuerCertificate !== cur && cur.issuerCertificate.raw; i++) {
    cur = cur.issuerCertificate;
    if (out.some((b) => b.equals(cur.raw))) break;
    out.push(cur.raw);
  }
  return out;
}

/**
 * OpenSSL verified the peer's chain against the secure context's bundle (on a resumed session:
 * when the session was made, under the same identity, since ticket keys and the session ID
 * context that keys the process's session store are per identity). A
 * TLSSocket made by hand never sets `authorized` (tls.Server does, from this same result), so it
 * is read here; where the runtime does not offer it, the answer is no and the slow path decides.
 */
function opensslVerified(s: tls.TLSSocket): boolean {
  const h = (s as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  return typeof h?.verifyError === 'function' && h.verifyError() === null;
}

export type Terminated =
  | { ok: true; socket: tls.TLSSocket; principal: string; ownId: string; resumed: boolean; alpn: string | false; gen: Generation }
  | { ok: false; reason: PeerRefusal; message: string };

/** What an upstream connection needs to leave as mTLS. */
export interface OutboundTls {
  /** Allowed peer identities (patterns); null: any identity of the bundle. */
  readonly principals: readonly string[] | null;
  readonly handshakeTimeoutMs: number;
  readonly onHandshake: (resumed: boolean) => void;
  readonly onRefused: (reason: PeerRefusal) => void;
}

/** An open upstream mTLS connection: the identity it was made with, and the pool it serves. */
export interface OutboundConnection { readonly gen: Generation; readonly group: string }

const HANDSHAKE = Symbol('handshake');
type HandshakingSocket = tls.TLSSocket & { [HANDSHAKE]?: InboundHandshake | null };

/**
 * One inbound handshake under way: settled once (the caller checked, or refused with its reason).
 * No closures and no timer of its own per connection: the socket's listeners are module-level
 * functions that find it through HANDSHAKE, and the timeout is an entry of the thread's deadline
 * list for that duration (src/exchange/deadlines.ts).
 */
class InboundHandshake implements Timed {
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;
  dlList: DeadlineList | null = null;

  constructor(
    private readonly s: HandshakingSocket, private readonly gen: Generation, private readonly timeoutMs: number,
    private readonly done: (r: Terminated) => void,
  ) {}

  finish(r: Terminated): void {
    const { s } = this;
    if (s[HANDSHAKE] !== this) return;
    s[HANDSHAKE] = null;
    clearDeadline(this);
    s.removeListener('close', onHandshakeClose);
    s.removeListener('secure', onHandshakeSecure);
    if (!r.ok) s.destroy();
    this.done(r);
  }

  onDeadline(): void {
    this.finish({ ok: false, reason: 'handshake_timeout', message: `no TLS handshake within ${this.timeoutMs} ms` });
  }

  secure(): void {
    const { s, gen } = this;
    const check = opensslVerified(s) ? gen.checkAuthorizedLeaf(peerLeaf(s)) : gen.checkPeer(peerChain(s));
    if ('reason' in check) { this.finish({ ok: false, ...check }); return; }
    // what comes out of the TLS socket is read as a plaintext connection's bytes are: through the thread's buffer
    adoptDirectRead(s);
    this.finish({ ok: true, socket: s, principal: check.id, ownId: gen.id, resumed: s.isSessionReused(), alpn: s.alpnProtocol ?? false, gen });
  }
}

/** Errors during the handshake refuse the caller; after it, they only end the socket (its session has its own listener). */
function onHandshakeError(this: HandshakingSocket, err: NodeJS.ErrnoException): void {
  const h = this[HANDSHAKE];
  if (h) h.finish({ ok: false, reason: err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' ? 'no_client_cert' : 'handshake_failed', message: err.message });
  else this.destroy();
}

function onHandshakeClose(this: HandshakingSocket): void {
  this[HANDSHAKE]?.finish({ ok: false, reason: 'handshake_failed', message: 'the connection closed during the handshake' });
}

function onHandshakeSecure(this: HandshakingSocket): void {
  this[HANDSHAKE]?.secure();
}

export class TlsRuntime {
  private gen: Generation | null = null;
  private failedSeq = -1;
  /** Open upstream mTLS connections, for retirement's time cap. */
  private readonly outbound = new Map<net.Socket, OutboundConnection>();

  constructor(private readonly mailbox: IdentityMailbox, private readonly onBuildError: (err: Error) => void = () => {}) {}

  /** The identity in force, or null when none was installed. Cheap when nothing changed (one atomic load). */
  current(): Generation | null {
    const seq = this.mailbox.seq;
    if (this.gen && this.gen.seq === seq) return this.gen;
    if (seq === 0 || seq === this.failedSeq) return this.gen;
    const m = this.mailbox.read();
    if (!m) return this.gen;
    try {
      this.gen = new Generation(m.seq, m.value);
    } catch (err) {
      // the main thread checked it; an identity OpenSSL will not load keeps the previous one here
      this.failedSeq = m.seq;
      this.onBuildError(err as Error);
    }
    return this.gen;
  }

  /**
   * Terminates TLS on a handed-off socket whose first bytes (a ClientHello, unshifted back) are
   * waiting in it. `done` is called once: with the decrypted socket and the caller's identity, or
   * with the reason the caller was refused (the socket is then destroyed). `preferH2`: a client
   * that offers both h2 and http/1.1 gets h2 (the listener's upstream speaks HTTP/2).
   */
  terminate(raw: net.Socket, handshakeTimeoutMs: number, done: (r: Terminated) => void, preferH2 = false): void {
    const gen = this.current();
    if (!gen) {
      raw.destroy();
      done({ ok: false, reason: 'no_identity', message: 'no workload identity installed' });
      return;
    }
    const s = new tls.TLSSocket(raw, {
      isServer: true, secureContext: gen.server, requestCert: true, rejectUnauthorized: false, ALPNProtocols: preferH2 ? INBOUND_ALPN_H2_FIRST : INBOUND_ALPN_H1_FIRST,
    }) as HandshakingSocket;
    rearmServerSessions(gen);
    const h = new InboundHandshake(s, gen, handshakeTimeoutMs, done);
    s[HANDSHAKE] = h;
    addDeadline(h, handshakeTimeoutMs, performance.now());
    s.on('error', onHandshakeError);
    s.once('close', onHandshakeClose);
    s.once('secure', onHandshakeSecure);
  }

  /**
   * Opens an mTLS connection to an upstream. Like net.connect, the socket is returned at once;
   * its 'connect' comes only once the handshake and the peer's identity check are done, so a pool
   * counts a connection only when requests can go on it, and a refused peer is a connect failure.
   */
  connect(host: string, port: number, o: OutboundTls, alpn: readonly string[] | undefined, allowHalfOpen: boolean, group = '', direct = false): net.Socket {
    const gen = this.current();
    if (!gen) {
      const s = new net.Socket();
      process.nextTick(() => { o.onRefused('no_identity'); s.destroy(Object.assign(new Error('no workload identity installed for mTLS'), { code: 'ERR_TLS_NO_IDENTITY' })); });
      return s;
    }
    const sessionKey = `${host}:${port}`;
    /** Why checkServerIdentity refused the peer, if it did. */
    let refused: PeerRefusal | null = null;
    const raw = net.connect({ host, port, noDelay: true, allowHalfOpen });
    const c = tls.connect({
      socket: raw, secureContext: gen.client, ALPNProtocols: alpn ? [...alpn] : undefined, session: gen.sessions.get(sessionKey),
      rejectUnauthorized: true, allowHalfOpen,
      checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => {
        // the chain was checked by OpenSSL against the bundle; here: one SPIFFE ID, and one the config expects
        const sid = cert.raw ? spiffeIdOf(new X509Certificate(cert.raw)) : { error: 'presented no certificate' };
        if ('error' in sid) { refused = 'no_spiffe_id'; return new Error(`the upstream's certificate ${sid.error}`); }
        if (o.principals && !o.principals.some((p) => principalMatches(p, sid.id))) {
          refused = 'principal_mismatch';
          return Object.assign(new Error(`the upstream's identity ${sid.id} is not one of ${o.principals.join(', ')}`), { code: 'ERR_TLS_PRINCIPAL_MISMATCH' });
        }
        return undefined;
      },
    } as tls.ConnectionOptions);
    // decrypted bytes through the thread's buffer, for a caller that takes them with setReadSink (src/net/direct-read.ts)
    if (direct) adoptDirectRead(c);
    this.outbound.set(c, { gen, group });
    c.once('close', () => this.outbound.delete(c));
    c.on('session', (s: Buffer) => {
      if (gen.sessions.size >= MAX_CACHED && !gen.sessions.has(sessionKey)) gen.sessions.delete(gen.sessions.keys().next().value as string);
      gen.sessions.set(sessionKey, s);
    });
    // the TCP-level 'connect' starts the handshake (tls's own listener); the pool's listeners hear it once secure
    const internal = c.listeners('connect') as Array<() => void>;
    c.removeAllListeners('connect');
    let secure = false;
    let counted = false;
    const ownEmit = c.emit;
    const emit = ownEmit.bind(c) as (ev: string | symbol, ...args: unknown[]) => boolean;
    c.emit = ((ev: string | symbol, ...args: unknown[]): boolean => {
      if (ev === 'connect' && !secure) { for (const f of internal) f.call(c); return true; }
      if (ev === 'secureConnect') {
        secure = true;
        clearTimeout(timer);
        // from here on every event ('data' for each response) goes out as on any socket, not through this
        c.emit = ownEmit;
        o.onHandshake(c.isSessionReused());
        emit(ev, ...args);
        return emit('connect');
      }
      if (ev === 'error' && !secure && !counted) {
        const code = String((args[0] as NodeJS.ErrnoException | undefined)?.code ?? '');
        const why: PeerRefusal | null = refused ?? (code === 'CERT_HAS_EXPIRED' ? 'expired' : code === 'CERT_NOT_YET_VALID' ? 'not_yet_valid'
          : /CERT|SELF_SIGNED|UNABLE_TO/.test(code) ? 'not_chained' : code.startsWith('ERR_SSL') ? 'handshake_failed' : null);
        if (why) { counted = true; o.onRefused(why); }
      }
      return emit(ev, ...args);
    }) as typeof c.emit;
    const timer = setTimeout(() => {
      if (secure) return;
      counted = true;
      o.onRefused('handshake_timeout');
      c.destroy(Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }));
    }, o.handshakeTimeoutMs);
    timer.unref();
    // name lookups of the raw socket are logged by dial
    (c as unknown as { rawSocket: net.Socket }).rawSocket = raw;
    return c;
  }

  /** The open upstream mTLS connections that `pick` selects, as they are now (retirement's time cap closes what is left of them). */
  openOutbound(pick: (c: OutboundConnection) => boolean): net.Socket[] {
    const out: net.Socket[] = [];
    for (const [s, c] of this.outbound) if (pick(c)) out.push(s);
    return out;
  }
}
