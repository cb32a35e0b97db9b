/**
 * `sluice certs ca` and `sluice certs issue`, run as a user runs them.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { checkIdentity } from '../../src/tls/identity';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'sluice.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-certs-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function sluice(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }));
  });
}

t.test('a CA, then a workload certificate that Sluice accepts as an identity', async (t) => {
  const ca = await sluice(['certs', 'ca', '--dir', path.join(dir, 'ca'), '--trust-domain', 'example.org']);
  t.equal(ca.code, 0, ca.stderr);
  t.equal(statSync(path.join(dir, 'ca', 'ca.key')).mode & 0o777, 0o600);
  const out = path.join(dir, 'orders');
  const w = await sluice(['certs', 'issue', '--ca-dir', path.join(dir, 'ca'), '--spiffe', 'spiffe://example.org/ns/shop/sa/orders', '--out', out]);
  t.equal(w.code, 0, w.stderr);
  t.match(w.stdout, `certFile: ${path.join(out, 'cert.pem')}`);
  const r = (f: string) => readFileSync(path.join(out, f), 'utf8');
  t.equal(checkIdentity(r('cert.pem'), r('key.pem'), r('ca.pem')).info.id, 'example.org/ns/shop/sa/orders');
  t.equal(statSync(path.join(out, 'key.pem')).mode & 0o777, 0o600);
  t.equal(new X509Certificate(r('ca.pem')).subject.includes('O=example.org'), true);
});

t.test('explicit validity dates', async (t) => {
  const out = path.join(dir, 'dated');
  const w = await sluice(['certs', 'issue', '--ca-dir', path.join(dir, 'ca'), '--spiffe', 'spiffe://example.org/ns/a/sa/b', '--out', out,
    '--not-before', '2025-01-01T00:00:00Z', '--not-after', '2025-01-02T00:00:00Z']);
  t.equal(w.code, 0, w.stderr);
  const c = new X509Certificate(readFileSync(path.join(out, 'cert.pem')));
  t.equal(new Date(c.validTo).toISOString(), '2025-01-02T00:00:00.000Z');
});

t.test('bad input: a clear message, exit 2 for usage, 1 for what openssl or the ID refuse', async (t) => {
  const bad = await sluice(['certs', 'issue', '--ca-dir', path.join(dir, 'ca'), '--spiffe', 'http://x/y', '--out', path.join(dir, 'x')]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /is not a SPIFFE ID/);
  const noCa = await sluice(['certs', 'issue', '--ca-dir', path.join(dir, 'nope'), '--spiffe', 'spiffe://a/b', '--out', path.join(dir, 'y')]);
  t.equal(noCa.code, 1);
  t.match(noCa.stderr, /openssl ca failed/);
  const usage = await sluice(['certs', 'issue', '--spiffe', 'spiffe://a/b']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /--ca-dir and --out are required/);
  const when = await sluice(['certs', 'issue', '--ca-dir', 'a', '--out', 'b', '--spiffe', 'spiffe://a/b', '--not-after', 'someday']);
  t.equal(when.code, 2);
  t.match(when.stderr, /not a date/);
});
