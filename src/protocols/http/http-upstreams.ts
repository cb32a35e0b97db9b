/**
 * How an HTTP request reaches an upstream: over HTTP/2 when the cluster says `protocol: http2`,
 * or says `auto` and the client spoke HTTP/2; over HTTP/1.1 otherwise. Either client version
 * reaches either upstream version (forms.ts converts).
 */
import type { Attempt, AttemptFactory, AttemptSink, Exchange, UpstreamChoice } from '../../exchange/exchange';
import { Http1Attempt } from '../http1/http1-upstream';
import { Http2Attempt } from '../http2/http2-upstream';
import type { HttpRequestForm } from './forms';

export const HTTP_UPSTREAMS: AttemptFactory = {
  open(x: Exchange, to: UpstreamChoice, sink: AttemptSink): Attempt {
    const wanted = to.cluster?.config.protocol ?? 'auto';
    const h2 = wanted === 'http2' || (wanted === 'auto' && (x.down.request as HttpRequestForm).kind === 'h2');
    return h2 ? new Http2Attempt(x, to, sink) : new Http1Attempt(x, to, sink);
  },
};
