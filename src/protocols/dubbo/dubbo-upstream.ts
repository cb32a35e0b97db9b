/**
 * One attempt of a Dubbo call at a provider: the call frame goes on a multiplexed connection of
 * the provider's pool (with an id of that connection's own; the pool restores the caller's on the
 * answer), and the answer comes back whole. Failures in the exchange's vocabulary:
 *
 *   never connected (or still queued when the connection went)   connect_failed / dns_failed
 *   the connection was lost with the call on it                  reset
 *   an answer the decoder refuses                                protocol_error
 *
 * A one-way call is done once it is handed to the pool (onNoResponse). Attachment edits (a
 * route's request header changes) rewrite the frame's attachment map; a mirror's copy is a
 * frame of its own, since the pool writes the upstream id into the frame it is given.
 */
import type { Attempt, AttemptSink, Exchange, UpstreamChoice } from '../../exchange/exchange';
import type { DubboFrame } from './dubbo-frame';
import { DubboRequest } from './dubbo-request';
import type { DubboCallSink, DubboFailure, DubboPoolLimits, DubboUpstreamCall } from './dubbo-pool';

/** What a Dubbo call gives its attempts: the frame, and how to hold the client back while the call cannot be written. */
export interface DubboCallForm {
  readonly frame: DubboFrame;
  readonly req: DubboRequest;
  /** The call could not be written at once: stop reading calls from this client until it is out. */
  pauseFor(call: DubboUpstreamCall): void;
}

export class DubboAttempt implements Attempt, DubboCallSink {
  private call: DubboUpstreamCall | null = null;
  private done = false;

  constructor(private readonly x: Exchange, private readonly to: UpstreamChoice, private readonly sink: AttemptSink) {}

  start(): void {
    const form = this.x.down.request as DubboCallForm;
    const f = form.frame;
    const c = this.x.env.config;
    const cluster = this.to.cluster?.config;
    const limits: DubboPoolLimits = {
      connectTimeoutMs: cluster?.connectTimeoutMs ?? c.tcp.connectTimeoutMs,
      idleTimeoutMs: c.http.upstreamIdleTimeoutMs,
      maxBodyBytes: c.dubbo.maxBodyBytes,
      serializations: c.dubbo.serializations,
      probeAfterMs: c.dubbo.upstreamProbeAfterMs,
      probeTimeoutMs: c.dubbo.upstreamProbeTimeoutMs,
      maxConsecutiveTimeouts: c.dubbo.upstreamMaxConsecutiveTimeouts,
    };
    let raw = f.raw;
    const edits = this.x.requestEdits;
    if (edits) {
      const set: Array<readonly [string, string]> = [];
      const remove: string[] = [];
      for (const e of edits) { set.push(...e.set); remove.push(...e.remove); }
      raw = form.req.withAttachments(set, remove);
    } else if (this.sink !== this.x) {
      // the pool writes its own id into the frame it is given: a mirror's copy must be its own
      raw = Buffer.from(raw);
    }
    const pool = this.x.env.pools.dubbo(this.to.host, this.to.port, this.to.key, this.to.tls);
    this.sink.onAttemptReady(this);
    const call = pool.send(raw, f.twoWay, f.idHi, f.idLo, f.twoWay ? this : null, limits, this.to.cstats);
    // the call waits in the pool or behind the socket's buffer: read no more calls until it is out (one-way ones too)
    if (!call.writable && this.sink === this.x) form.pauseFor(call);
    if (!f.twoWay) {
      this.done = true;
      this.sink.onNoResponse?.(this);
      return;
    }
    this.call = call;
  }

  write(): boolean { return true; }
  trailers(): void {}
  consumed(): void {}
  pauseResponse(): void {}
  resumeResponse(): void {}

  cancel(timedOut?: boolean): void {
    const call = this.call;
    this.call = null;
    this.done = true;
    // told apart from a cancel: a timeout counts against the provider connection's health
    if (timedOut) call?.timedOut(); else call?.cancel();
  }

  release(): void {
    this.call = null;
    this.done = true;
  }

  onResponse(raw: Buffer, status: number): void {
    if (this.done) return;
    this.call = null;
    this.sink.onResponseHead(this, { status, grpcStatus: -1, form: raw }, true);
  }

  onFailure(why: DubboFailure): void {
    if (this.done) return;
    this.call = null;
    const kind = why === 'bad_response' ? 'protocol_error' : why;
    this.sink.onAttemptFailed(this, kind, false);
  }
}
