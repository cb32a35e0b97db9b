/**
 * Certificates made by the test, the way `sluice certs` makes them (src/tls/test-ca.ts, with
 * the openssl command): a CA per test directory, workload certificates on demand. Nothing is
 * checked in; the directory goes when the test ends.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCa, issueCert, type IssueOptions } from '../../src/tls/test-ca';

export interface Workload { dir: string; certFile: string; keyFile: string; caFile: string; cert: string; key: string; ca: string }

export class TestPki {
  readonly root = mkdtempSync(path.join(os.tmpdir(), 'sluice-pki-'));
  private n = 0;

  /** A CA in its own directory; `name` tells two CAs of one test apart. */
  ca(name = 'ca', trustDomain = 'cluster.local'): string {
    const dir = path.join(this.root, name);
    createCa({ dir, trustDomain, name: `Sluice test CA ${name}` });
    return dir;
  }

  /** A workload certificate signed by `caDir`. */
  issue(caDir: string, spiffe: string | undefined, more: Partial<IssueOptions> = {}): Workload {
    const dir = path.join(this.root, `w${++this.n}`);
    issueCert({ caDir, out: dir, spiffe, ...more });
    const r = (f: string) => readFileSync(path.join(dir, f), 'utf8');
    return { dir, certFile: path.join(dir, 'cert.pem'), keyFile: path.join(dir, 'key.pem'), caFile: path.join(dir, 'ca.pem'), cert: r('cert.pem'), key: r('key.pem'), ca: r('ca.pem') };
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** The serial of the certificate a new mTLS handshake to `port` gets, as `caller`. */
export async function servedSerial(port: number, caller: Workload): Promise<string> {
  const s = tls.connect({ host: '127.0.0.1', port, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  await once(s, 'secureConnect');
  const serial = s.getPeerCertificate().serialNumber;
  s.destroy();
  return serial;
}
