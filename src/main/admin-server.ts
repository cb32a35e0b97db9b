/**
 * Admin API, on loopback by default.
 *
 *   GET  /ready         200 once every listener accepts and every worker serves; 503 starting / draining
 *   GET  /stats         Prometheus text: every counter, summed over all workers
 *   GET  /config_dump   the config in force (JSON)
 *   GET  /clusters      clusters, endpoints with labels, per-cluster counters (JSON)
 *   GET  /protection    traffic protection in force (JSON): rateLimits, adaptive, clusterLimits, breakers, alarms
 *   GET  /alarms        alarms (state, value, threshold, since, action and until when) and the actions in force
 *   POST /config        replace the config (YAML body); 400 with every error if invalid
 *   POST /drain         stop accepting, drain open connections, exit
 *   GET /certs          the workload identity in force: SPIFFE ID, serial, validity, seconds to expiry
 *   POST /certs         install a workload identity ({ cert, key, ca } PEM, JSON), held in memory only
 *   GET /plaintext-callers  inbound plaintext callers seen recently (address, listener, times, counts), most recent first
 *
 * Reading is open to anyone who reaches the address; every POST (and so every change, /debug
 * included) needs `Authorization: Bearer <token>`, the token from admin.tokenFile (admin-token.ts).
 * The health address (`--health-address`, reachable from outside the pod) serves GET /ready and
 * GET /stats only, for kubelet probes and Prometheus, and GET /app-health/<container>/<probe>: the
 * application's own probes that `sluice inject` rewrote to come here (app-probes.ts).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseConfigText, parseDocument, parseEndpointList, type EndpointConfig, type SluiceConfig } from '../config/config';
import { ConfigError, SluiceError } from '../errors';
import { countProcessLogDrops, log } from '../log';
import { parseAddress } from '../net/address';
import type { Sluice } from './sluice';
import type { AppProber } from './app-probes';
import { protectionView, renderBreakers } from '../protection';
import { bearerMatches, loadAdminToken, removeAdminToken, type AdminToken } from './admin-token';

const MAX_BODY = 4 << 20;

export class AdminServer {
  private readonly server: http.Server;
  /** GET /ready and GET /stats, on an address kubelet and Prometheus can reach (the admin API stays on loopback). */
  private health: http.Server | null = null;
  private token: AdminToken | null = null;

  constructor(private readonly sluice: Sluice, private readonly opts: { debugEndpoints: boolean; appProbes?: AppProber }) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => this.send(res, 500, `${(err as Error).message}\n`));
    });
    this.server.keepAliveTimeout = 5000;
    countProcessLogDrops((n) => sluice.stats.add(sluice.stats.slot('sluice_log_lines_dropped_total', { log: 'process' }), n));
  }

  async listen(address: string): Promise<void> {
    const { host, port } = parseAddress(address);
    this.token = loadAdminToken(this.sluice.currentConfig.admin.tokenFile);
    if (this.token.readableByOthers) log.warn({ tokenFile: this.token.file }, 'the admin token file can be read by other users: make it 0600');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.code ?? err.message;
        reject(new SluiceError('ERR_ADMIN_LISTEN', `cannot listen on the admin address ${address} (admin.address): ${why}`));
      });
      this.server.listen({ host, port }, () => { this.server.removeAllListeners('error'); resolve(); });
    });
    log.info({ tokenFile: this.token.file }, 'admin API: POST requests need "authorization: Bearer <the token in tokenFile>"');
  }

  listenHealth(address: string): Promise<void> {
    const { host, port } = parseAddress(address);
    const server = http.createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      const probe = req.method === 'GET' ? this.opts.appProbes?.answer(path) : null;
      if (req.method === 'GET' && path === '/ready') {
        this.readiness(res);
      } else if (req.method === 'GET' && path === '/stats') {
        this.sendStats(res);
      } else if (probe) {
        void probe.then((a) => { if (!res.destroyed) this.send(res, a.status, a.body); });
      } else {
        this.send(res, 404, 'not found\n');
      }
    });
    this.health = server;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`health address ${address}: ${err.code ?? err.message}`)));
      server.listen({ host, port }, () => { server.removeAllListeners('error'); resolve(); });
    });
  }

  address(): AddressInfo | null {
    const a = this.server.address();
    return a && typeof a === 'object' ? a : null;
  }

  healthAddress(): AddressInfo | null {
    const a = this.health?.address();
    return a && typeof a === 'object' ? a : null;
  }

  close(): Promise<void> {
    const servers = [this.server, ...(this.health ? [this.health] : [])];
    return Promise.all(servers.map((srv) => new Promise<void>((r) => {
      if (!srv.listening) { r(); return; }
      srv.close(() => r());
      srv.closeAllConnections();
    }))).then(() => removeAdminToken(this.token));
  }

  private sendStats(res: http.ServerResponse): void {
    const s = this.sluice;
    s.refreshConnectionGauge();
    const peers = s.currentConfig.tls ? s.peerStats.render() : '';
    this.send(res, 200, s.registry.render(s.shared) + s.rpcStats.render() + s.adaptive.render() + s.alarms.render() + renderBreakers(s.shared.memory, s.currentConfig) + peers,
      'text/plain; version=0.0.4; charset=utf-8');
  }

  /** 200 only once every listener accepts and every worker serves, and until the drain begins. */
  private readiness(res: http.ServerResponse): void {
    const why = this.sluice.notReady();
    if (why) this.send(res, 503, `${why}\n`);
    else this.send(res, 200, 'ready\n');
  }

  private send(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private json(res: http.ServerResponse, status: number, value: unknown): void {
    this.send(res, status, JSON.stringify(value, null, 2) + '\n', 'application/json');
  }

  private readBody(req: http.IncomingMessage): Promise<string | null> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        if (n > MAX_BODY) { resolve(null); req.destroy(); return; }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  /**
   * `GET`: the cluster's endpoints in force and where they come from; `PUT` with
   * `{ "endpoints": [...] }` (JSON or YAML, entries as in clusters[].endpoints): replace them on
   * every worker without a config reload; `DELETE`: back to the config's list.
   */
  private async clusterEndpoints(req: http.IncomingMessage, res: http.ServerResponse, cluster: string): Promise<void> {
    const s = this.sluice;
    const now = s.endpointsOf(cluster);
    if (!now) { req.resume(); this.send(res, 404, `no cluster "${cluster}"\n`); return; }
    const answer = () => {
      const e = s.endpointsOf(cluster)!;
      this.json(res, 200, { cluster, source: e.source, version: e.version, endpoints: e.endpoints, emptySubsets: emptySubsets(s.currentConfig, cluster, e.endpoints) });
    };
    if (req.method === 'GET' || req.method === 'HEAD') { req.resume(); answer(); return; }
    if (req.method === 'DELETE') { req.resume(); s.setEndpoints(cluster, null); answer(); return; }
    if (req.method !== 'PUT') {
      req.resume();
      res.setHeader('allow', 'GET, PUT, DELETE');
      this.send(res, 405, 'GET, PUT or DELETE\n');
      return;
    }
    const body = await this.readBody(req);
    if (body === null) { this.send(res, 413, 'endpoint list too large\n'); return; }
    let list;
    try {
      list = parseEndpointList(parseDocument(body, `PUT /clusters/${cluster}/endpoints`), `PUT /clusters/${cluster}/endpoints`);
    } catch (err) {
      if (err instanceof ConfigError) this.json(res, 400, { error: err.code, issues: err.issues });
      else this.json(res, 400, { error: (err as { code?: string }).code ?? 'ERR', message: (err as Error).message });
      return;
    }
    try {
      s.setEndpoints(cluster, list);
    } catch (err) {
      this.json(res, 409, { error: (err as { code?: string }).code ?? 'ERR', message: (err as Error).message });
      return;
    }
    answer();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const s = this.sluice;
    const route = `${req.method} ${url.pathname}`;
    if (req.method !== 'GET' && req.method !== 'HEAD' && !bearerMatches(req.headers.authorization, this.token?.token ?? '')) {
      req.resume();
      res.setHeader('www-authenticate', 'Bearer realm="sluice admin"');
      this.send(res, 401, `${req.method} needs "authorization: Bearer <token>", the token in ${this.token?.file ?? 'admin.tokenFile'}\n`);
      return;
    }
    const ep = /^\/clusters\/([^/]+)\/endpoints$/.exec(url.pathname);
    if (ep) { await this.clusterEndpoints(req, res, ep[1]); return; }
    switch (route) {
      case 'GET /ready':
        this.readiness(res);
        return;
      case 'GET /stats':
        this.sendStats(res);
        return;
      case 'GET /certs':
        this.json(res, 200, s.certs.view());
        return;
      case 'GET /plaintext-callers':
        this.json(res, 200, { enabled: s.currentConfig.tls !== undefined, callers: s.peerStats.plaintextCallers() });
        return;
      case 'POST /certs': {
        // a new workload identity, held in memory: { "cert": PEM, "key": PEM, "ca": PEM }
        const body = await this.readBody(req);
        if (body === null) { this.send(res, 413, 'too large\n'); return; }
        let doc: unknown;
        try { doc = JSON.parse(body); } catch { this.json(res, 400, { error: 'ERR_BAD_JSON', message: 'the body must be JSON: { "cert": PEM, "key": PEM, "ca": PEM }' }); return; }
        const d = doc as Record<string, unknown>;
        if (typeof d !== 'object' || d === null || typeof d.cert !== 'string' || typeof d.key !== 'string' || typeof d.ca !== 'string') {
          this.json(res, 400, { error: 'ERR_BAD_CERTS', message: 'cert, key and ca are required, each a PEM string' });
          return;
        }
        try {
          s.certs.push(d.cert, d.key, d.ca);
        } catch (err) {
          this.json(res, 400, { error: (err as { code?: string }).code ?? 'ERR', reason: (err as { reason?: string }).reason, message: (err as Error).message });
          return;
        }
        this.json(res, 200, s.certs.view());
        return;
      }
      case 'GET /protection':
        // what protects the application now, by config section: rate limits, adaptive limiting,
        // cluster limits and circuit breakers
        this.json(res, 200, { ...s.protection(), adaptive: s.adaptive.view(), ...protectionView(s.shared.memory, s.currentConfig), alarms: s.alarms.view() });
        return;
      case 'GET /alarms':
        this.json(res, 200, s.alarms.view());
        return;
      case 'GET /config_dump':
        this.json(res, 200, { version: s.configVersion, config: redacted(s.currentConfig) });
        return;
      case 'GET /clusters': {
        const value = (name: string, cluster: string) => s.stats.get(s.stats.slot(name, { cluster }));
        const clusterStats = (name: string) => ({
          upstream_cx_active: value('sluice_upstream_cx_active', name),
          upstream_rq_active: value('sluice_upstream_rq_active', name),
          upstream_rq_total: value('sluice_upstream_rq_total', name),
          upstream_cx_connect_fail_total: value('sluice_upstream_cx_connect_fail_total', name),
        });
        const rc = s.currentConfig.registry.cluster;
        this.json(res, 200, {
          clusters: [
            ...s.currentConfig.clusters.map((c) => ({
              name: c.name,
              protocol: c.protocol,
              lbPolicy: c.lbPolicy,
              endpointSource: s.endpointsOf(c.name)!.source,
              endpoints: s.endpointsOf(c.name)!.endpoints.map((e) => ({ address: e.address, labels: e.labels, weight: e.weight, health: 'healthy' })),
              stats: clusterStats(c.name),
            })),
            // one cluster per service found in a registry, with each provider's labels and where it came from
            ...s.discovery.list().map(({ name, state, sub, warming }) => ({
              name,
              protocol: 'auto',
              lbPolicy: rc.lbPolicy,
              endpointSource: 'registry',
              registry: {
                kind: sub.kind, service: sub.service, state, stale: sub.stale, held: sub.held, pinned: sub.pinned, version: sub.version,
              },
              // weight: what calls are balanced by now; registryWeight: the provider's own, while it warms up
              endpoints: sub.endpoints.map((e) => {
                const w = warming?.get(e.address);
                return { address: e.address, labels: e.labels, weight: w ?? e.weight, ...(w !== undefined ? { registryWeight: e.weight } : {}), source: e.source, id: e.id, health: 'healthy' };
              }),
              stats: clusterStats(name),
            })),
          ],
          registries: s.discovery.status(),
        });
        return;
      }
      case 'POST /config': {
        const body = await this.readBody(req);
        if (body === null) { this.send(res, 413, 'config too large\n'); return; }
        try {
          await s.applyConfig(parseConfigText(body, 'pushed config'));
          this.json(res, 200, { version: s.configVersion });
        } catch (err) {
          s.configRefused(err);
          if (err instanceof ConfigError) this.json(res, 400, { error: err.code, issues: err.issues });
          else this.json(res, 400, { error: (err as { code?: string }).code ?? 'ERR', message: (err as Error).message });
        }
        return;
      }
      case 'POST /drain':
        this.send(res, 202, 'draining\n');
        s.requestStop();
        return;
      case 'POST /debug/kill_worker':
        if (this.opts.debugEndpoints) { this.send(res, s.killWorker() ? 200 : 409, 'ok\n'); return; }
        break;
      case 'POST /debug/stall_worker': {
        // the worker kill_worker ends stops taking connections for ?ms= (default 1000, at most 60 s)
        const ms = Math.min(60_000, Math.max(0, Number(url.searchParams.get('ms') ?? 1000) || 0));
        if (this.opts.debugEndpoints) { this.send(res, (await s.stallWorker(ms)) ? 200 : 409, 'ok\n'); return; }
        break;
      }
      default:
        break;
    }
    this.send(res, 404, 'not found\n');
  }
}

/** The config as /config_dump shows it: registry passwords replaced. */
function redacted(config: SluiceConfig): SluiceConfig {
  if (!config.registries.some((r) => r.auth)) return config;
  return {
    ...config,
    registries: config.registries.map((r) => (r.auth
      ? { ...r, auth: { digest: `${r.auth.digest.slice(0, Math.max(0, r.auth.digest.indexOf(':')))}:<redacted>` } }
      : r)),
  };
}

/** Routes to label subsets of `cluster` that none of `endpoints` has: their requests get 503 until one does. */
function emptySubsets(config: SluiceConfig, cluster: string, endpoints: readonly EndpointConfig[]): string[] {
  const out: string[] = [];
  config.routes.forEach((r, i) => {
    const labels = r.action.cluster === cluster ? r.action.labels : undefined;
    if (!labels) return;
    const want = Object.entries(labels);
    if (!endpoints.some((e) => want.every(([k, v]) => e.labels[k] === v))) out.push(r.name ?? `routes[${i}]`);
  });
  return out;
}
