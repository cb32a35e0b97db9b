/**
 * Workload identity: a certificate whose one URI SAN is a SPIFFE ID, its private key, and the
 * mesh's trust bundle (one or more CA certificates: during a CA rotation it holds the old and the
 * new CA). Pure: PEM text in, a checked identity or an IdentityError out. Nothing here touches a
 * file or a socket; src/tls/cert-source.ts reads files and src/tls/tls-contexts.ts builds the
 * secure contexts.
 *
 *   cert PEM ──▶ leaf [, intermediates...]   the first certificate is the workload's own
 *   key PEM  ──▶ private key                  must be the leaf's (checkPrivateKey)
 *   CA PEM   ──▶ roots                        every one a CA certificate
 *
 * A workload certificate is refused when it has no URI SAN that is a SPIFFE ID or more than one
 * URI SAN, when it is outside its validity window, when no chain through the given intermediates
 * ends at a root of the bundle, or when the key is not its key. Each refusal has a stable code
 * (`reason`), counted by whoever asked.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import tls from 'node:tls';
import { SluiceError } from '../errors';

export type RefusalReason = 'unparsable' | 'no_spiffe_id' | 'not_yet_valid' | 'expired' | 'not_chained' | 'key_mismatch' | 'bad_bundle' | 'unusable';
export const REFUSAL_REASONS: readonly RefusalReason[] = ['unparsable', 'no_spiffe_id', 'not_yet_valid', 'expired', 'not_chained', 'key_mismatch', 'bad_bundle', 'unusable'];

export class IdentityError extends SluiceError {
  constructor(readonly reason: RefusalReason, message: string) {
    super(`ERR_TLS_${reason.toUpperCase()}`, message);
  }
}

/** PEM blocks of one kind, in order. */
export function pemBlocks(text: string, label = 'CERTIFICATE'): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g');
  return text.match(re)?.map((b) => `${b}\n`) ?? [];
}

const SPIFFE = /^spiffe:\/\/([a-z0-9._-]+)(\/[^\s?#]*)?$/i;

/**
 * The URI SANs of a certificate. Node prints subjectAltName as `URI:a, DNS:b`, escaping (JSON
 * string form) any entry holding a comma or a quote, so a SAN can never be split into two.
 */
export function uriSans(cert: X509Certificate): string[] {
  const s = cert.subjectAltName;
  if (!s) return [];
  const out: string[] = [];
  // entries are `TYPE:value` or `TYPE:"json string"` separated by ", "
  const re = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    if (m[1] !== 'URI') continue;
    let v = m[2];
    if (v.startsWith('"')) { try { v = JSON.parse(v) as string; } catch { /* left as it is: it will not pass the SPIFFE check */ } }
    out.push(v);
  }
  return out;
}

/**
 * The certificate's SPIFFE ID without `spiffe://` (`cluster.local/ns/a/sa/b`), or why not: the
 * certificate must carry exactly one URI SAN, and it must be a SPIFFE ID.
 */
export function spiffeIdOf(cert: X509Certificate): { id: string } | { error: string } {
  const uris = uriSans(cert);
  if (uris.length === 0) return { error: 'has no URI SAN (a SPIFFE ID is required)' };
  if (uris.length > 1) return { error: `has ${uris.length} URI SANs (exactly one SPIFFE ID is required)` };
  const m = SPIFFE.exec(uris[0]);
  if (!m || !m[2] || m[2] === '/') return { error: `URI SAN "${uris[0]}" is not a SPIFFE ID (spiffe://<trust-domain>/<path>)` };
  return { id: uris[0].slice('spiffe://'.length) };
}

/** What Sluice shows and serves of an identity. */
export interface IdentityInfo {
  /** SPIFFE ID without the scheme. */
  id: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  /** ms since the epoch */
  notAfterMs: number;
  fingerprint256: string;
  issuer: string;
}

export interface Identity {
  info: IdentityInfo;
  /** The PEM texts, as loaded (leaf first, then intermediates). */
  certPem: string;
  keyPem: string;
  caPem: string;
  /** The trust bundle's CAs: subject and not-after of each, for /certs. */
  bundle: Array<{ subject: string; serial: string; notAfter: string }>;
}

function parseCerts(text: string, what: string, reason: RefusalReason): X509Certificate[] {
  const blocks = pemBlocks(text);
  if (blocks.length === 0) throw new IdentityError(reason, `${what} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try { return new X509Certificate(b); } catch (err) {
      throw new IdentityError(reason, `${what}: certificate ${i + 1} cannot be parsed: ${(err as Error).message}`);
    }
  });
}

/** `now` within the certificate's validity window, else the reason. */
export function validityProblem(cert: X509Certificate, now: number): { reason: RefusalReason; message: string } | null {
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (!(now >= from)) return { reason: 'not_yet_valid', message: `is not valid before ${new Date(from).toISOString()}` };
  if (!(now <= to)) return { reason: 'expired', message: `expired at ${new Date(to).toISOString()}` };
  return null;
}

/** Whether `leaf` chains, through `intermediates`, to a root of `roots` (signatures and validity). */
export function chainsTo(leaf: X509Certificate, intermediates: readonly X509Certificate[], roots: readonly X509Certificate[], now: number): boolean {
  let cur = leaf;
  const pool = [...intermediates];
  for (let depth = 0; depth <= 8; depth++) {
    for (const r of roots) {
      if (cur.checkIssued(r) && cur.verify(r.publicKey) && validityProblem(r, now) === null) return true;
    }
    const next = pool.findIndex((c) => c.ca && cur.checkIssued(c) && cur.verify(c.publicKey) && validityProblem(c, now) === null);
    if (next < 0) return false;
    cur = pool[next];
    pool.splice(next, 1);
  }
  return false;
}

/**
 * Checks a workload identity. Throws IdentityError with the reason; on success, the identity
 * with what /certs shows of it. `now`: ms since the epoch (tests pass their own).
 */
export function checkIdentity(certPem: string, keyPem: string, caPem: string, now = Date.now()): Identity {
  const roots = parseCerts(caPem, 'the trust bundle (caFile)', 'bad_bundle');
  roots.forEach((r, i) => {
    if (!r.ca) throw new IdentityError('bad_bundle', `the trust bundle (caFile): certificate ${i + 1} (${r.subject.replace(/\n/g, ', ')}) is not a CA certificate`);
  });
  const chain = parseCerts(certPem, 'the certificate (certFile)', 'unparsable');
  const leaf = chain[0];
  const sid = spiffeIdOf(leaf);
  if ('error' in sid) throw new IdentityError('no_spiffe_id', `the certificate ${sid.error}`);
  const v = validityProblem(leaf, now);
  if (v) throw new IdentityError(v.reason, `the certificate (${sid.id}) ${v.message}`);
  if (!chainsTo(leaf, chain.slice(1), roots, now)) {
    throw new IdentityError('not_chained', `the certificate (${sid.id}, issuer ${leaf.issuer.replace(/\n/g, ', ')}) is not signed by a CA of the trust bundle`);
  }
  let key: KeyObject;
  try { key = createPrivateKey(keyPem); } catch (err) {
    throw new IdentityError('key_mismatch', `the private key (keyFile) cannot be parsed: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(key)) throw new IdentityError('key_mismatch', `the private key (keyFile) is not the key of the certificate (${sid.id})`);
  // what the workers will do with it: a certificate X.509 can parse but TLS cannot use (an SM2 key
  // on an OpenSSL without SM2 TLS support) is refused here, not at the first handshake
  try {
    tls.createSecureContext({ cert: certPem, key: keyPem, ca: caPem });
  } catch (err) {
    throw new IdentityError('unusable', `the certificate (${sid.id}) cannot be used for TLS by this runtime's OpenSSL ${process.versions.openssl}: ${(err as Error).message}`);
  }
  return {
    info: {
      id: sid.id,
      serial: leaf.serialNumber,
      notBefore: new Date(Date.parse(leaf.validFrom)).toISOString(),
      notAfter: new Date(Date.parse(leaf.validTo)).toISOString(),
      notAfterMs: Date.parse(leaf.validTo),
      fingerprint256: leaf.fingerprint256,
      issuer: leaf.issuer.replace(/\n/g, ', '),
    },
    certPem, keyPem, caPem,
    bundle: roots.map((r) => ({ subject: r.subject.replace(/\n/g, ', '), serial: r.serialNumber, notAfter: new Date(Date.parse(r.validTo)).toISOString() })),
  };
}

/**
 * A peer's certificate as a TLS handshake gave it (DER): its SPIFFE ID, or why it has none.
 * Chain and validity were checked by OpenSSL against the bundle during the handshake.
 */
export function peerSpiffeId(raw: Buffer | undefined): { id: string } | { error: string } {
  if (!raw || raw.length === 0) return { error: 'presented no certificate' };
  let cert: X509Certificate;
  try { cert = new X509Certificate(raw); } catch { return { error: 'presented a certificate that cannot be parsed' }; }
  return spiffeIdOf(cert);
}

/**
 * A principal pattern as authorization rules and `tls.*.principals` write it: exact, or with one
 * `*` at the start (suffix match) or at the end (prefix match); `*` alone matches any identity.
 */
export function principalMatches(pattern: string, id: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('*')) return id.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith('*')) return id.endsWith(pattern.slice(1));
  return id === pattern;
}
