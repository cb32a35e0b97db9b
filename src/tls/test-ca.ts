/**
 * A test CA and SPIFFE workload certificates, for trying mTLS on one machine and for the tests
 * (`sluice certs ca`, `sluice certs issue`). Not a production CA: its key sits in a file next to
 * its certificate.
 *
 * Certificates are made by the `openssl` command. Node's crypto can parse and verify X.509
 * (X509Certificate) but cannot sign a certificate, and a library that can (@peculiar/x509,
 * node-forge) would be a dependency of the proxy for the sake of a helper command; `openssl` is
 * on every machine that has Node's build tools or a Debian base image. Keys are EC P-256: the
 * fastest handshakes OpenSSL offers with keys every TLS stack takes.
 *
 *   <ca dir>/ca.pem, ca.key (0600)                     sluice certs ca --dir D
 *   <out>/cert.pem, key.pem (0600), ca.pem (bundle)    sluice certs issue --ca-dir D --spiffe ID --out O
 *
 * `issue` signs with `openssl ca`, which takes explicit validity dates, so a test can make a
 * certificate that expired yesterday or is valid only from tomorrow.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SluiceError } from '../errors';

function openssl(args: string[], cwd?: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new SluiceError('ERR_NO_OPENSSL', 'the openssl command is needed to make certificates (apt-get install openssl)');
    const why = e.stderr?.toString().trim().split('\n').slice(-3).join(' | ') ?? e.message;
    throw new SluiceError('ERR_OPENSSL', `openssl ${args[0]} failed: ${why}`);
  }
}

export interface CaOptions {
  dir: string;
  /** Goes into the CA's subject (O=); the trust domain its certificates will name. */
  trustDomain?: string;
  days?: number;
  /** Distinguishes two CAs of the same trust domain (CA rotation tests). */
  name?: string;
}

/** Creates `<dir>/ca.pem` and `<dir>/ca.key`. Returns the paths. */
export function createCa(o: CaOptions): { certFile: string; keyFile: string } {
  mkdirSync(o.dir, { recursive: true });
  const certFile = path.join(o.dir, 'ca.pem');
  const keyFile = path.join(o.dir, 'ca.key');
  const td = o.trustDomain ?? 'cluster.local';
  if (!/^[a-z0-9._-]+$/i.test(td)) throw new SluiceError('ERR_BAD_TRUST_DOMAIN', `"${td}" is not a trust domain (letters, digits, . _ -)`);
  const name = (o.name ?? 'Sluice test CA').replace(/[/=\\]/g, ' ');
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', String(o.days ?? 365), '-sha256',
    '-subj', `/O=${td}/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}

export interface IssueOptions {
  caDir: string;
  out: string;
  /** `spiffe://<td>/ns/<ns>/sa/<sa>`; omitted only to make a certificate without one (tests). */
  spiffe?: string;
  /** More URI SANs (tests: a certificate with two). */
  extraUris?: string[];
  dns?: string[];
  days?: number;
  /** Explicit validity; Date or ISO text. */
  notBefore?: Date;
  notAfter?: Date;
}

/** openssl's YYYYMMDDHHMMSSZ */
function asn1Time(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Issues a workload certificate; writes cert.pem, key.pem and a copy of the CA as ca.pem into `out`. */
export function issueCert(o: IssueOptions): { certFile: string; keyFile: string; caFile: string } {
  const uris = [...(o.spiffe ? [o.spiffe] : []), ...(o.extraUris ?? [])];
  for (const u of uris) if (/[\s,]/.test(u)) throw new SluiceError('ERR_BAD_SAN', `"${u}": a URI SAN has no spaces or commas`);
  if (o.spiffe !== undefined && !/^spiffe:\/\/[a-z0-9._-]+\/\S+$/i.test(o.spiffe)) {
    throw new SluiceError('ERR_BAD_SPIFFE_ID', `"${o.spiffe}" is not a SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)`);
  }
  const sans = [...uris.map((u) => `URI:${u}`), ...(o.dns ?? []).map((d) => `DNS:${d}`)];
  mkdirSync(o.out, { recursive: true });
  const caCert = path.join(o.caDir, 'ca.pem');
  const caKey = path.join(o.caDir, 'ca.key');
  const certFile = path.join(o.out, 'cert.pem');
  const keyFile = path.join(o.out, 'key.pem');
  const caFile = path.join(o.out, 'ca.pem');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sluice-issue-'));
  try {
    const csr = path.join(tmp, 'req.csr');
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', '/O=sluice']);
    chmodSync(keyFile, 0o600);
    const notBefore = o.notBefore ?? new Date(Date.now() - 60_000);
    const notAfter = o.notAfter ?? new Date(notBefore.getTime() + (o.days ?? 1) * 86_400_000);
    writeFileSync(path.join(tmp, 'index.txt'), '');
    writeFileSync(path.join(tmp, 'serial'), `${randomSerial()}\n`);
    writeFileSync(path.join(tmp, 'ca.cnf'), [
      '[ ca ]', 'default_ca = d',
      '[ d ]', `database = ${tmp}/index.txt`, `new_certs_dir = ${tmp}`, `serial = ${tmp}/serial`,
      'default_md = sha256', 'policy = p', 'unique_subject = no', 'copy_extensions = none',
      '[ p ]', 'organizationName = optional',
      '[ ext ]',
      // SPIFFE X.509-SVID: the SAN is critical when the subject is empty; leaf, both TLS roles
      ...(sans.length ? [`subjectAltName = critical,${sans.join(',')}`] : []),
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment,keyAgreement',
      'extendedKeyUsage = serverAuth,clientAuth',
      '',
    ].join('\n'));
    openssl(['ca', '-batch', '-config', path.join(tmp, 'ca.cnf'), '-cert', caCert, '-keyfile', caKey, '-in', csr, '-out', certFile,
      '-startdate', asn1Time(notBefore), '-enddate', asn1Time(notAfter), '-extensions', 'ext', '-notext']);
    copyFileSync(caCert, caFile);
    // `openssl ca` writes text before the PEM block with some settings: keep the PEM only
    const pem = readFileSync(certFile, 'utf8');
    const start = pem.indexOf('-----BEGIN CERTIFICATE-----');
    if (start > 0) writeFileSync(certFile, pem.slice(start));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { certFile, keyFile, caFile };
}

/** 16 random bytes, positive (top bit clear) and without a leading zero byte. */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex').toUpperCase();
}
