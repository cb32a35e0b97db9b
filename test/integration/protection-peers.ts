/**
 * Upstreams for the circuit breaking and fallback tests whose behaviour a test switches while they
 * run: answer, fail (HTTP 503 or a chosen status, gRPC UNAVAILABLE, a Dubbo error status), or hold
 * requests until released. Each counts what reached it, so a test can tell a call Sluice refused
 * from one the upstream answered.
 */
import * as grpc from '@grpc/grpc-js';
import { once } from 'node:events';
import type http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { encodeErrorResponse, encodeResponse } from '../../src/protocols/dubbo';
import { get, httpUpstream, type Upstream } from '../helpers/harness';
import { dubboProvider, loadEcho } from './filter-peers';

export type Behaviour = 'ok' | 'fail' | 'hold' | 'reset' | number;

export interface Switchable {
  port: number;
  /** What the next requests get: 'ok' (200), 'fail' (503, UNAVAILABLE, Dubbo SERVER_ERROR), 'hold' (no answer until release()), 'reset' (HTTP: the connection closed, no answer), or an HTTP status. */
  mode: Behaviour;
  /** Requests that reached the upstream. */
  readonly hits: number;
  /** Requests held now. */
  readonly held: number;
  /** Connections accepted (HTTP only). */
  readonly connections?: number;
  release(): void;
  close(): Promise<void> | void;
}

export async function httpSwitchable(): Promise<Switchable> {
  const held: Array<() => void> = [];
  let hits = 0;
  const state = { mode: 'ok' as Behaviour };
  const answer = (res: http.ServerResponse, m: Behaviour) => {
    const status = m === 'fail' ? 503 : typeof m === 'number' ? m : 200;
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`upstream ${status}\n`);
  };
  const up: Upstream = await httpUpstream((req, res) => {
    hits++;
    req.resume();
    req.on('end', () => {
      const m = state.mode;
      if (m === 'hold') held.push(() => answer(res, 'ok'));
      else if (m === 'reset') req.socket.destroy();
      else answer(res, m);
    });
  });
  let connections = 0;
  up.server.on('connection', () => { connections++; });
  return {
    port: up.port,
    get connections() { return connections; },
    get mode() { return state.mode; },
    set mode(m: Behaviour) { state.mode = m; },
    get hits() { return hits; },
    get held() { return held.length; },
    release() { for (const f of held.splice(0)) f(); },
    close: () => up.close(),
  };
}

export async function grpcSwitchable(): Promise<Switchable> {
  let hits = 0;
  const state = { mode: 'ok' as Behaviour };
  const server = new grpc.Server();
  server.addService(loadEcho().service, {
    Unary(_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      hits++;
      if (state.mode === 'fail') cb({ code: grpc.status.UNAVAILABLE, details: 'upstream down' } as grpc.ServiceError);
      else if (typeof state.mode === 'number') cb({ code: state.mode, details: 'upstream says no' } as grpc.ServiceError);
      else cb(null, { message: 'up', index: 0, via: '' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    port,
    get mode() { return state.mode; },
    set mode(m: Behaviour) { state.mode = m; },
    get hits() { return hits; },
    held: 0,
    release() {},
    close: () => server.forceShutdown(),
  };
}

/** A Dubbo provider: 'ok' returns "up", 'fail' answers SERVER_ERROR (80), a number answers that status. */
export async function dubboSwitchable(): Promise<Switchable> {
  const state = { mode: 'ok' as Behaviour };
  const p = await dubboProvider(({ id, props }) => {
    const m = state.mode;
    if (m === 'fail') return encodeErrorResponse(id, 80, 'provider failed');
    if (typeof m === 'number') return encodeErrorResponse(id, m, 'provider says no');
    return encodeResponse({ id, value: 'up', requestDubboVersion: props.dubbo });
  });
  return {
    port: p.port,
    get mode() { return state.mode; },
    set mode(m: Behaviour) { state.mode = m; },
    get hits() { return p.calls; },
    held: 0,
    release() {},
    close: () => p.close(),
  };
}

/** A port nothing listens on (bound, then closed): connections to it are refused. */
export async function deadPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  s.close();
  await once(s, 'close');
  return port;
}

// ── the admin view ──────────────────────────────────────────────────────────

export interface BreakerRow { cluster: string; scope: string; target: string; state: string; mode: string; opened: number; halfOpened: number; closed: number; refused: number; shadowRefused: number }

export interface Limit { max: number; inUse: number }
export async function protection(admin: string): Promise<{ clusterLimits: Array<{ cluster: string; requests: Limit; connections: Limit }>; breakers: BreakerRow[] }> {
  const r = await get(`${admin}/protection`);
  return JSON.parse(r.body);
}

export async function breakersOf(admin: string, cluster: string): Promise<BreakerRow[]> {
  return (await protection(admin)).breakers.filter((b) => b.cluster === cluster);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The breaker rows of `cluster` once `pick` finds one in `state`: a breaker learns an outcome as
 * its request finishes, which can be a moment after the client has its answer.
 */
export async function breakersWhen(admin: string, cluster: string, state: string, pick: (rows: BreakerRow[]) => BreakerRow | undefined = (r) => r[0]): Promise<BreakerRow[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const rows = await breakersOf(admin, cluster);
    if (pick(rows)?.state === state || Date.now() > deadline) return rows;
    await sleep(20);
  }
}
