/**
 * The admin credential: a bearer token that requests changing the proxy must carry.
 *
 * Every container of a pod shares its loopback, so an address alone protects nothing: the
 * application (or anything it runs) could push a config that sends its traffic anywhere, or
 * stop the proxy. What the other containers do not share is the proxy's file system, so the
 * token lives in a file only the proxy's user can read (0600), in the proxy's container.
 *
 *   admin.tokenFile set, file exists     the operator's token (a mounted Secret, say), read as is
 *   admin.tokenFile set, no such file    a new random token written there (0600, directory 0700)
 *   admin.tokenFile unset                a new random token in a fresh 0700 directory under the
 *                                        temp directory, removed at stop; its path is logged
 *
 * The token is compared in constant time (hashes of equal length), so timing says nothing about it.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SluiceError } from '../errors';

/** Shortest token accepted from a file: 128 bits as hex. */
const MIN_TOKEN_LENGTH = 32;

export interface AdminToken {
  token: string;
  file: string;
  /** A directory Sluice made for a generated token, to remove at stop; null for the operator's file. */
  ownDir: string | null;
  /** The file can be read by users other than its owner (reported at start-up, not refused). */
  readableByOthers: boolean;
}

function newToken(): string {
  return randomBytes(32).toString('hex');
}

function fail(file: string, what: string): never {
  throw new SluiceError('ERR_ADMIN_TOKEN', `admin.tokenFile ${file}: ${what}`);
}

function readToken(file: string): AdminToken {
  const token = fs.readFileSync(file, 'utf8').trim();
  if (token.length < MIN_TOKEN_LENGTH) fail(file, `the token must be at least ${MIN_TOKEN_LENGTH} characters (has ${token.length})`);
  if (/\s/.test(token)) fail(file, 'the token must be one word');
  const mode = fs.statSync(file).mode;
  return { token, file, ownDir: null, readableByOthers: (mode & 0o077) !== 0 };
}

/** The token for this run, read from or written to `tokenFile` (see the table above). */
export function loadAdminToken(tokenFile: string | undefined): AdminToken {
  if (tokenFile === undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-admin-')); // 0700
    const file = path.join(dir, 'token');
    const token = newToken();
    fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return { token, file, ownDir: dir, readableByOthers: false };
  }
  const file = path.resolve(tokenFile);
  try {
    return readToken(file);
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') fail(file, `cannot read it (${code ?? (err as Error).message})`);
  }
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const token = newToken();
    fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return { token, file, ownDir: null, readableByOthers: false };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return readToken(file); // another process wrote it first
    fail(file, `cannot create it (${code ?? (err as Error).message})`);
  }
}

/** Does an `Authorization` header carry this token? */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  if (!m) return false;
  const a = createHash('sha256').update(m[1]).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/** Removes a directory made for a generated token. */
export function removeAdminToken(t: AdminToken | null): void {
  if (t?.ownDir) fs.rmSync(t.ownDir, { recursive: true, force: true });
}
