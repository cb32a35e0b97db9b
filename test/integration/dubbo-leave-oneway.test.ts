/**
 * An endpoint that leaves its cluster (a config reload) while one-way calls written to it still sit
 * in the proxy's socket buffer, because the provider reads slowly: those calls must still reach it
 * (flushed, then a FIN), and the calls that follow go to the new endpoint. Nothing answers a one-way
 * call, so nothing else would tell the consumer that one was lost.
 */
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import YAML from 'yaml';
import { adminPost, startSluice, stats, waitFor, withTestDefaults } from '../helpers/harness';
import { SERVICE, str } from './dubbo-peers';

const Request = require('dubbo-remoting/lib/protocol/request');
const Invocation = require('dubbo-remoting/lib/protocol/invocation');

const CALLS = 300;
const PAD = 'x'.repeat(48 * 1024);

function oneWay(n: number): Buffer {
  const req = new Request(n);
  req.isTwoWay = false;
  req.data = new Invocation({ methodName: 'notify', args: [str(`call-${n}-${PAD}`)], attachments: { dubbo: '2.0.2', path: SERVICE, version: '1.0.0' } });
  return req.encode({ codecType: 'hessian2' });
}

interface Counting {
  port: number;
  /** Call numbers read, in order, from every connection. */
  calls: number[];
  /** How each connection ended: 'end' (a FIN after everything) or the error. */
  endings: string[];
  resume(): void;
  close(): Promise<void>;
}

/** A provider that splits frames and records each call's number; `paused` ones read nothing until resume(). */
async function counting(paused: boolean): Promise<Counting> {
  const socks: net.Socket[] = [];
  const c: Counting = { port: 0, calls: [], endings: [], resume: () => { paused = false; for (const s of socks) s.resume(); }, close: async () => {} };
  const server = net.createServer((sock) => {
    socks.push(sock);
    if (paused) sock.pause();
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        const body = buf.subarray(16, 16 + buf.readUInt32BE(12)).toString('latin1');
        buf = buf.subarray(16 + buf.readUInt32BE(12));
        const m = /call-(\d+)-/.exec(body);
        if (m) c.calls.push(Number(m[1]));
      }
    });
    sock.on('end', () => { c.endings.push(buf.length === 0 ? 'end' : `end in a frame (${buf.length} bytes left)`); sock.end(); });
    sock.on('error', (e: NodeJS.ErrnoException) => c.endings.push(e.code ?? e.message));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  c.port = (server.address() as AddressInfo).port;
  c.close = () => new Promise<void>((r) => { for (const s of socks) s.destroy(); server.close(() => r()); });
  return c;
}

function doc(endpoint: number): Record<string, unknown> {
  return withTestDefaults({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${endpoint}`] }],
  });
}

t.test('an endpoint leaves while one-way calls wait in the socket for a slow provider: every call arrives, once', async (t) => {
  const a = await counting(true);
  const b = await counting(false);
  const s = await startSluice(doc(a.port));
  t.teardown(async () => { await s.stop(); await a.close(); await b.close(); });

  const consumer = net.connect(s.port('app'), '127.0.0.1');
  await once(consumer, 'connect');
  consumer.on('error', () => {});
  for (let n = 1; n <= CALLS; n++) consumer.write(oneWay(n));

  // the provider reads nothing: the proxy's writes to it back up, and it stops reading the consumer
  let last = -1;
  let still = 0;
  await waitFor(async () => {
    const sent = (await stats(s.admin)).get('sluice_upstream_rq_total{cluster="c"}') ?? 0;
    still = sent > 0 && sent === last ? still + 1 : 0;
    last = sent;
    return still >= 3;
  }, 15_000, 'the proxy to stop sending to the stalled provider');
  t.ok(last < CALLS, `the proxy is backed up (${last} of ${CALLS} calls out)`);

  const r = await adminPost(s.admin, '/config', YAML.stringify(doc(b.port)));
  t.equal(r.status, 200, `the reload is applied: ${r.body}`);
  a.resume();

  await waitFor(() => a.calls.length + b.calls.length >= CALLS && a.endings.length > 0, 20_000,
    `every call to arrive (a: ${a.calls.length} calls, endings ${a.endings.join()}; b: ${b.calls.length})`);
  t.same(a.endings, ['end'], 'the old endpoint\'s connection ends with a FIN after its last frame, not a reset');
  const all = [...a.calls, ...b.calls].sort((x, y) => x - y);
  t.same(all, Array.from({ length: CALLS }, (_, k) => k + 1), 'every one-way call arrived exactly once');
  t.ok(a.calls.length >= last, `the old endpoint got every call written to it (${a.calls.length} ≥ ${last})`);
  t.ok(b.calls.length > 0, `the calls after the reload went to the new endpoint (${b.calls.length})`);
  consumer.destroy();
});
