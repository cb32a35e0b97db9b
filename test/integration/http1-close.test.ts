/**
 * A request that asks for the connection to close: Sluice closes it as soon as the response is
 * in the kernel, without a shutdown first (src/protocols/http1/http1-session.ts, closeNow). What
 * a client must see either way: the whole response, then the end of the connection, whether it
 * reads at once or slowly, and a request pipelined behind a `connection: close` one is never
 * answered. Raw sockets, so that every byte and the FIN are the client's own observations.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import t, { type Test } from 'tap';
import { httpUpstream, startSluice, type RunningSluice } from '../helpers/harness';

const MiB = 1 << 20;
/** More than the kernel buffers on the way hold (loopback: up to about 4 MiB sent, 6 MiB received). */
const BIG = randomBytes(24 * MiB);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function setUp(t: Test): Promise<RunningSluice> {
  const up = await httpUpstream((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/big') {
        res.writeHead(200, { 'content-length': String(BIG.length) });
        res.end(BIG);
        return;
      }
      res.end(`hello ${req.url}`);
    });
  });
  t.teardown(() => up.close());
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(() => s.stop());
  return s;
}

/**
 * Sends `request` on a new connection and collects everything until the server ends it (the
 * promise rejects on a reset). `slow`: stop reading for 400 ms at the first bytes, then for
 * 10 ms every MiB, so that the response backs up past the kernel's buffers into Sluice's socket.
 */
function exchange(port: number, request: string, slow = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    let since = 0;
    c.on('connect', () => c.write(request));
    c.on('data', (d: Buffer) => {
      parts.push(d);
      since += d.length;
      if (slow && (parts.length === 1 || since >= MiB)) {
        const ms = parts.length === 1 ? 400 : 10;
        since = 0;
        c.pause();
        setTimeout(() => c.resume(), ms);
      }
    });
    c.on('end', () => { c.end(); resolve(Buffer.concat(parts)); });
    c.on('error', reject);
    c.setTimeout(20_000, () => { c.destroy(); reject(new Error('no end of the connection within 20 s')); });
  });
}

function split(raw: Buffer): { head: string; body: Buffer } {
  const at = raw.indexOf('\r\n\r\n');
  if (at < 0) return { head: raw.toString('latin1'), body: Buffer.alloc(0) };
  return { head: raw.subarray(0, at).toString('latin1'), body: raw.subarray(at + 4) };
}

t.test('connection: close: the whole response, then the end of the connection, many times over', async (t) => {
  const s = await setUp(t);
  const port = s.port('app');
  for (let i = 0; i < 200; i++) {
    const raw = await exchange(port, `GET /n${i} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`);
    const { head, body } = split(raw);
    if (!/^HTTP\/1\.1 200 /.test(head) || !/\r\nconnection: close/i.test(head) || body.toString() !== `hello /n${i}`) {
      t.fail(`request ${i}: ${raw.toString('latin1').slice(0, 300)}`);
      return;
    }
  }
  t.pass('200 connections, each answered whole and then closed');
});

t.test('HTTP/1.0 without keep-alive: answered whole, then closed', async (t) => {
  const s = await setUp(t);
  const { head, body } = split(await exchange(s.port('app'), 'GET /old HTTP/1.0\r\nhost: a\r\n\r\n'));
  t.match(head, /^HTTP\/1\.1 200 /);
  t.equal(body.toString(), 'hello /old');
});

t.test('connection: close with a body larger than the socket buffers, read slowly: every byte, then the end', async (t) => {
  const s = await setUp(t);
  const raw = await exchange(s.port('app'), 'GET /big HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n', true);
  const { head, body } = split(raw);
  t.match(head, /^HTTP\/1\.1 200 /);
  t.equal(body.length, BIG.length);
  t.equal(sha(body), sha(BIG), 'the body as the upstream sent it');
});

t.test('a request pipelined behind connection: close is not answered, and the first answer arrives whole', async (t) => {
  const s = await setUp(t);
  const raw = await exchange(s.port('app'),
    'GET /first HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\nGET /second HTTP/1.1\r\nhost: a\r\n\r\n');
  const text = raw.toString('latin1');
  t.match(text, /^HTTP\/1\.1 200 /);
  t.ok(text.endsWith('hello /first'), 'the first answer, whole, and nothing after it');
  t.notMatch(text, /second/);
});
