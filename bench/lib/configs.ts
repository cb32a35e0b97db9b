/**
 * Configs for the benchmark stack, written into one temp dir:
 *
 *   client ──▶ direct ───────────────────────────────▶ upstream nginx  :up1 (HTTP/1.1, 100-byte body)
 *          ──▶ sluice  :h1 / :h2 ──┐                                   :up2 (h2c, same body)
 *          ──▶ nginx   :h1 / :h2 ──┼── keep-alive pools ──▶ upstream
 *          ──▶ haproxy :h1 / :h2 ──┘
 *
 * Each proxy has one worker (nginx worker_processes 1, haproxy nbthread 1, Sluice workers.threads
 * as asked), keeps upstream connections alive and pools them, and logs no requests.
 * nginx cannot speak HTTP/2 to an upstream: its h2 listener proxies to the HTTP/1.1 port.
 *
 * Dubbo (only when a dubbo scenario runs; nginx and haproxy do not speak it):
 *
 *   dubbo-load ──▶ direct ─────────────────────────────────────────────▶ provider :dubboPlain / :dubboGroup2
 *              ──▶ sluice :dubboHeader     route service = interface ──▶ dubbo_plain  (:dubboPlain)
 *              ──▶ sluice :dubboAttachment route type=transfer ───────▶ dubbo_groups, labels group=Group_2
 *                                                                       (:dubboPlain unlabelled, :dubboGroup2)
 */
import YAML from 'yaml';

export const BODY = 'sluice-bench:' + 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(3).slice(0, 87);
if (Buffer.byteLength(BODY) !== 100) throw new Error('BODY must be 100 bytes');

export interface Ports {
  up1: number; up2: number;
  sluiceH1: number; sluiceH2: number; sluiceAdmin: number;
  nginxH1: number; nginxH2: number;
  haproxyH1: number; haproxyH2: number;
  /** Dubbo: the provider's two ports and Sluice's two listeners (see the diagram above). */
  dubboPlain?: number; dubboGroup2?: number;
  sluiceDubboHeader?: number; sluiceDubboAttachment?: number;
  /** Filter variants (see FILTER VARIANTS below): the second upstream, and Sluice's listeners. */
  up3: number; up4: number; dubboShadow?: number;
  sluiceH1Fault0: number; sluiceH1Mirror: number; sluiceH2Fault0: number; sluiceH2Mirror: number;
  sluiceDubboFault0?: number; sluiceDubboMirror?: number;
  /** Rate limit variants: a rule that matches and never refuses, one that refuses every request. */
  sluiceH1RateLimit: number; sluiceH1RateLimited: number;
  /** nginx (`limit_req`) and haproxy (a stick table) refusing every request with 429, for the same ratio. */
  nginxH1RateLimited?: number; haproxyH1RateLimited?: number;
  /** An inbound listener: adaptive limiting on (it applies to inbound calls), never refusing. */
  sluiceH1Adaptive?: number;
  /** haproxy in `mode tcp` in front of the Dubbo provider's :dubboPlain (Dubbo write system calls, beside Sluice's). */
  haproxyDubbo?: number;
}

/**
 * Large bodies (http1-upload, http1-download): the upstream serves a file of BIG_BODY_BYTES at
 * BIG_DOWNLOAD, and at BIG_UPLOAD reads a request body whole (in memory) before it answers the
 * 100 bytes; the proxies stream both ways (nginx: no body size limit, no request or response
 * buffering).
 */
export const BIG_DOWNLOAD = '/big/download';
export const BIG_UPLOAD = '/big/upload';
export const BIG_BODY_BYTES = 10 * 1024 * 1024;
export const BIG_FILE = 'big-body';

/** The interface every Dubbo bench call names (bench/load/dubbo-load.ts sends it). */
export const DUBBO_BENCH_SERVICE = 'org.sluice.bench.PaymentService';

const NGINX_COMMON = (dir: string, name: string) => `
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
`;

const NGINX_HTTP_COMMON = (dir: string, name: string) => `
  access_log off;
  client_body_temp_path ${dir}/${name}-body;
  proxy_temp_path ${dir}/${name}-proxy;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
`;

/** The upstream: nginx answering a fixed 100-byte body over HTTP/1.1 and over h2c. */
export function upstreamNginx(dir: string, p: Ports): string {
  return `${NGINX_COMMON(dir, 'upstream')}
http {
${NGINX_HTTP_COMMON(dir, 'upstream')}
  default_type text/plain;
  server {
    listen 127.0.0.1:${p.up1} backlog=16384;
    # the second upstream, where mirrored copies go
    listen 127.0.0.1:${p.up3} backlog=16384;
    location / { return 200 "${BODY}"; }
    location = ${BIG_DOWNLOAD} { alias ${dir}/${BIG_FILE}; }
    # the body is read whole before the request goes on, without it, to the 100 bytes of "/"
    # ("return" alone would answer first and discard the body as it comes)
    location = ${BIG_UPLOAD} {
      client_max_body_size 0;
      client_body_buffer_size ${BIG_BODY_BYTES + 65536};
      proxy_pass http://127.0.0.1:${p.up1}/;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    # nginx 1.22: "listen … http2" without ssl is h2c with prior knowledge only
    listen 127.0.0.1:${p.up2} http2 backlog=16384;
    listen 127.0.0.1:${p.up4} http2 backlog=16384;
    location / { return 200 "${BODY}"; }
  }
}
`;
}

export function proxyNginx(dir: string, p: Ports): string {
  const loc = `location / {
      proxy_pass http://up_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`;
  const big = `location ^~ /big/ {
      proxy_pass http://up_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      client_max_body_size 0;
      proxy_request_buffering off;
      proxy_buffering off;
    }`;
  return `${NGINX_COMMON(dir, 'nginx-proxy')}
http {
${NGINX_HTTP_COMMON(dir, 'nginx-proxy')}
  upstream up_h1 {
    server 127.0.0.1:${p.up1};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${p.nginxH1} backlog=16384;
    ${loc}
    ${big}
  }
  server {
    # h2c downstream, HTTP/1.1 upstream (nginx has no HTTP/2 proxying)
    listen 127.0.0.1:${p.nginxH2} http2 backlog=16384;
    ${loc}
  }
${p.nginxH1RateLimited ? `
  # one request a minute passes, every other is refused with 429 (refusals are logged at info,
  # below the error log's level: nothing is written per refusal)
  limit_req_zone $server_port zone=bench_always:1m rate=1r/m;
  server {
    listen 127.0.0.1:${p.nginxH1RateLimited} backlog=16384;
    limit_req zone=bench_always;
    limit_req_status 429;
    limit_req_log_level info;
    ${loc}
  }` : ''}
}
`;
}

export function proxyHaproxy(p: Ports): string {
  return `global
  nbthread 1
  # haproxy wants two fds per connection; this machine caps open files at 20000
  maxconn 9900

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s

frontend fe_h1
  bind 127.0.0.1:${p.haproxyH1}
  default_backend be_h1

frontend fe_h2
  bind 127.0.0.1:${p.haproxyH2} proto h2
  default_backend be_h2

backend be_h1
  server up 127.0.0.1:${p.up1}
${p.haproxyH1RateLimited ? `
# one request a minute passes, every other is refused with 429
frontend fe_h1_ratelimited
  bind 127.0.0.1:${p.haproxyH1RateLimited}
  stick-table type integer size 1 expire 60s store http_req_rate(60s)
  http-request track-sc0 int(1)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1 }
  default_backend be_h1
` : ''}
backend be_h2
  server up 127.0.0.1:${p.up2} proto h2
${p.haproxyDubbo && p.dubboPlain ? `
frontend fe_dubbo
  mode tcp
  bind 127.0.0.1:${p.haproxyDubbo}
  default_backend be_dubbo

backend be_dubbo
  mode tcp
  server provider 127.0.0.1:${p.dubboPlain}
` : ''}`;
}

/**
 * FILTER VARIANTS. Every Sluice in the bench runs the five filters (the default chain) with four
 * routes that use them placed first and matching nothing the load sends (a header it never
 * writes): what the filters cost a request they do not act on, the ordinary listeners' numbers.
 * Listeners of their own measure a filter that acts on every request:
 *
 *   :h1Fault0 / :h2Fault0 / :dubboFault0     fault: abort and delay at 0 %  (the draw, no effect)
 *   :h1Mirror / :h2Mirror / :dubboMirror     mirror: 100 % to a second upstream (:up3, :up4, :dubboShadow)
 *   :h1RateLimit                             a rate limit that matches every request and never refuses
 *   :h1RateLimited                           a rate limit that refuses every request (429)
 *
 * The two rate limits match on their listener, so on the other listeners a request meets the
 * filter and two rules that do not match it (a string compare each).
 */
function idleFilterRoutes(cluster: string): unknown[] {
  const never = (h: string) => ({ headers: { [h]: { present: true } } });
  return [
    { name: 'idle-fault', match: never('x-bench-fault'), action: { cluster }, fault: { abort: { status: 503, percent: 50 }, delay: { ms: 100, percent: 50 } } },
    { name: 'idle-mirror', match: never('x-bench-mirror'), action: { cluster }, mirror: { cluster, percent: 100 } },
    { name: 'idle-retry', match: never('x-bench-retry'), action: { cluster }, retry: { on: ['connect-failure', 'reset', '503'], attempts: 2, perTryTimeoutMs: 500 } },
    {
      name: 'idle-split', match: never('x-bench-split'),
      action: { split: [{ cluster, weight: 90 }, { cluster, weight: 10 }], hashOn: { header: 'x-user' } },
      requestHeaders: { set: { 'x-env': 'bench' }, remove: ['x-debug'] }, responseHeaders: { set: { 'x-served-by': 'sluice' } },
    },
  ];
}

const FAULT0 = { abort: { status: 503, percent: 0 }, delay: { ms: 100, percent: 0 } };

/** `variants`: the filter variants' listeners (see FILTER VARIANTS); the idle filter routes are always there. */
export function sluiceConfig(p: Ports, threads: number, opts: { h2?: boolean; dubbo?: boolean; variants?: boolean } = { h2: true }): string {
  const variants = opts.variants !== false;
  const listeners: unknown[] = [{ name: 'h1', address: `127.0.0.1:${p.sluiceH1}`, cluster: 'up_h1' }];
  if (variants) {
    listeners.push(
      { name: 'h1_fault0', address: `127.0.0.1:${p.sluiceH1Fault0}`, cluster: 'up_h1' },
      { name: 'h1_mirror', address: `127.0.0.1:${p.sluiceH1Mirror}`, cluster: 'up_h1' },
    );
    if (p.sluiceH1Adaptive) listeners.push({ name: 'h1_adaptive', address: `127.0.0.1:${p.sluiceH1Adaptive}`, direction: 'inbound', cluster: 'up_h1' });
  }
  const clusters: unknown[] = [
    { name: 'up_h1', protocol: 'auto', endpoints: [`127.0.0.1:${p.up1}`] },
    { name: 'shadow_h1', protocol: 'auto', endpoints: [`127.0.0.1:${p.up3}`] },
  ];
  const routes: unknown[] = [...idleFilterRoutes('up_h1')];
  const rateLimits: unknown[] = [];
  if (variants) {
    listeners.push(
      { name: 'h1_ratelimit', address: `127.0.0.1:${p.sluiceH1RateLimit}`, cluster: 'up_h1' },
      { name: 'h1_ratelimited', address: `127.0.0.1:${p.sluiceH1RateLimited}`, cluster: 'up_h1' },
    );
    rateLimits.push(
      { name: 'bench-never', match: { listener: 'h1_ratelimit' }, requestsPerSecond: 1e8, burst: 1e8 },
      { name: 'bench-always', match: { listener: 'h1_ratelimited' }, requestsPerMinute: 1, burst: 1 },
    );
    routes.push(
      { name: 'h1-fault0', match: { listener: 'h1_fault0' }, action: { cluster: 'up_h1' }, fault: FAULT0 },
      { name: 'h1-mirror', match: { listener: 'h1_mirror' }, action: { cluster: 'up_h1' }, mirror: { cluster: 'shadow_h1', percent: 100 } },
    );
  }
  if (opts.h2 !== false) {
    listeners.push({ name: 'h2', address: `127.0.0.1:${p.sluiceH2}`, cluster: 'up_h2' });
    if (variants) {
      listeners.push(
        { name: 'h2_fault0', address: `127.0.0.1:${p.sluiceH2Fault0}`, cluster: 'up_h2' },
        { name: 'h2_mirror', address: `127.0.0.1:${p.sluiceH2Mirror}`, cluster: 'up_h2' },
      );
    }
    // auto: the downstream speaks h2, so the upstream is spoken to in h2
    clusters.push(
      { name: 'up_h2', protocol: 'auto', endpoints: [`127.0.0.1:${p.up2}`] },
      { name: 'shadow_h2', protocol: 'auto', endpoints: [`127.0.0.1:${p.up4}`] },
    );
    if (variants) {
      routes.push(
        { name: 'h2-fault0', match: { listener: 'h2_fault0' }, action: { cluster: 'up_h2' }, fault: FAULT0 },
        { name: 'h2-mirror', match: { listener: 'h2_mirror' }, action: { cluster: 'up_h2' }, mirror: { cluster: 'shadow_h2', percent: 100 } },
      );
    }
  }
  if (opts.dubbo) {
    if (!p.dubboPlain || !p.dubboGroup2 || !p.sluiceDubboHeader || !p.sluiceDubboAttachment
      || !p.dubboShadow || !p.sluiceDubboFault0 || !p.sluiceDubboMirror) throw new Error('dubbo ports missing');
    // no default cluster on these listeners: a call that no route matches is refused (and counted)
    listeners.push({ name: 'dubbo_header', address: `127.0.0.1:${p.sluiceDubboHeader}` });
    listeners.push({ name: 'dubbo_attachment', address: `127.0.0.1:${p.sluiceDubboAttachment}` });
    listeners.push({ name: 'dubbo_fault0', address: `127.0.0.1:${p.sluiceDubboFault0}` });
    listeners.push({ name: 'dubbo_mirror', address: `127.0.0.1:${p.sluiceDubboMirror}` });
    routes.push(
      { name: 'dubbo-interface', match: { listener: 'dubbo_header', service: DUBBO_BENCH_SERVICE }, action: { cluster: 'dubbo_plain' } },
      { name: 'dubbo-transfer', match: { listener: 'dubbo_attachment', headers: { type: 'transfer' } }, action: { cluster: 'dubbo_groups', labels: { group: 'Group_2' } } },
      { name: 'dubbo-fault0', match: { listener: 'dubbo_fault0', service: DUBBO_BENCH_SERVICE }, action: { cluster: 'dubbo_plain' }, fault: FAULT0 },
      { name: 'dubbo-mirror', match: { listener: 'dubbo_mirror', service: DUBBO_BENCH_SERVICE }, action: { cluster: 'dubbo_plain' }, mirror: { cluster: 'dubbo_shadow', percent: 100 } },
    );
    clusters.push(
      { name: 'dubbo_plain', endpoints: [`127.0.0.1:${p.dubboPlain}`] },
      { name: 'dubbo_groups', endpoints: [`127.0.0.1:${p.dubboPlain}`, { address: `127.0.0.1:${p.dubboGroup2}`, labels: { group: 'Group_2' } }] },
      { name: 'dubbo_shadow', endpoints: [`127.0.0.1:${p.dubboShadow}`] },
    );
  }
  return YAML.stringify({
    admin: { address: `127.0.0.1:${p.sluiceAdmin}` },
    workers: { threads },
    listeners,
    routes,
    clusters,
    rateLimits,
    accessLog: { enabled: false },
    // on for h1_adaptive (the only inbound listener), measuring and counting but never refusing:
    // a target of 100 % of the host's CPU and no latency signal
    ...(variants && p.sluiceH1Adaptive ? { adaptiveLimit: { enabled: true, targetUtilization: 1, latencyTolerance: 0 } } : {}),
    // A connection whose first bytes take longer than the sniff timeout is proxied as opaque TCP.
    // On a loaded 2-core machine the load generators sometimes take over 100 ms (the default) to
    // send their first request, which would move those connections off the HTTP path being
    // measured; the harness reports any connection that was not sniffed as HTTP.
    tcp: { sniffTimeoutMs: 5000 },
    drain: { timeoutMs: 1000 },
    logLevel: 'warn',
  });
}
