/**
 * Workload identity checks with real certificates made by the openssl command (src/tls/test-ca.ts).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { checkIdentity, IdentityError, principalMatches } from '../../src/tls/identity';
import { TestPki } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('one');
const other = pki.ca('two');
const caPem = readFileSync(path.join(ca, 'ca.pem'), 'utf8');
const otherPem = readFileSync(path.join(other, 'ca.pem'), 'utf8');

function refusal(fn: () => unknown): IdentityError {
  try { fn(); } catch (err) { if (err instanceof IdentityError) return err; throw err; }
  throw new Error('not refused');
}

t.test('a SPIFFE workload certificate signed by the bundle is accepted, with what /certs shows', async (t) => {
  const w = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
  const id = checkIdentity(w.cert, w.key, w.ca);
  t.equal(id.info.id, 'cluster.local/ns/shop/sa/orders');
  t.match(id.info.serial, /^[0-9A-F]+$/);
  t.ok(id.info.notAfterMs > Date.now());
  t.equal(id.bundle.length, 1);
});

t.test('a bundle with the old and the new CA accepts certificates of both', async (t) => {
  const bundle = caPem + otherPem;
  const a = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/x');
  const b = pki.issue(other, 'spiffe://cluster.local/ns/b/sa/y');
  t.equal(checkIdentity(a.cert, a.key, bundle).info.id, 'cluster.local/ns/a/sa/x');
  t.equal(checkIdentity(b.cert, b.key, bundle).info.id, 'cluster.local/ns/b/sa/y');
  t.equal(checkIdentity(b.cert, b.key, bundle).bundle.length, 2);
});

t.test('refusals, each with its reason', async (t) => {
  const good = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b');
  const noSan = pki.issue(ca, undefined, { dns: ['a.example'] });
  t.equal(refusal(() => checkIdentity(noSan.cert, noSan.key, caPem)).reason, 'no_spiffe_id');
  const two = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b', { extraUris: ['spiffe://cluster.local/ns/a/sa/c'] });
  const e2 = refusal(() => checkIdentity(two.cert, two.key, caPem));
  t.equal(e2.reason, 'no_spiffe_id');
  t.match(e2.message, /2 URI SANs/);
  const http = pki.issue(ca, undefined, { extraUris: ['https://cluster.local/ns/a'] });
  t.match(refusal(() => checkIdentity(http.cert, http.key, caPem)).message, /not a SPIFFE ID/);
  const expired = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b', { notBefore: new Date(Date.now() - 2 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  const ee = refusal(() => checkIdentity(expired.cert, expired.key, caPem));
  t.equal(ee.reason, 'expired');
  t.equal(ee.code, 'ERR_TLS_EXPIRED');
  const future = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b', { notBefore: new Date(Date.now() + 86_400_000), days: 2 });
  t.equal(refusal(() => checkIdentity(future.cert, future.key, caPem)).reason, 'not_yet_valid');
  t.equal(refusal(() => checkIdentity(good.cert, good.key, otherPem)).reason, 'not_chained');
  const another = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b');
  t.equal(refusal(() => checkIdentity(good.cert, another.key, caPem)).reason, 'key_mismatch');
  t.equal(refusal(() => checkIdentity(good.cert, 'not a key', caPem)).reason, 'key_mismatch');
  t.equal(refusal(() => checkIdentity('garbage', good.key, caPem)).reason, 'unparsable');
  t.equal(refusal(() => checkIdentity(good.cert, good.key, '')).reason, 'bad_bundle');
  // a workload certificate is no trust anchor
  t.equal(refusal(() => checkIdentity(good.cert, good.key, good.cert)).reason, 'bad_bundle');
});

t.test('principal patterns: exact, prefix *, suffix *', async (t) => {
  t.ok(principalMatches('cluster.local/ns/a/sa/b', 'cluster.local/ns/a/sa/b'));
  t.notOk(principalMatches('cluster.local/ns/a/sa/b', 'cluster.local/ns/a/sa/bc'));
  t.ok(principalMatches('cluster.local/ns/a/*', 'cluster.local/ns/a/sa/x'));
  t.notOk(principalMatches('cluster.local/ns/a/*', 'cluster.local/ns/ab/sa/x'));
  t.ok(principalMatches('*/sa/x', 'cluster.local/ns/a/sa/x'));
  t.ok(principalMatches('*', 'anything'));
});
