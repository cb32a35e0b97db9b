/**
 * The application's own kubelet probes, run by Sluice for kubelet.
 *
 * With inbound capture in strict mTLS, kubelet's plaintext probe of the application's port would
 * be refused like any other plaintext caller (and a TCP probe would only ever reach the proxy).
 * `sluice inject` therefore rewrites each probe of an application container to an HTTP GET on the
 * sidecar's health port and hands the original to the proxy in SLUICE_APP_PROBES:
 *
 *   kubelet ── GET podIP:15020/app-health/<container>/<livez|readyz|startupz> ──▶ Sluice (health address)
 *   Sluice (uid 1337, exempt from capture) ── the original probe ──▶ 127.0.0.1:<port> of the application
 *
 *   SLUICE_APP_PROBES = {"web/livez": {"httpGet": {"port": 8080, "path": "/healthz", "scheme": "HTTP"}, "timeoutSeconds": 1},
 *                        "web/readyz": {"tcpSocket": {"port": 8080}},
 *                        "grpc/livez": {"grpc": {"port": 9090, "service": ""}}}
 *
 * The answer follows kubelet's rules: an HTTP status from 200 to 399 passes (answered 200, so
 * that kubelet never follows a redirect of the application's to the health port), another status
 * is passed on, a connection that fails or a timeout is 503. TCP passes when the connection opens;
 * gRPC when grpc.health.v1.Health/Check answers SERVING. Probes of one key that arrive while one
 * runs share its answer: kubelet's period, not a caller, sets how often the application is asked.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { SluiceError } from '../errors';

export interface HttpHeader { readonly name: string; readonly value: string }

export type AppProbe =
  | { readonly httpGet: { readonly port: number; readonly path: string; readonly scheme: 'HTTP' | 'HTTPS'; readonly host?: string; readonly httpHeaders?: readonly HttpHeader[] }; readonly timeoutSeconds?: number }
  | { readonly tcpSocket: { readonly port: number; readonly host?: string }; readonly timeoutSeconds?: number }
  | { readonly grpc: { readonly port: number; readonly service?: string }; readonly timeoutSeconds?: number };

/** The probe kinds a container has, and their path segment. */
export const PROBE_PATHS: ReadonlyArray<readonly [string, string]> = [['livenessProbe', 'livez'], ['readinessProbe', 'readyz'], ['startupProbe', 'startupz']];

export const APP_HEALTH_PREFIX = '/app-health/';

const KEY = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/(livez|readyz|startupz)$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;

function bad(key: string, what: string): never {
  throw new SluiceError('ERR_APP_PROBES', `SLUICE_APP_PROBES: "${key}": ${what}`);
}

function host(key: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^[A-Za-z0-9.:-]{1,253}$/.test(v)) bad(key, 'host must be a host name or an address');
  return v;
}

/** One probe as written by `sluice inject`; throws ERR_APP_PROBES with what is wrong. */
function parseProbe(key: string, v: unknown): AppProbe {
  if (!isObj(v)) bad(key, 'must be an object');
  const t = v.timeoutSeconds;
  if (t !== undefined && !(typeof t === 'number' && Number.isInteger(t) && t >= 1 && t <= 3600)) bad(key, 'timeoutSeconds must be an integer from 1 to 3600');
  const timeoutSeconds = t as number | undefined;
  const kinds = ['httpGet', 'tcpSocket', 'grpc'].filter((k) => v[k] !== undefined);
  if (kinds.length !== 1) bad(key, 'must have exactly one of httpGet, tcpSocket, grpc');
  const spec = v[kinds[0]];
  if (!isObj(spec)) bad(key, `${kinds[0]} must be an object`);
  if (!isPort(spec.port)) bad(key, `${kinds[0]}.port must be a port number (1-65535)`);
  const port = spec.port;
  if (kinds[0] === 'tcpSocket') return { tcpSocket: { port, host: host(key, spec.host) }, timeoutSeconds };
  if (kinds[0] === 'grpc') {
    if (spec.service !== undefined && typeof spec.service !== 'string') bad(key, 'grpc.service must be a string');
    return { grpc: { port, service: spec.service as string | undefined }, timeoutSeconds };
  }
  const path = spec.path ?? '/';
  if (typeof path !== 'string' || !path.startsWith('/') || /[\s\u0000-\u001f\u007f]/.test(path)) bad(key, 'httpGet.path must start with / and hold no spaces or control characters');
  const scheme = spec.scheme ?? 'HTTP';
  if (scheme !== 'HTTP' && scheme !== 'HTTPS') bad(key, 'httpGet.scheme must be HTTP or HTTPS');
  const headers = spec.httpHeaders ?? [];
  if (!Array.isArray(headers) || !headers.every((h) => isObj(h) && typeof h.name === 'string' && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(h.name)
    && typeof h.value === 'string' && !/[\r\n\u0000]/.test(h.value))) bad(key, 'httpGet.httpHeaders must be a list of { name, value } with a valid field name and value');
  return { httpGet: { port, path, scheme, host: host(key, spec.host), httpHeaders: headers as HttpHeader[] }, timeoutSeconds };
}

/** SLUICE_APP_PROBES as `sluice inject` writes it: keys `<container>/<livez|readyz|startupz>`. */
export function parseAppProbes(text: string): Map<string, AppProbe> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new SluiceError('ERR_APP_PROBES', `SLUICE_APP_PROBES: not JSON (${(err as Error).message})`);
  }
  if (!isObj(doc)) throw new SluiceError('ERR_APP_PROBES', 'SLUICE_APP_PROBES: must be a JSON object of probes by "<container>/<livez|readyz|startupz>"');
  const out = new Map<string, AppProbe>();
  for (const [key, v] of Object.entries(doc)) {
    if (!KEY.test(key)) bad(key, 'the key must be "<container name>/<livez|readyz|startupz>"');
    out.set(key, parseProbe(key, v));
  }
  return out;
}

export interface ProbeAnswer { readonly status: number; readonly body: string }

/** Runs the application probes of SLUICE_APP_PROBES on demand. */
export class AppProber {
  private readonly running = new Map<string, Promise<ProbeAnswer>>();

  constructor(private readonly probes: ReadonlyMap<string, AppProbe>) {}

  get size(): number {
    return this.probes.size;
  }

  /** The answer for GET /app-health/<key>, or null when the path names no probe. */
  answer(path: string): Promise<ProbeAnswer> | null {
    if (!path.startsWith(APP_HEALTH_PREFIX)) return null;
    const key = path.slice(APP_HEALTH_PREFIX.length);
    const probe = this.probes.get(key);
    if (!probe) return null;
    let p = this.running.get(key);
    if (!p) {
      p = runProbe(probe).finally(() => this.running.delete(key));
      this.running.set(key, p);
    }
    return p;
  }
}

const fail = (body: string): ProbeAnswer => ({ status: 503, body: `${body}\n` });

export function runProbe(probe: AppProbe): Promise<ProbeAnswer> {
  const ms = (probe.timeoutSeconds ?? 1) * 1000;
  if ('tcpSocket' in probe) return tcpProbe(probe.tcpSocket.host ?? '127.0.0.1', probe.tcpSocket.port, ms);
  if ('grpc' in probe) return grpcProbe(probe.grpc.port, probe.grpc.service ?? '', ms);
  return httpProbe(probe.httpGet, ms);
}

function httpProbe(g: Extract<AppProbe, { httpGet: unknown }>['httpGet'], ms: number): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { 'user-agent': 'kube-probe/sluice', accept: '*/*' };
    for (const h of g.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value;
    const opts = { host: g.host ?? '127.0.0.1', port: g.port, path: g.path, method: 'GET', headers, timeout: ms, agent: false as const };
    const done = (a: ProbeAnswer) => { resolve(a); req.destroy(); };
    const onRes = (res: http.IncomingMessage) => {
      const status = res.statusCode ?? 0;
      res.resume();
      // kubelet: 200-399 passes; a redirect is not followed to the health port
      done(status >= 200 && status < 400 ? { status: 200, body: `application answered ${status}\n` } : { status: status >= 400 && status <= 599 ? status : 503, body: `application answered ${status}\n` });
    };
    const req = g.scheme === 'HTTPS'
      ? https.request({ ...opts, rejectUnauthorized: false }, onRes) // kubelet does not verify either
      : http.request(opts, onRes);
    req.on('timeout', () => done(fail(`no answer within ${ms} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => done(fail(`cannot reach the application: ${err.code ?? err.message}`)));
    req.end();
  });
}

function tcpProbe(h: string, port: number, ms: number): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const s = net.connect({ host: h, port });
    s.setTimeout(ms);
    const done = (a: ProbeAnswer) => { resolve(a); s.destroy(); };
    s.on('connect', () => done({ status: 200, body: 'connected\n' }));
    s.on('timeout', () => done(fail(`no connection within ${ms} ms`)));
    s.on('error', (err: NodeJS.ErrnoException) => done(fail(`cannot connect: ${err.code ?? err.message}`)));
  });
}

/**
 * grpc.health.v1.Health/Check, written by hand: the request is `HealthCheckRequest { string
 * service = 1 }`, the answer `HealthCheckResponse { ServingStatus status = 1 }`, SERVING = 1.
 */
function grpcProbe(port: number, service: string, ms: number): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const name = Buffer.from(service, 'utf8');
    const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    msg.copy(frame, 5);
    let settled = false;
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const timer = setTimeout(() => done(fail(`no answer within ${ms} ms`)), ms);
    function done(a: ProbeAnswer): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(a);
      session.destroy();
    }
    session.on('error', (err: NodeJS.ErrnoException) => done(fail(`cannot reach the application: ${err.code ?? err.message}`)));
    const req = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    req.on('response', (h) => { if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']); });
    req.on('trailers', (h) => { if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']); });
    req.on('data', (c: Buffer) => { if (chunks.length < 16) chunks.push(c); });
    req.on('error', (err: NodeJS.ErrnoException) => done(fail(`health check failed: ${err.code ?? err.message}`)));
    req.on('end', () => {
      if (grpcStatus !== '0') { done(fail(`health check answered grpc-status ${grpcStatus ?? 'none'}`)); return; }
      const body = Buffer.concat(chunks);
      const status = servingStatus(body.subarray(5, 5 + (body.length >= 5 ? body.readUInt32BE(1) : 0)));
      done(status === 1 ? { status: 200, body: 'SERVING\n' } : fail(`health check answered status ${status}`));
    });
    req.end(frame);
  });
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7; }
  out.push(n);
  return Buffer.from(out);
}

/** Field 1 (varint) of a HealthCheckResponse; 0 (UNKNOWN) when absent. */
function servingStatus(m: Buffer): number {
  let i = 0;
  while (i < m.length) {
    const tag = m[i++];
    if (tag === 0x08) {
      let v = 0;
      let shift = 0;
      while (i < m.length) { const b = m[i++]; v |= (b & 0x7f) << shift; if (!(b & 0x80)) break; shift += 7; }
      return v;
    }
    return 0; // HealthCheckResponse has no other field
  }
  return 0;
}
