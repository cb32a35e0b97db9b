/**
 * Admin API, on loopback by default.
 *
 *   GET  /ready         200 while serving, 503 while draining
 *   GET  /stats         Prometheus text: every counter, summed over all workers
 *   GET  /config_dump   the config in force (JSON)
 *   GET  /clusters      clusters, endpoints with labels, per-cluster counters (JSON)
 *   POST /config        replace the config (YAML body); 400 with every error if invalid
 *   POST /drain         stop accepting, drain open connections, exit
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseConfigText } from '../config/config';
import { ConfigError } from '../errors';
import { parseAddress } from '../net/address';
import type { Sluice } from '../sluice';

const MAX_BODY = 4 << 20;

export class AdminServer {
  private readonly server: http.Server;
  /** GET /ready alone, on an address kubelet can reach (the admin API stays on loopback). */
  private health: http.Server | null = null;

  constructor(private readonly sluice: Sluice, private readonly opts: { debugEndpoints: boolean }) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => this.send(res, 500, `${(err as Error).message}\n`));
    });
    this.server.keepAliveTimeout = 5000;
  }

  listen(address: string): Promise<void> {
    const { host, port } = parseAddress(address);
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => { this.server.removeListener('error', reject); resolve(); });
    });
  }

  listenHealth(address: string): Promise<void> {
    const { host, port } = parseAddress(address);
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/ready') {
        if (this.sluice.draining) this.send(res, 503, 'draining\n');
        else this.send(res, 200, 'ready\n');
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
    }))).then(() => undefined);
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const s = this.sluice;
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'GET /ready':
        if (s.draining) this.send(res, 503, 'draining\n');
        else this.send(res, 200, 'ready\n');
        return;
      case 'GET /stats':
        this.send(res, 200, s.registry.render(s.shared) + s.rpcStats.render(), 'text/plain; version=0.0.4; charset=utf-8');
        return;
      case 'GET /config_dump':
        this.json(res, 200, { version: s.configVersion, config: s.currentConfig });
        return;
      case 'GET /clusters': {
        const value = (name: string, cluster: string) => s.stats.get(s.stats.slot(name, { cluster }));
        this.json(res, 200, {
          clusters: s.currentConfig.clusters.map((c) => ({
            name: c.name,
            protocol: c.protocol,
            lbPolicy: c.lbPolicy,
            endpoints: c.endpoints.map((e) => ({ address: e.address, labels: e.labels, weight: e.weight, health: 'healthy' })),
            stats: {
              upstream_cx_active: value('sluice_upstream_cx_active', c.name),
              upstream_rq_active: value('sluice_upstream_rq_active', c.name),
              upstream_rq_total: value('sluice_upstream_rq_total', c.name),
              upstream_cx_connect_fail_total: value('sluice_upstream_cx_connect_fail_total', c.name),
            },
          })),
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
      default:
        break;
    }
    this.send(res, 404, 'not found\n');
  }
}
