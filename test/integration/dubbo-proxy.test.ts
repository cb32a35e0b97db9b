/**
 * Dubbo 2 through Sluice, with dubbo-remoting (an independent Hessian2 implementation) on both
 * sides: as the consumer's codec and as the provider's codec. The consumer also splits the raw
 * response stream itself to read each response's status byte, which dubbo-remoting drops.
 */
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { get, startSluice, stats, waitFor } from '../helpers/harness';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const remoting: any = require('dubbo-remoting');

const SERVICE = 'com.example.TransferService';
const str = (s: string) => ({ $class: 'java.lang.String', $: s });

interface Provider {
  name: string;
  port: number;
  /** Calls received, by method. */
  calls: string[];
  heartbeats: number;
  close(): Promise<void>;
}

/**
 * A provider on 127.0.0.1:0 that also speaks HTTP/1 on the same port (first byte decides), so one
 * route can be shown to send both protocols to the same endpoint. It answers every call with
 * "<name>:<method>:<first arg>"; `slow` answers after <second arg> ms; `hang` never answers;
 * `die` drops the connection; `attachment` answers with the value of the attachment named by the arg.
 */
async function dubboProvider(name: string): Promise<Provider> {
  const calls: string[] = [];
  const p: Partial<Provider> = { name, calls, heartbeats: 0 };
  const web = http.createServer((req, res) => { res.setHeader('x-provider', name); res.end(`${name} http ${req.url}`); });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.once('readable', () => {
      const head: Buffer | null = sock.read();
      if (!head) return;
      sock.unshift(head);
      if (head[0] !== 0xda) { web.emit('connection', sock); return; }
      const enc = remoting.encoder({});
      const dec = remoting.decoder({});
      enc.pipe(sock);
      sock.pipe(dec);
      dec.on('error', () => sock.destroy());
      dec.on('heartbeat', (hb: any) => { p.heartbeats!++; enc.writeHeartbeatAck(hb); });
      dec.on('request', (req: any) => {
        const d = req.data;
        calls.push(d.methodName);
        const arg = d.args[0];
        const answer = (v: string) => enc.writeResponse(req, { appResponse: str(v), isError: false });
        switch (d.methodName) {
          case 'hang': return;
          case 'die': sock.destroy(); return;
          case 'slow': setTimeout(() => answer(`${name}:slow:${arg}`), Number(d.args[1])); return;
          case 'attachment': answer(`${name}:${d.requestProps[arg]}`); return;
          default: answer(`${name}:${d.methodName}:${arg}`);
        }
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  p.port = (server.address() as AddressInfo).port;
  p.close = () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); });
  return p as Provider;
}

interface Answer { status: number; value?: unknown; error?: string }

/** A Dubbo consumer: dubbo-remoting's encoder and decoder over one socket. */
class Consumer {
  private readonly waiting = new Map<number, (a: Answer) => void>();
  readonly statuses = new Map<number, number>();
  private readonly hbWaiting = new Map<number, () => void>();
  private nextId = 1000;
  private raw: Buffer = Buffer.alloc(0);
  private readonly enc = remoting.encoder({});
  private readonly dec = remoting.decoder({});
  closed = false;

  constructor(readonly sock: net.Socket) {
    this.enc.pipe(sock);
    sock.on('data', (d: Buffer) => this.tap(d));
    sock.pipe(this.dec);
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      for (const [, cb] of this.waiting) cb({ status: -1, error: 'connection closed' });
      this.waiting.clear();
    });
    this.dec.on('response', (r: any) => {
      const cb = this.waiting.get(r.packetId);
      if (!cb) return;
      this.waiting.delete(r.packetId);
      const status = this.statuses.get(r.packetId) ?? -1;
      this.statuses.delete(r.packetId);
      cb(r.data.error ? { status, error: String(r.data.error.message ?? r.data.error) } : { status, value: r.data.appResponse });
    });
    this.dec.on('heartbeat_ack', (r: any) => { this.hbWaiting.get(r.packetId)?.(); this.hbWaiting.delete(r.packetId); });
  }

  static async connect(port: number): Promise<Consumer> {
    const sock = net.connect(port, '127.0.0.1');
    await once(sock, 'connect');
    return new Consumer(sock);
  }

  /** Reads each response's status byte from the raw stream (header bytes 3 and 8..11). */
  private tap(d: Buffer): void {
    this.raw = this.raw.length ? Buffer.concat([this.raw, d]) : d;
    while (this.raw.length >= 16) {
      const len = 16 + this.raw.readUInt32BE(12);
      if (this.raw.length < len) break;
      this.statuses.set(this.raw.readUInt32BE(8), this.raw[3]);
      this.raw = this.raw.subarray(len);
    }
  }

  call(method: string, args: unknown[], props: Record<string, string> = {}, timeoutMs = 10_000): Promise<Answer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiting.delete(id); resolve({ status: -2, error: 'consumer timeout' }); }, timeoutMs);
      this.waiting.set(id, (a) => { clearTimeout(timer); resolve(a); });
      this.enc.writeRequest(id, { serverSignature: `${SERVICE}:1.0.0`, methodName: method, args, requestProps: props, timeout: timeoutMs });
    });
  }

  heartbeat(): Promise<number> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no heartbeat answer')), 10_000);
      this.hbWaiting.set(id, () => { clearTimeout(timer); resolve(id); });
      this.enc.writeHeartbeat(id, null);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

async function closedPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

t.test('calls, attachment routing shared with HTTP, heartbeats, concurrency', async (t) => {
  const g1 = await dubboProvider('g1');
  const g2 = await dubboProvider('g2');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    routes: [
      { name: 'transfer', match: { headers: { type: 'transfer' } }, action: { cluster: 'c', labels: { group: 'Group_2' } } },
      { name: 'slowroute', match: { headers: { slow: 'yes' } }, action: { cluster: 'c', labels: { group: 'Group_1' }, timeoutMs: 300 } },
    ],
    clusters: [{
      name: 'c',
      endpoints: [
        { address: `127.0.0.1:${g1.port}`, labels: { group: 'Group_1' } },
        { address: `127.0.0.1:${g2.port}`, labels: { group: 'Group_2' } },
      ],
    }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await g1.close(); await g2.close(); });

  t.test('a call returns the provider\'s result', async (t) => {
    const a = await c.call('hello', [str('x')]);
    t.equal(a.status, 20);
    t.match(String(a.value), /^g[12]:hello:x$/);
    // per interface and method: calls, status, duration histogram (sent by the worker about once a second)
    const labels = `interface="${SERVICE}",method="hello"`;
    const st = await waitFor(async () => {
      const m = await stats(s.admin);
      return (m.get(`sluice_dubbo_rq_total{${labels}}`) ?? 0) >= 1 ? m : null;
    }, 10_000, 'per-method dubbo stats');
    t.equal(st.get(`sluice_dubbo_rq_status_total{${labels},status="20"}`), st.get(`sluice_dubbo_rq_total{${labels}}`));
    t.equal(st.get(`sluice_dubbo_rq_duration_seconds_count{${labels}}`), st.get(`sluice_dubbo_rq_total{${labels}}`));
    t.equal(st.get(`sluice_dubbo_rq_duration_seconds_bucket{${labels},le="+Inf"}`), st.get(`sluice_dubbo_rq_total{${labels}}`));
    t.ok((st.get(`sluice_dubbo_rq_duration_seconds_sum{${labels}}`) ?? -1) > 0, 'durations summed, in seconds');
  });

  t.test('attachment type=transfer goes to Group_2 only; the same rule routes HTTP', async (t) => {
    for (let i = 0; i < 6; i++) {
      const a = await c.call('attachment', [str('type')], { type: 'transfer' });
      t.equal(a.value, 'g2:transfer', `call ${i}`);
    }
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(String((await c.call('hello', [str('y')])).value).slice(0, 2));
    t.same([...seen].sort(), ['g1', 'g2'], 'without the attachment both endpoints serve');
    const base = `http://127.0.0.1:${s.port('app')}`;
    for (let i = 0; i < 4; i++) {
      const r = await new Promise<{ status: number; who: string }>((resolve, reject) => {
        http.get(`${base}/pay`, { agent: false, headers: { type: 'transfer' } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, who: String(res.headers['x-provider']) }));
        }).on('error', reject);
      });
      t.equal(r.status, 200);
      t.equal(r.who, 'g2', `http request ${i} with type: transfer`);
    }
    const plain = await get(`${base}/plain`);
    t.equal(plain.status, 200, 'HTTP without the header is served too');
  });

  t.test('heartbeat answered by Sluice, not forwarded', async (t) => {
    const before = g1.heartbeats + g2.heartbeats;
    const id = await c.heartbeat();
    t.ok(id > 0);
    t.equal(g1.heartbeats + g2.heartbeats, before);
  });

  t.test('many concurrent calls over one connection come back to the right callers', async (t) => {
    const n = 300;
    const st0 = await stats(s.admin);
    const answers = await Promise.all(Array.from({ length: n }, (_, i) =>
      c.call('slow', [str(`n${i}`), { $class: 'int', $: (i * 7) % 23 }])));
    let right = 0;
    for (let i = 0; i < n; i++) if (answers[i].status === 20 && /^g[12]:slow:/.test(String(answers[i].value)) && String(answers[i].value).endsWith(`:n${i}`)) right++;
    t.equal(right, n, 'every answer matches its call');
    // counters are bumped by the worker just after it wrote each answer: wait for the last one
    const done = (m: Map<string, number>) => (m.get('sluice_downstream_rq_xx_total{protocol="dubbo",class="2xx"}') ?? 0) - (st0.get('sluice_downstream_rq_xx_total{protocol="dubbo",class="2xx"}') ?? 0) >= n;
    const st = await waitFor(async () => { const m = await stats(s.admin); return done(m) ? m : null; }, 5000, 'all calls counted').catch(() => stats(s.admin));
    const delta = (k: string) => (st.get(k) ?? 0) - (st0.get(k) ?? 0);
    // one connection per endpoint was open already; under this load at most one more each
    t.ok(delta('sluice_upstream_cx_total{cluster="c"}') <= 2, 'multiplexed: at most 2 connections per endpoint');
    t.equal(delta('sluice_upstream_rq_total{cluster="c"}'), n);
    t.equal(delta('sluice_downstream_rq_xx_total{protocol="dubbo",class="2xx"}'), n);
  });

  t.test('a call the provider does not answer in time: SERVER_TIMEOUT (31)', async (t) => {
    const a = await c.call('hang', [str('z')], { slow: 'yes' });
    t.equal(a.status, 31);
    t.match(a.error, /upstream_timeout/);
    const ok = await c.call('hello', [str('after')]);
    t.equal(ok.status, 20, 'the connection still serves');
  });

  t.test('the provider drops its connection with a call in flight: SERVER_ERROR (80)', async (t) => {
    const a = await c.call('die', [str('z')], { type: 'transfer' });
    t.equal(a.status, 80);
    t.match(a.error, /upstream_reset/);
    const ok = await c.call('attachment', [str('type')], { type: 'transfer' });
    t.equal(ok.value, 'g2:transfer', 'a new provider connection serves the next call');
  });
});

t.test('a one-way call is forwarded and nothing comes back for it', async (t) => {
  const g = await dubboProvider('g');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${g.port}`] }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await g.close(); });
  const Request = require('dubbo-remoting/lib/protocol/request');
  const Invocation = require('dubbo-remoting/lib/protocol/invocation');
  const req = new Request(555);
  req.isTwoWay = false;
  req.data = new Invocation({ methodName: 'notify', args: [str('n')], attachments: { dubbo: '2.0.2', path: SERVICE, version: '1.0.0' } });
  c.sock.write(req.encode({ codecType: 'hessian2' }));
  // the provider reads calls in order on its connection: once the next call is answered, it saw the one-way
  const a = await c.call('hello', [str('after')]);
  t.equal(a.status, 20);
  t.same(g.calls, ['notify', 'hello'], 'the one-way call reached the provider first');
  t.notOk(c.statuses.has(555), 'no response for the one-way call');
  // the gauge is lowered by the worker just after it wrote the answer: wait for it, do not race it
  const active = async () => (await stats(s.admin)).get('sluice_downstream_rq_active{protocol="dubbo"}');
  await waitFor(async () => (await active()) === 0, 5000, 'no dubbo call in flight').catch(() => {});
  t.equal(await active(), 0, 'nothing left in flight');
});

t.test('no route: SERVICE_NOT_FOUND (60), promptly', async (t) => {
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    routes: [{ match: { service: 'other.Service' }, action: { directResponse: { status: 200, body: 'x' } } }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); });
  const a = await c.call('hello', [str('x')], {}, 5000);
  t.equal(a.status, 60);
  t.match(a.error, /no_route/);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_rq_no_route_total{protocol="dubbo"}'), 1);
});

t.test('provider down: SERVICE_ERROR (70), promptly', async (t) => {
  const port = await closedPort();
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${port}`] }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); });
  const a = await c.call('hello', [str('x')], {}, 5000);
  t.equal(a.status, 70);
  t.match(a.error, /upstream_connect_failed/);
  t.notOk(c.closed, 'the downstream connection stays open');
});

t.test('a malformed frame closes that connection only', async (t) => {
  const g = await dubboProvider('g');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${g.port}`] }],
  });
  const good = await Consumer.connect(s.port('app'));
  const bad = await Consumer.connect(s.port('app'));
  t.teardown(async () => { good.close(); bad.close(); await s.stop(); await g.close(); });
  t.equal((await bad.call('hello', [str('1')])).status, 20);
  // a header announcing serialization 9 (not Hessian2)
  const h = Buffer.alloc(16);
  h.writeUInt16BE(0xdabb, 0); h[2] = 0xc0 | 9; h.writeUInt32BE(77, 8); h.writeUInt32BE(0, 12);
  bad.sock.write(h);
  await waitFor(() => bad.closed, 5000, 'bad connection closed');
  t.equal((await good.call('hello', [str('2')])).status, 20, 'the other connection still serves');
});

t.test('a body over 8 MiB is refused from its header: BAD_REQUEST (40), then close', async (t) => {
  const g = await dubboProvider('g');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${g.port}`] }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await g.close(); });
  const h = Buffer.alloc(16);
  h.writeUInt16BE(0xdabb, 0); h[2] = 0xc2; h.writeUInt32BE(78, 8); h.writeUInt32BE(9 * 1024 * 1024, 12);
  c.sock.write(h);
  await waitFor(() => c.closed, 5000, 'connection closed');
  t.equal(c.statuses.get(78), 40, 'the caller got a response for its id');
  t.same(g.calls, [], 'nothing reached the provider');
});

t.test('the body limit is configurable: dubbo.maxBodyBytes', async (t) => {
  const g = await dubboProvider('g');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${g.port}`] }],
    dubbo: { maxBodyBytes: 4096 },
  });
  const small = await Consumer.connect(s.port('app'));
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { small.close(); c.close(); await s.stop(); await g.close(); });
  t.equal((await small.call('hello', [str('fits')])).status, 20, 'a call under the limit goes through');
  const h = Buffer.alloc(16);
  h.writeUInt16BE(0xdabb, 0); h[2] = 0xc2; h.writeUInt32BE(79, 8); h.writeUInt32BE(8192, 12);
  c.sock.write(h);
  await waitFor(() => c.closed, 5000, 'connection closed');
  t.equal(c.statuses.get(79), 40, 'an 8 KiB body is over a 4 KiB limit');
  t.equal(g.calls.length, 1, 'only the call under the limit reached the provider');
});

t.test('calls in flight per connection are capped: SERVER_THREADPOOL_EXHAUSTED_ERROR (100)', async (t) => {
  const g = await dubboProvider('g');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    routes: [{ match: { headers: { slow: 'yes' } }, action: { cluster: 'c', timeoutMs: 30_000 } }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${g.port}`] }],
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await g.close(); });
  const hung = Array.from({ length: 1000 }, (_, i) => c.call('hang', [str(`h${i}`)], { slow: 'yes' }, 20_000));
  await waitFor(() => g.calls.length === 1000, 15_000, 'provider saw 1000 calls');
  const over = await c.call('hello', [str('x')], {}, 5000);
  t.equal(over.status, 100);
  t.match(over.error, /too many calls/);
  c.close();
  const ended = await Promise.all(hung);
  t.equal(ended.filter((a) => a.status === -1).length, 1000, 'the hung calls end with the connection');
});
