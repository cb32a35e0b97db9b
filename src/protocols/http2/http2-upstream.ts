/**
 * One attempt of an HTTP request at an HTTP/2 upstream: a stream on a shared connection of the
 * endpoint's pool. The request goes as HTTP/2 fields (its own, or converted from HTTP/1), the
 * body within the stream's window. Failures in the exchange's vocabulary:
 *
 *   the connection never came up                       connect_failed / dns_failed
 *   REFUSED_STREAM, or a GOAWAY that did not cover it  refused (never processed: safe to send again)
 *   a response the codec refuses                       protocol_error
 *   any other reset before the response ended          reset
 *
 * Credit: response bytes are given back to the upstream's window only once the client took them
 * (consumed), so a slow reader slows the upstream instead of filling memory; whatever a stream
 * still owes when it ends is given back then, or the shared connection's window would shrink.
 */
import type { Attempt, AttemptSink, Exchange, UpstreamChoice } from '../../exchange/exchange';
import { grpcStatusIn } from '../../stats/stats';
import { addVia, applyEdits, h1RequestToH2, type HttpRequestForm } from '../http/forms';
import { H2Error } from './frames';
import type { Http2Stream, Http2StreamHandler } from './http2-connection';
import type { UpstreamSession } from './http2-pool';

/** Shared by every attempt: the attempt is the stream's ctx. */
const UP: Http2StreamHandler = {
  onResponse(s, f, status, end) { (s.ctx as Http2Attempt).onResponse(s, f, status, end); },
  onData(s, d, end) { (s.ctx as Http2Attempt).onData(s, d, end); },
  onTrailers(s, f) { (s.ctx as Http2Attempt).onTrailers(s, f); },
  onReset(s, code, remote) { (s.ctx as Http2Attempt).onReset(s, code, remote); },
  onWritable(s) { (s.ctx as Http2Attempt).onWritable(s); },
  onClose(s) { (s.ctx as Http2Attempt).onClose(s); },
};

/** Puts the routed :path and authority into a field list, in place. */
function rewriteTarget(f: string[], path: string, authority: string): void {
  for (let i = 0; i < f.length; i += 2) {
    const name = f[i];
    if (name === ':path') f[i + 1] = path;
    else if (name === ':authority' || name === 'host') f[i + 1] = authority;
  }
}

export class Http2Attempt implements Attempt {
  private us: UpstreamSession | null = null;
  private up: Http2Stream | null = null;
  private responded = false;
  /** Response bytes passed to the sink and not yet given back to the upstream's window. */
  private owed = 0;

  constructor(private readonly x: Exchange, private readonly to: UpstreamChoice, private readonly sink: AttemptSink) {}

  start(): void {
    const env = this.x.env;
    const cluster = this.to.cluster;
    const connectTimeoutMs = cluster ? cluster.config.connectTimeoutMs : env.config.tcp.connectTimeoutMs;
    const us = env.pools.http2(this.to.host, this.to.port, this.to.key, this.to.tls).acquire(this.to.cstats, connectTimeoutMs, env.config.http.upstreamIdleTimeoutMs);
    const form = this.x.down.request as HttpRequestForm;
    const via = env.config.http.via;
    let fields: string[];
    let method: string;
    if (form.kind === 'h2') {
      fields = form.stream.fields;
      method = form.stream.method;
      // the stream's own list: rewritten once (a retry or a mirror finds it done)
      if (!(form as { rewritten?: boolean }).rewritten) {
        (form as { rewritten?: boolean }).rewritten = true;
        rewriteTarget(fields, form.target.forward, form.authority.canonical);
        addVia(fields, via);
      }
    } else {
      method = form.head.method;
      if (form.head.upgrade) {
        // an HTTP/1 upgrade has no HTTP/2 form (RFC 9113 §8.6)
        us.release();
        process.nextTick(() => this.sink.onAttemptFailed(this, 'protocol_error', false));
        return;
      }
      fields = h1RequestToH2(form.head, form.target.forward, form.authority.canonical || this.to.key, via);
    }
    const edits = this.x.requestEdits;
    if (edits) fields = applyEdits(fields, edits);
    const up = us.conn.request(fields, this.x.headOnly, UP, this);
    if (up === null) {
      us.release();
      process.nextTick(() => this.sink.onAttemptFailed(this, us.dnsFailed ? 'dns_failed' : 'connect_failed', false));
      return;
    }
    // a response to HEAD has no body, whatever its content-length says (RFC 9110 9.3.2)
    if (method === 'HEAD') up.noBody = true;
    this.up = up;
    this.us = us;
    this.sink.onAttemptReady(this);
  }

  write(chunk: Buffer, end: boolean): boolean {
    const up = this.up;
    if (up === null || up.localEnded) return true;
    return up.conn.writeData(up, chunk, end);
  }

  trailers(fields: string[]): void {
    const up = this.up;
    if (up !== null && !up.localEnded) up.conn.writeTrailers(up, fields);
  }

  consumed(n: number): void {
    const up = this.up;
    if (up === null) return;
    this.owed -= n;
    up.conn.consumed(up, n);
  }

  pauseResponse(): void {}
  resumeResponse(): void {}

  cancel(): void {
    const up = this.up;
    if (up !== null && !up.closed) up.conn.reset(up, H2Error.CANCEL);
    this.free();
  }

  release(): void {
    const up = this.up;
    // the response is whole but our request never finished going up: free the stream and its slot
    if (up !== null && !up.localEnded && !up.closed) up.conn.reset(up, H2Error.CANCEL);
    this.free();
  }

  /** The stream is done with: its slot back to the pool, what it owes back to the connection window. */
  private free(): void {
    const up = this.up;
    const us = this.us;
    this.up = null;
    this.us = null;
    if (up !== null && this.owed > 0) { up.conn.consumed(up, this.owed); this.owed = 0; }
    us?.release();
  }

  // ── the stream's events ────────────────────────────────────────────────────

  onResponse(s: Http2Stream, f: string[], status: number, end: boolean): void {
    if (s !== this.up) return;
    this.responded = true;
    // a trailers-only response carries grpc-status in its head
    this.sink.onResponseHead(this, { status, grpcStatus: end ? grpcStatusIn(f) : -1, form: { kind: 'h2', fields: f } }, end);
  }

  onData(s: Http2Stream, d: Buffer, end: boolean): void {
    if (s !== this.up) return;
    this.owed += d.length;
    this.sink.onResponseBody(this, d, end);
  }

  onTrailers(s: Http2Stream, f: string[]): void {
    if (s !== this.up) return;
    this.sink.onResponseTrailers(this, f);
  }

  onWritable(s: Http2Stream): void {
    if (s === this.up) this.sink.onUpstreamWritable(this);
  }

  onClose(s: Http2Stream): void {
    if (s === this.up) this.free();
  }

  onReset(s: Http2Stream, code: number, remote: boolean): void {
    if (s !== this.up) return;
    const us = this.us!;
    this.free();
    if (!this.responded) {
      // not processed for sure: never connected, or refused
      if (!us.connected) { this.sink.onAttemptFailed(this, us.dnsFailed ? 'dns_failed' : 'connect_failed', false); return; }
      if (remote && code === H2Error.REFUSED_STREAM) { this.sink.onAttemptFailed(this, 'refused', false); return; }
      // our codec refused what the upstream sent
      if (code === H2Error.PROTOCOL_ERROR && !remote) { this.sink.onAttemptFailed(this, 'protocol_error', false); return; }
      this.sink.onAttemptFailed(this, 'reset', false);
      return;
    }
    this.sink.onAttemptFailed(this, 'reset', true);
  }
}
