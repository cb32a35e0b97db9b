/**
 * The tls sections of the config: every bad value refused with its path; destinations matched.
 */
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { ConfigError } from '../../src/errors';
import { MeshDestinations } from '../../src/tls/tls-config';

function issues(doc: Record<string, unknown>): string[] {
  try { buildConfig(doc); } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}

const inbound = { name: 'in', address: '127.0.0.1:9000', direction: 'inbound', cluster: 'app' };
const app = { name: 'app', endpoints: ['127.0.0.1:8080'] };

t.test('defaults: permissive inbound, outbound off', async (t) => {
  const c = buildConfig({ tls: { certFile: 'c', keyFile: 'k', caFile: 'a' }, listeners: [inbound], clusters: [app] });
  t.match(c.tls, { inbound: { mode: 'permissive', ports: {} }, outbound: { mode: 'disabled', destinations: [] }, watchIntervalMs: 1000, handshakeTimeoutMs: 10_000,
    retirement: { onCertificateChange: false, onTrustBundleChange: false, timeoutMs: 30_000 } });
  t.equal(buildConfig({ listeners: [inbound], clusters: [app] }).tls, undefined);
});

t.test('every bad value has its path', async (t) => {
  t.same(issues({ tls: { certFile: 'c' }, listeners: [inbound], clusters: [app] }), [
    '/tls/caFile: is required with certFile (the three files name one identity)',
    '/tls/keyFile: is required with certFile (the three files name one identity)',
  ]);
  t.same(issues({ tls: { inbound: { mode: 'strictest' } }, listeners: [inbound], clusters: [app] }), ['/tls/inbound/mode: must be one of strict, permissive, disabled']);
  t.same(issues({ tls: { inbound: { ports: { 99999: 'strict', abc: 'strict' } } }, listeners: [inbound], clusters: [app] }), [
    '/tls/inbound/ports/99999: is not a port (1-65535)',
    '/tls/inbound/ports/abc: is not a port (1-65535)',
  ]);
  t.same(issues({ tls: { outbound: { mode: 'mutual', destinations: ['10.0.0.0/33', { cidr: 'ten' }] } }, listeners: [inbound], clusters: [app] }), [
    '/tls/outbound/destinations/0: "10.0.0.0/33": the prefix length must be 0 to 32',
    '/tls/outbound/destinations/1/cidr: "ten" is not an address range (e.g. 10.0.0.0/8 or fd00::/8)',
  ]);
  t.same(issues({ tls: { outbound: { mode: 'mutual' } }, listeners: [inbound], clusters: [app] }), ['/tls/outbound/destinations: mode mutual needs the destinations that are mesh peers']);
  t.same(issues({ listeners: [inbound], clusters: [{ ...app, tls: { mode: 'mutual' } }] }), ['/clusters/0/tls: mode mutual needs the tls section (the identity to present)']);
  t.same(issues({ tls: {}, listeners: [inbound], clusters: [{ ...app, tls: { mode: 'mutual', principals: [] } }] }), ['/clusters/0/tls/principals: must NOT have fewer than 1 items']);
  t.same(issues({ tls: {}, listeners: [{ ...inbound, direction: 'outbound', tls: { mode: 'strict' } }], clusters: [app] }), ['/listeners/0/tls: only inbound listeners terminate mTLS']);
  t.same(issues({ tls: {}, listeners: [{ ...inbound, protocol: 'tcp', tls: { mode: 'strict' } }], clusters: [app] }), ['/listeners/0/tls/mode: strict needs protocol detection (protocol: tcp never looks at the bytes)']);
  t.same(issues({ tls: { certfile: 'x' }, listeners: [inbound], clusters: [app] }), ['/tls/certfile: is not a known field']);
  t.same(issues({ tls: { retirement: { timeoutMs: -1, onCertificateChange: 'yes', onRotation: true } }, listeners: [inbound], clusters: [app] }), [
    '/tls/retirement/onCertificateChange: must be boolean',
    '/tls/retirement/onRotation: is not a known field',
    '/tls/retirement/timeoutMs: must be >= 0',
  ]);
});

t.test('cipher suites: one this runtime cannot negotiate (the SM suites on Node 20) refuses the config', async (t) => {
  const got = issues({ tls: { cipherSuites: ['TLS_AES_128_GCM_SHA256', 'TLS_SM4_GCM_SM3', 'A:B'] }, listeners: [inbound], clusters: [app] });
  t.equal(got.length, 2);
  t.match(got[0], /^\/tls\/cipherSuites\/1: "TLS_SM4_GCM_SM3" is not a cipher suite this runtime's OpenSSL .* can negotiate \(national cryptography/);
  t.match(got[1], /^\/tls\/cipherSuites\/2: "A:B" is not one cipher suite name/);
  t.same(issues({ tls: { cipherSuites: ['TLS_CHACHA20_POLY1305_SHA256', 'ECDHE-ECDSA-AES128-GCM-SHA256'] }, listeners: [inbound], clusters: [app] }), []);
});

t.test('mesh destinations: ranges, with or without ports, IPv4 and IPv6', async (t) => {
  const d = new MeshDestinations(['10.0.0.0/8', { cidr: '192.168.1.0/24', ports: [8080] }, 'fd00::/8']);
  t.ok(d.matches('10.2.3.4', 80));
  t.notOk(d.matches('11.0.0.1', 80));
  t.ok(d.matches('192.168.1.9', 8080));
  t.notOk(d.matches('192.168.1.9', 8081));
  t.ok(d.matches('fd00::1', 443));
  t.notOk(d.matches('not-an-ip', 80));
});
