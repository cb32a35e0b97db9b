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
import { httpUpstream, type Upstream } from '../helpers/harness';
import { loadEcho } from './filter-peers';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const protocol: any = require('dubbo-remoting/lib/protocol');

export type Behaviour = 'ok' | 'fail' | 'hold' | number;

export interface Switchable {
  port: number;
  /** What the next requests get: 'ok' (200), 'fail' (503, UNAVAILABLE, Dubbo SERVER_ERROR), 'hold' (no answer until release()), or an HTTP status. */
  mode: Behaviour;
  /** Requests that reached the upstream. */
  readonly hits: number;
  /** Requests held now. */
  readonly held: number;
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
      else answer(res, m);
    });
  });
  return {
    port: up.port,
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

/** A Dubbo provider (frames split here, calls decoded by dubbo-remoting): 'ok' returns "up", 'fail' answers SERVER_ERROR (80), a number answers that status. */
export async function dubboSwitchable(): Promise<Switchable> {
  let hits = 0;
  const state = { mode: 'ok' as Behaviour };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        const frame = buf.subarray(0, 16 + buf.readUInt32BE(12));
        buf = buf.subarray(frame.length);
        const id = { idHi: frame.readUInt32BE(4), idLo: frame.readUInt32BE(8) };
        if ((frame[2] & 0x20) !== 0) {
          if ((frame[2] & 0x40) !== 0) sock.write(Buffer.concat([Buffer.from([0xda, 0xbb, 0x22, 20]), frame.subarray(4, 12), Buffer.from([0, 0, 0, 1, 0x4e])]));
          continue;
        }
        const msg = protocol.decode(frame, {});
        if (msg.packetType !== 'request') continue;
        hits++;
        const m = state.mode;
        if (m === 'fail') sock.write(encodeErrorResponse(id, 80, 'provider failed'));
        else if (typeof m === 'number') sock.write(encodeErrorResponse(id, m, 'provider says no'));
        else sock.write(encodeResponse({ id, value: 'up', requestDubboVersion: msg.data.requestProps?.dubbo }));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    get mode() { return state.mode; },
    set mode(m: Behaviour) { state.mode = m; },
    get hits() { return hits; },
    held: 0,
    release() {},
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
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
