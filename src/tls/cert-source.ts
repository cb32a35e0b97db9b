/**
 * Where the workload identity comes from, on the main thread: the files the config names
 * (watched, the way a Kubernetes secret volume or a node agent rewrites them, atomic symlink
 * swaps included), or a push through the admin API (POST /certs, held in memory only). Every
 * identity is checked (src/tls/identity.ts) before it is published to the workers
 * (src/tls/identity-mailbox.ts); one that fails is refused, logged and counted, and the one in
 * force keeps serving.
 *
 *   files ──poll (stat follows symlinks)──▶ changed? ─▶ read all three ─▶ checkIdentity ─▶ publish
 *   POST /certs { cert, key, ca } ─────────────────────────────────────────┘      │
 *                                                         refused: log, count ◀───┘
 *
 * The poll compares each file's inode, size and mtime (through the symlinks): a swap of the
 * `..data` link changes the inode even when the size and second stay the same. Changes are
 * read together a moment after the last one was seen, so a writer that replaces the three files
 * one by one is not caught half way (the certificate new, the key still old).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, unwatchFile, watchFile, type Stats as FsStats } from 'node:fs';
import { ConfigError } from '../errors';
import { log } from '../log';
import type { Stats } from '../stats/stats';
import { checkIdentity, IdentityError, type Identity, type IdentityInfo } from './identity';
import type { IdentityMailbox } from './identity-mailbox';
import type { TlsConfig } from './tls-config';

/** A change is read this long after the last change seen, so that the three files are read as one. */
const SETTLE_MS = 50;

type Files = { certFile: string; keyFile: string; caFile: string };

export interface CertsView {
  installed: boolean;
  source: 'file' | 'api' | null;
  generation: number;
  identity: (IdentityInfo & { secondsToExpiry: number }) | null;
  installedAt: string | null;
  files: Files | null;
  trustBundle: Identity['bundle'];
  lastRefusal: { at: string; source: 'file' | 'api'; reason: string; message: string } | null;
}

export class CertSource {
  private identity: Identity | null = null;
  private source: 'file' | 'api' | null = null;
  private generation = 0;
  private installedAt = 0;
  private files: Files | null = null;
  private intervalMs = 1000;
  private settleTimer: NodeJS.Timeout | null = null;
  private lastRefusal: CertsView['lastRefusal'] = null;
  private ciphers = '';

  /** `published`: called after each identity is published (the workers are told to look now). */
  constructor(private readonly mailbox: IdentityMailbox, private readonly stats: () => Stats, private readonly published: () => void = () => {}) {}

  /**
   * A config's tls section, at start or reload. Files named: read and checked now; a bad identity
   * refuses the config (ConfigError naming /tls/certFile), so a reload cannot install one. The
   * files are then watched. No files: an identity pushed through the API stays.
   */
  applyConfig(tls: TlsConfig | undefined): void {
    const ciphers = tls?.cipherSuites?.join(':') ?? '';
    if (ciphers !== this.ciphers) {
      this.ciphers = ciphers;
      if (this.identity) this.publish(this.identity);
    }
    const files = tls?.certFile && tls.keyFile && tls.caFile ? { certFile: tls.certFile, keyFile: tls.keyFile, caFile: tls.caFile } : null;
    const same = files && this.files && files.certFile === this.files.certFile && files.keyFile === this.files.keyFile && files.caFile === this.files.caFile;
    if (files && !same) {
      let id: Identity;
      try {
        id = readIdentity(files);
      } catch (err) {
        const e = err as Error & { reason?: string };
        this.refused('file', e);
        const path = e instanceof IdentityError && (e.reason === 'key_mismatch') ? '/tls/keyFile' : e instanceof IdentityError && e.reason === 'bad_bundle' ? '/tls/caFile' : '/tls/certFile';
        throw new ConfigError([{ path, message: e.message }], 'config');
      }
      this.unwatch();
      this.files = files;
      this.install(id, 'file');
    } else if (!files) {
      this.unwatch();
      this.files = null;
    }
    if (files && (!same || tls!.watchIntervalMs !== this.intervalMs)) {
      this.unwatch();
      this.files = files;
      this.watch(files, tls!.watchIntervalMs);
    }
  }

  /** POST /certs: a new identity, held in memory only. Throws IdentityError when it is refused. */
  push(certPem: string, keyPem: string, caPem: string): IdentityInfo {
    let id: Identity;
    try {
      id = checkIdentity(certPem, keyPem, caPem);
    } catch (err) {
      this.refused('api', err as Error);
      throw err;
    }
    this.install(id, 'api');
    return id.info;
  }

  get current(): Identity | null {
    return this.identity;
  }

  view(now = Date.now()): CertsView {
    const id = this.identity;
    return {
      installed: id !== null,
      source: this.source,
      generation: this.generation,
      identity: id ? { ...id.info, secondsToExpiry: Math.floor((id.info.notAfterMs - now) / 1000) } : null,
      installedAt: this.installedAt ? new Date(this.installedAt).toISOString() : null,
      files: this.files,
      trustBundle: id?.bundle ?? [],
      lastRefusal: this.lastRefusal,
    };
  }

  /** The expiry gauge, written before /stats is rendered. */
  refreshGauge(now = Date.now()): void {
    const s = this.stats();
    s.set(s.slot('sluice_tls_cert_expiry_seconds'), this.identity ? Math.floor((this.identity.info.notAfterMs - now) / 1000) : -1);
  }

  stop(): void {
    this.unwatch();
  }

  private install(id: Identity, source: 'file' | 'api'): void {
    const prev = this.identity;
    if (prev && prev.certPem === id.certPem && prev.keyPem === id.keyPem && prev.caPem === id.caPem) { this.source = source; return; }
    this.identity = id;
    this.source = source;
    this.installedAt = Date.now();
    this.publish(id);
    const s = this.stats();
    s.inc(s.slot('sluice_tls_cert_rotations_total'));
    this.refreshGauge();
    log.info({ identity: id.info.id, serial: id.info.serial, notAfter: id.info.notAfter, source, generation: this.generation }, 'workload identity installed');
  }

  private publish(id: Identity): void {
    this.generation++;
    // new ticket keys with every identity (and from them a new session ID context, under which the
    // process keeps inbound sessions): a session resumed from the old one would skip the new
    // bundle's check of the peer
    this.mailbox.publish({
      generation: this.generation, id: id.info.id, certPem: id.certPem, keyPem: id.keyPem, caPem: id.caPem, ticketKeys: randomBytes(48), ciphers: this.ciphers,
    });
    this.published();
  }

  private refused(source: 'file' | 'api', err: Error): void {
    const reason = err instanceof IdentityError ? err.reason : 'unparsable';
    this.lastRefusal = { at: new Date().toISOString(), source, reason, message: err.message };
    const s = this.stats();
    s.inc(s.slot('sluice_tls_cert_refused_total', { reason }));
    log.error({ source, reason, err: err.message, inForce: this.identity?.info.id ?? null }, 'workload identity refused; the one in force keeps serving');
  }

  private watch(files: Files, intervalMs: number): void {
    this.intervalMs = intervalMs;
    const onChange = (cur: FsStats, prev: FsStats) => {
      if (cur.ino === prev.ino && cur.mtimeMs === prev.mtimeMs && cur.size === prev.size) return;
      if (this.settleTimer) clearTimeout(this.settleTimer);
      this.settleTimer = setTimeout(() => { this.settleTimer = null; this.reload(files); }, SETTLE_MS);
      this.settleTimer.unref();
    };
    for (const f of [files.certFile, files.keyFile, files.caFile]) watchFile(f, { interval: intervalMs, persistent: false }, onChange);
  }

  private reload(files: Files): void {
    if (this.files !== files) return;
    try {
      this.install(readIdentity(files), 'file');
    } catch (err) {
      this.refused('file', err as Error);
    }
  }

  private unwatch(): void {
    if (this.settleTimer) { clearTimeout(this.settleTimer); this.settleTimer = null; }
    if (!this.files) return;
    for (const f of [this.files.certFile, this.files.keyFile, this.files.caFile]) unwatchFile(f);
  }
}

function readIdentity(f: Files): Identity {
  const read = (file: string, what: string) => {
    try {
      statSync(file);
      return readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new IdentityError('unparsable', `cannot read ${what} ${file}: ${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message}`);
    }
  };
  return checkIdentity(read(f.certFile, 'the certificate'), read(f.keyFile, 'the key'), read(f.caFile, 'the trust bundle'));
}
