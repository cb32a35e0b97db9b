/**
 * One attempt of an HTTP request at an HTTP/1.1 upstream: a connection from the endpoint's pool,
 * the request head in HTTP/1 form, the body with its framing, the response as it comes. Failures
 * are reported in the exchange's vocabulary:
 *
 *   pool: connect_failed / dns_failed / overflow      the request never left
 *   closed before any response byte, on a reused
 *   keep-alive connection                              stale (safe to send again if repeatable)
 *   closed, or a response cut off                      reset
 *   a response the decoder refuses                     protocol_error
 */
import type net from 'node:net';
import type { Attempt, AttemptSink, Exchange, UpstreamChoice } from '../../exchange/exchange';
import type { HeaderOps } from '../../exchange/filter';
import { applyEdits, h2ToFlat, type HttpRequestForm } from '../http/forms';
import type { Http1Head } from './http1-decoder';
import { chunkParts, encodeRequestHead, lastChunk, type Framing } from './http1-encoder';
import { poolLimits, type AcquireError, type Http1Connection, type Http1ResponseSink } from './http1-pool';
import { copyOf } from '../../net/direct-read';
import { LENT_WRITE_MIN, writeLent } from '../../net/lent-write';

const EMPTY = Buffer.alloc(0);
/** Also left out of a request whose h2c upgrade is not forwarded. */
const H2C_FIELDS = ['http2-settings'];

/**
 * The Upgrade value a request is forwarded with, or undefined. An upgrade to h2c is never
 * forwarded: the tunnel that a 101 opens would carry HTTP/2 requests that no route sees (RFC 9113
 * deprecates it; Sluice speaks HTTP/2 itself). Such a request goes upstream as a plain request.
 */
function forwardedUpgrade(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  for (const token of value.split(',')) if (token.trim().toLowerCase() === 'h2c') return undefined;
  return value;
}

export class Http1Attempt implements Attempt, Http1ResponseSink {
  private conn: Http1Connection | null = null;
  private framing: Framing = { kind: 'none' };
  private cancelled = false;
  /** The request's end was written. */
  private ended = false;
  private started = false;
  /** The Upgrade value sent upstream; a 101 opens a tunnel only when there is one. */
  private upgrade: string | undefined = undefined;
  /** The upstream answered 101 to a request that asked for no upgrade it may grant. */
  private unaskedSwitch = false;

  constructor(private readonly x: Exchange, private readonly to: UpstreamChoice, private readonly sink: AttemptSink) {}

  start(): void {
    const env = this.x.env;
    const limits = poolLimits(env.config, this.to.cluster?.config, this.to.cluster?.protection.limits ?? null);
    const pool = env.pools.http1(this.to.host, this.to.port, this.to.key, limits, this.to.tls);
    pool.acquire((err, conn) => this.onAcquired(err, conn), limits, this.to.cstats);
  }

  private onAcquired(err: AcquireError | null, conn: Http1Connection | null): void {
    if (this.cancelled) { conn?.abandon(); return; }
    if (err || !conn) {
      this.sink.onAttemptFailed(this, err === 'overflow' ? 'overflow' : err === 'dns_failed' ? 'dns_failed' : 'connect_failed', false);
      return;
    }
    this.conn = conn;
    const form = this.x.down.request as HttpRequestForm;
    conn.start(this, form.kind === 'h1' ? form.head.method : form.stream.method);
    // the request (head, and the body that came with it) goes upstream at the end of the turn
    conn.writes.holdTurn();
    conn.writes.send(this.head(form, this.x.requestEdits));
    if (this.x.headOnly) { this.ended = true; conn.requestDone = true; }
    this.sink.onAttemptReady(this);
  }

  /** The request head in HTTP/1 form, with the routed target and Host, framing of our own. */
  private head(form: HttpRequestForm, edits: HeaderOps[] | null): string {
    const via = this.x.env.config.http.via;
    const bodyless = this.x.headOnly;
    if (form.kind === 'h1') {
      const h = form.head;
      if (h.chunked) this.framing = { kind: 'chunked' };
      else if (h.contentLength >= 0) this.framing = { kind: 'length', length: h.contentLength };
      else this.framing = { kind: 'none' };
      const asked = h.upgrade ? upgradeOf(h) : undefined;
      const upgrade = forwardedUpgrade(asked);
      this.upgrade = upgrade;
      return encodeRequestHead({
        method: h.method, target: form.target.forward, host: form.authority.canonical || this.to.key,
        headers: edits ? applyEdits(h.headers, edits) : h.headers,
        connectionTokens: upgrade === asked ? h.connectionTokens : h.connectionTokens.concat(H2C_FIELDS), framing: this.framing, via, upgrade,
      });
    }
    // from HTTP/2: its fields, flattened, the body framed by its content-length or chunked
    const s = form.stream;
    const cl = s.contentLength;
    this.framing = bodyless ? (cl >= 0 ? { kind: 'length', length: 0 } : { kind: 'none' }) : cl >= 0 ? { kind: 'length', length: cl } : { kind: 'chunked' };
    let flat = h2ToFlat(s.fields);
    if (edits) flat = applyEdits(flat, edits);
    let head = `${s.method} ${form.target.forward} HTTP/1.1\r\nhost: ${form.authority.canonical || this.to.key}\r\n`;
    let prevVia: string | undefined;
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i];
      if (name === 'via') { prevVia = prevVia === undefined ? flat[i + 1] : `${prevVia}, ${flat[i + 1]}`; continue; }
      if (name === 'te' || name === 'host') continue;
      head += `${name}: ${flat[i + 1]}\r\n`;
    }
    if (via) head += `via: ${prevVia !== undefined ? `${prevVia}, ` : ''}${via}\r\n`;
    else if (prevVia !== undefined) head += `via: ${prevVia}\r\n`;
    if (this.framing.kind === 'length') head += `content-length: ${this.framing.length}\r\n`;
    else if (this.framing.kind === 'chunked') head += 'transfer-encoding: chunked\r\n';
    return head + '\r\n';
  }

  write(chunk: Buffer, end: boolean): boolean {
    const conn = this.conn;
    if (conn === null || this.ended) return true;
    let ok = true;
    if (chunk.length > 0) {
      // a chunk's size line, data and CRLF together, not three small segments
      if (this.framing.kind === 'chunked') ok = conn.writes.sendAll(chunkParts(chunk));
      else ok = conn.writes.send(chunk);
    }
    if (end) {
      this.ended = true;
      if (this.framing.kind === 'chunked') ok = conn.writes.send(lastChunk(null)) && ok;
      conn.requestDone = true;
    }
    return ok;
  }

  /**
   * A chunk valid during this call only: a large one with length framing goes out now (after the
   * request head, if it is still held for the turn's end), copied only where the socket does not
   * take it whole (src/net/lent-write.ts); anything else is copied and written as usual.
   */
  writeLent(chunk: Buffer, end: boolean): boolean {
    const conn = this.conn;
    if (conn === null || this.ended) return true;
    if (this.framing.kind !== 'length' || chunk.length < LENT_WRITE_MIN) return this.write(copyOf(chunk), end);
    const ok = writeLent(conn.writes.out, chunk); // after what is held for the socket
    if (end) {
      this.ended = true;
      conn.requestDone = true;
    }
    return ok;
  }

  trailers(fields: string[]): void {
    const conn = this.conn;
    if (conn === null || this.ended) return;
    this.ended = true;
    if (this.framing.kind === 'chunked') conn.writes.send(lastChunk(fields));
    conn.requestDone = true;
  }

  consumed(): void {}

  pauseResponse(): void {
    this.conn?.socket.pause();
  }

  resumeResponse(): void {
    this.conn?.socket.resume();
  }

  cancel(): void {
    this.cancelled = true;
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
  }

  release(): void {
    // the pool took the connection back at the response's end, or it closed: nothing is ours now
    this.conn = null;
  }

  // ── the connection's events ────────────────────────────────────────────────

  onResponseHead(h: Http1Head, raw: Buffer | null): void {
    if (h.status < 200 && h.status !== 101) {
      this.sink.onInformational?.(this, h);
      return;
    }
    if (h.status === 101 && this.upgrade === undefined) {
      // a tunnel nobody asked for would carry the client's next bytes past the routes
      this.unaskedSwitch = true;
      return;
    }
    this.started = true;
    // a 101 is followed by onUpgrade; a response without a body (HEAD, 204, 304) ends with onResponseEnd
    this.sink.onResponseHead(this, { status: h.status, grpcStatus: -1, form: { kind: 'h1', head: h, raw } }, false);
  }

  onResponseBody(chunk: Buffer, lent: boolean): void {
    this.sink.onResponseBody(this, chunk, false, lent);
  }

  onResponseEnd(trailers: string[] | null): void {
    // the pool has the connection again, or closes it (a response that ended before the request did)
    this.conn = null;
    if (trailers !== null && trailers.length > 0) this.sink.onResponseTrailers(this, trailers);
    else this.sink.onResponseBody(this, EMPTY, true);
  }

  onUpgrade(socket: net.Socket, rest: Buffer): void {
    this.conn = null;
    if (this.unaskedSwitch) {
      socket.destroy();
      this.sink.onAttemptFailed(this, 'protocol_error', false);
      return;
    }
    if (this.sink.onUpgrade) this.sink.onUpgrade(this, socket, rest);
    else socket.destroy();
  }

  onUpstreamError(kind: 'reset' | 'protocol', started: boolean): void {
    const conn = this.conn;
    this.conn = null;
    if (this.cancelled) return;
    const responseStarted = started || this.started;
    if (kind === 'protocol') { this.sink.onAttemptFailed(this, 'protocol_error', responseStarted); return; }
    // nothing came back on a keep-alive connection the upstream had closed as we sent
    const stale = !responseStarted && conn !== null && conn.reused;
    this.sink.onAttemptFailed(this, stale ? 'stale' : 'reset', responseStarted);
  }

  onUpstreamDrain(): void {
    this.sink.onUpstreamWritable(this);
  }

  batchStart(): void {
    this.sink.onBatch?.(this, true);
  }

  batchEnd(): void {
    this.sink.onBatch?.(this, false);
  }
}

function upgradeOf(h: Http1Head): string | undefined {
  for (let i = 0; i < h.headers.length; i += 2) if (h.headers[i].toLowerCase() === 'upgrade') return h.headers[i + 1];
  return undefined;
}
