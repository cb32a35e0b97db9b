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
}

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
    location / { return 200 "${BODY}"; }
  }
  server {
    # nginx 1.22: "listen … http2" without ssl is h2c with prior knowledge only
    listen 127.0.0.1:${p.up2} http2 backlog=16384;
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
  }
  server {
    # h2c downstream, HTTP/1.1 upstream (nginx has no HTTP/2 proxying)
    listen 127.0.0.1:${p.nginxH2} http2 backlog=16384;
    ${loc}
  }
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

backend be_h2
  server up 127.0.0.1:${p.up2} proto h2
`;
}

export function sluiceConfig(p: Ports, threads: number, opts: { h2?: boolean; dubbo?: boolean } = { h2: true }): string {
  const listeners: unknown[] = [{ name: 'h1', address: `127.0.0.1:${p.sluiceH1}`, cluster: 'up_h1' }];
  const clusters: unknown[] = [{ name: 'up_h1', protocol: 'auto', endpoints: [`127.0.0.1:${p.up1}`] }];
  if (opts.h2 !== false) {
    listeners.push({ name: 'h2', address: `127.0.0.1:${p.sluiceH2}`, cluster: 'up_h2' });
    // auto: the downstream speaks h2, so the upstream is spoken to in h2
    clusters.push({ name: 'up_h2', protocol: 'auto', endpoints: [`127.0.0.1:${p.up2}`] });
  }
  const routes: unknown[] = [];
  if (opts.dubbo) {
    if (!p.dubboPlain || !p.dubboGroup2 || !p.sluiceDubboHeader || !p.sluiceDubboAttachment) throw new Error('dubbo ports missing');
    // no default cluster on these listeners: a call that no route matches is refused (and counted)
    listeners.push({ name: 'dubbo_header', address: `127.0.0.1:${p.sluiceDubboHeader}` });
    listeners.push({ name: 'dubbo_attachment', address: `127.0.0.1:${p.sluiceDubboAttachment}` });
    routes.push(
      { name: 'dubbo-interface', match: { listener: 'dubbo_header', service: DUBBO_BENCH_SERVICE }, action: { cluster: 'dubbo_plain' } },
      { name: 'dubbo-transfer', match: { listener: 'dubbo_attachment', headers: { type: 'transfer' } }, action: { cluster: 'dubbo_groups', labels: { group: 'Group_2' } } },
    );
    clusters.push(
      { name: 'dubbo_plain', endpoints: [`127.0.0.1:${p.dubboPlain}`] },
      { name: 'dubbo_groups', endpoints: [`127.0.0.1:${p.dubboPlain}`, { address: `127.0.0.1:${p.dubboGroup2}`, labels: { group: 'Group_2' } }] },
    );
  }
  return YAML.stringify({
    admin: { address: `127.0.0.1:${p.sluiceAdmin}` },
    workers: { threads },
    listeners,
    routes,
    clusters,
    accessLog: { enabled: false },
    // A connection whose first bytes take longer than the sniff timeout is proxied as opaque TCP.
    // On a loaded 2-core machine the load generators sometimes take over 100 ms (the default) to
    // send their first request, which would move those connections off the HTTP path being
    // measured; the harness reports any connection that was not sniffed as HTTP.
    tcp: { sniffTimeoutMs: 5000 },
    drain: { timeoutMs: 1000 },
    logLevel: 'warn',
  });
}
