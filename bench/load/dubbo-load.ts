/**
 * A Dubbo 2 load generator: keeps N two-way calls in flight over C connections for a fixed time,
 * and reports calls/s and latency percentiles. No published Node tool does this (wrk and h2load
 * speak HTTP only); it uses the project's own codec (encodeRequest, DubboFrameDecoder).
 *
 *   node dist/bench/load/dubbo-load.js --port P [--host H] [--connections C] [--inflight N] [--seconds S]
 *
 * Every call is the same 1 KiB frame (service org.sluice.bench.PaymentService, method transfer, one
 * string argument, attachments including type=transfer), only the id changes. A call completes
 * when a response with its id arrives; each connection starts a new call for each one that
 * completes, so N stay in flight. Prints one JSON line (DubboLoadResult) on stdout.
 * Used as a program by bench/load.ts through dubboLoad() (so its CPU is not the proxy's or the
 * harness's), in the same shape as wrk and h2load results.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  DubboFrameDecoder, DubboResponse, DubboStatus, encodeRequest, rewriteIdParts, type DubboFrame,
} from '../../src/protocols/dubbo';
import { exec, type LoadResult } from '../lib/clients';
import { DUBBO_BENCH_SERVICE as DUBBO_SERVICE } from '../lib/configs';

export const DUBBO_FRAME_BYTES = 1024;

export interface DubboLoadOptions { host: string; port: number; connections: number; inflight: number; seconds: number }

export interface DubboLoadResult extends LoadResult {
  /** Calls answered with a status other than OK (reported as non2xx). */
  failed: number;
  /** How many OK answers carried each returned value (which provider answered). */
  values: Record<string, number>;
  firstError?: string;
  frameBytes: number;
}

/** The call every connection sends: exactly DUBBO_FRAME_BYTES long, id 0. */
export function benchCall(): Buffer {
  const make = (pad: number) => encodeRequest({
    id: 0,
    service: DUBBO_SERVICE,
    version: '1.0.0',
    method: 'transfer',
    paramTypes: 'Ljava/lang/String;',
    args: ['x'.repeat(pad)],
    attachments: {
      path: DUBBO_SERVICE, interface: DUBBO_SERVICE, version: '1.0.0', timeout: '3000',
      type: 'transfer', traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    },
  });
  // the string's length prefix grows at a few thresholds: walk the pad to the exact size
  let pad = DUBBO_FRAME_BYTES - make(0).length;
  for (let i = 0; i < 8; i++) {
    const diff = DUBBO_FRAME_BYTES - make(pad).length;
    if (diff === 0) return make(pad);
    pad += diff;
  }
  throw new Error(`cannot build a ${DUBBO_FRAME_BYTES}-byte call`);
}

const RING = 1 << 16;

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export async function runLoad(o: DubboLoadOptions): Promise<DubboLoadResult> {
  const template = benchCall();
  const perConn = Math.max(1, Math.floor(o.inflight / o.connections));
  if (perConn >= RING) throw new Error(`at most ${RING - 1} calls in flight per connection`);
  let latencies = new Float64Array(1 << 20);
  let nLat = 0;
  let failed = 0;
  let errors = 0;
  let firstError: string | undefined;
  const values: Record<string, number> = {};
  let lastBody: Buffer | undefined;
  let lastValue = '';
  const fail = (msg: string) => { errors++; firstError ??= msg; };

  const t0 = performance.now();
  const deadline = t0 + o.seconds * 1000;
  let measuring = true;

  const conns = Array.from({ length: o.connections }, () => new Promise<void>((resolve) => {
    const start = new Float64Array(RING);
    const pending = new Uint8Array(RING);
    let nextId = 1;
    let outstanding = 0;
    let out: Buffer[] = [];
    const socket = net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    const call = () => {
      const id = nextId++;
      const b = Buffer.allocUnsafe(template.length);
      template.copy(b);
      rewriteIdParts(b, Math.floor(id / 0x1_0000_0000), id >>> 0);
      const slot = id & (RING - 1);
      if (pending[slot]) { fail(`more than ${RING} calls outstanding`); return; }
      pending[slot] = 1;
      start[slot] = performance.now();
      outstanding++;
      out.push(b);
    };
    const flush = () => {
      if (!out.length || socket.destroyed) return;
      socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
      out = [];
    };
    const finishIfDone = () => { if (!measuring && outstanding === 0) socket.end(); };
    const decoder = new DubboFrameDecoder({
      onFrame(f: DubboFrame) {
        if (f.isRequest || f.isEvent) return;
        const slot = f.idLo & (RING - 1);
        if (!pending[slot] || f.idHi !== 0) { fail(`response to unknown id ${f.id}`); return; }
        pending[slot] = 0;
        outstanding--;
        const now = performance.now();
        if (now <= deadline) {
          if (nLat === latencies.length) { const l = new Float64Array(nLat * 2); l.set(latencies); latencies = l; }
          latencies[nLat++] = now - start[slot];
        } else measuring = false;
        if (f.status !== DubboStatus.OK) {
          failed++;
          if (!firstError) {
            try { firstError = `status ${f.status}: ${DubboResponse.fromFrame(f).errorMessage()}`; } catch { firstError = `status ${f.status}`; }
          }
        } else if (lastBody && f.body.equals(lastBody)) {
          values[lastValue]++;
        } else {
          try { lastValue = String(DubboResponse.fromFrame(f).value()); } catch (err) { lastValue = `(unreadable: ${(err as Error).message})`; }
          lastBody = Buffer.from(f.body);
          values[lastValue] = (values[lastValue] ?? 0) + 1;
        }
        if (measuring) call();
      },
      onError(err) { fail(`bad frame from the target: ${err.message}`); socket.destroy(); },
    });
    socket.on('connect', () => {
      for (let i = 0; i < perConn; i++) call();
      flush();
    });
    socket.on('data', (chunk: Buffer) => { decoder.push(chunk); flush(); finishIfDone(); });
    socket.on('error', (err) => fail(`connection: ${err.message}`));
    socket.on('close', () => {
      if (outstanding > 0) fail(`connection closed with ${outstanding} calls unanswered`);
      errors += Math.max(0, outstanding - 1);
      outstanding = 0;
      resolve();
    });
    // stop starting calls at the deadline; a call still unanswered 5 s later is an error
    const stop = setTimeout(() => { measuring = false; finishIfDone(); }, o.seconds * 1000);
    const kill = setTimeout(() => socket.destroy(), o.seconds * 1000 + 5000);
    socket.once('close', () => { clearTimeout(stop); clearTimeout(kill); });
  }));
  await Promise.all(conns);
  const seconds = Math.min(o.seconds, (performance.now() - t0) / 1000);
  const sorted = latencies.subarray(0, nLat).sort();
  return {
    requests: nLat,
    seconds,
    rps: nLat / seconds,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    non2xx: failed,
    failed,
    errors,
    values,
    firstError,
    frameBytes: template.length,
    raw: '',
  };
}

/** One call (the bench call); resolves with the returned value as a string, or null on any failure or timeout. */
export function dubboCall(host: string, port: number, timeoutMs = 2000): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let done = false;
    const finish = (v: string | null) => { if (!done) { done = true; clearTimeout(timer); socket.destroy(); resolve(v); } };
    const timer = setTimeout(() => finish(null), timeoutMs);
    const decoder = new DubboFrameDecoder({
      onFrame(f) {
        if (f.isRequest || f.isEvent) return;
        if (f.status !== DubboStatus.OK) { finish(null); return; }
        try { finish(String(DubboResponse.fromFrame(f).value())); } catch { finish(null); }
      },
      onError() { finish(null); },
    });
    socket.on('connect', () => socket.write(benchCall()));
    socket.on('data', (d: Buffer) => decoder.push(d));
    socket.on('error', () => finish(null));
    socket.on('close', () => finish(null));
  });
}

/** Runs this file as a program with a hard time limit; its JSON line becomes a LoadResult. */
export async function dubboLoad(o: DubboLoadOptions): Promise<DubboLoadResult> {
  const args = [__filename, '--host', o.host, '--port', String(o.port), '--connections', String(o.connections),
    '--inflight', String(o.inflight), '--seconds', String(o.seconds)];
  const r = await exec(process.execPath, args, o.seconds * 1000 + 20_000);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (r.code !== 0 || !line) throw new Error(`dubbo-load exited ${r.timedOut ? 'after its time limit' : `with ${r.code}`}: ${r.stderr}${r.stdout}`);
  const res = JSON.parse(line) as DubboLoadResult;
  res.raw = line;
  return res;
}

function parse(argv: string[]): DubboLoadOptions {
  const o: DubboLoadOptions = { host: '127.0.0.1', port: 0, connections: 4, inflight: 64, seconds: 10 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--host') o.host = v;
    else if (k === '--port' || k === '--connections' || k === '--inflight' || k === '--seconds') {
      const n = Number(v);
      if (!(n > 0) || !Number.isInteger(n)) throw new Error(`${k} must be a positive integer`);
      o[k.slice(2) as 'port' | 'connections' | 'inflight' | 'seconds'] = n;
    } else throw new Error(`unknown option ${k}`);
  }
  if (!o.port) throw new Error('--port is required');
  return o;
}

if (require.main === module) {
  let opts: DubboLoadOptions;
  try { opts = parse(process.argv.slice(2)); } catch (err) {
    process.stderr.write(`dubbo-load: ${(err as Error).message}\n`);
    process.exit(2);
  }
  runLoad(opts).then((r) => { process.stdout.write(`${JSON.stringify(r)}\n`); }, (err) => {
    process.stderr.write(`dubbo-load: ${(err as Error).stack}\n`);
    process.exitCode = 1;
  });
}
