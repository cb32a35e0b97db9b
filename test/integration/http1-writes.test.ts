/**
 * What a turn of the worker's event loop writes to a socket is held and sent at the turn's end
 * with one write(2) on the descriptor when Node holds nothing for the socket; only what the
 * kernel does not take goes through socket.write (src/worker/held-writes.ts). What a user must
 * see whatever the kernel takes: every byte of every response, in order, the next request's
 * answer after them, a `connection: close` answer whole and then the end of the connection (not
 * a reset), a client that resets costing its connection only, and request bodies reaching an
 * upstream that reads slowly. Raw sockets on the client side, so that every byte is the client's
 * own observation.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import t, { type Test } from 'tap';
import { httpUpstream, oneWorkerSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';
import { readInBursts } from '../helpers/streaming';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The body of `/len/<i>/<size>` and `/chunked/<i>/<size>`: `size` bytes that say which request they answer. */
function bodyFor(i: number, size: number): Buffer {
  const unit = Buffer.from(`<${i}>`, 'latin1');
  const b = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; at += unit.length) unit.copy(b, at, 0, Math.min(unit.length, size - at));
  return b;
}

/**
 * `/len/<i>/<size>`: content-length; `/chunked/<i>/<size>`: chunked, in pieces of up to 3000
 * bytes; `/slow/<i>/<size>`: content-length, the head first, then the body in 4 pieces 30 ms
 * apart; `/slowchunked/<i>/<size>`: the same, chunked; `/hash`: the request body's length and hash.
 */
async function setUp(t: Test): Promise<RunningSluice> {
  const up = await httpUpstream((req, res) => {
    const parts = (req.url ?? '/').split('/');
    if (parts[1] === 'hash') {
      const got: Buffer[] = [];
      req.on('data', (d: Buffer) => got.push(d));
      // a slow reader: the request's writes back up in Sluice
      readInBursts(req, 64 * 1024, 3);
      req.on('end', () => {
        const body = Buffer.concat(got);
        res.end(`${body.length} ${sha(body)}`);
      });
      return;
    }
    req.resume();
    const i = Number(parts[2]);
    const body = bodyFor(i, Number(parts[3]));
    if (parts[1] === 'len') {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    } else if (parts[1] === 'chunked') {
      res.writeHead(200);
      for (let at = 0; at < body.length; at += 3000) res.write(body.subarray(at, at + 3000));
      res.end();
    } else {
      const chunked = parts[1] === 'slowchunked';
      res.writeHead(200, chunked ? {} : { 'content-length': String(body.length) });
      res.flushHeaders();
      const piece = Math.ceil(body.length / 4);
      let at = 0;
      const next = (): void => {
        if (at >= body.length) { res.end(); return; }
        res.write(body.subarray(at, at + piece));
        at += piece;
        setTimeout(next, 30);
      };
      setTimeout(next, 30);
    }
  });
  t.teardown(() => up.close());
  return oneWorkerSluice(t, up.port);
}

interface Response { head: string; body: Buffer }

/** The next whole response in `raw` from `at` (content-length or chunked), or null; throws on anything else. */
function nextResponse(raw: Buffer, at: number): { response: Response; end: number } | null {
  const end = raw.indexOf('\r\n\r\n', at);
  if (end < 0) return null;
  const head = raw.subarray(at, end).toString('latin1');
  let p = end + 4;
  const len = /\r\ncontent-length: *(\d+)/i.exec(head);
  if (len) {
    const n = Number(len[1]);
    if (p + n > raw.length) return null;
    return { response: { head, body: raw.subarray(p, p + n) }, end: p + n };
  }
  if (!/\r\ntransfer-encoding: *chunked/i.test(head)) throw new Error(`a response with neither framing: ${head}`);
  const pieces: Buffer[] = [];
  for (;;) {
    const eol = raw.indexOf('\r\n', p);
    if (eol < 0) return null;
    const size = parseInt(raw.subarray(p, eol).toString('latin1'), 16);
    if (Number.isNaN(size)) throw new Error(`a bad chunk size line at ${p}`);
    if (size === 0) {
      if (eol + 4 > raw.length) return null;
      return { response: { head, body: Buffer.concat(pieces) }, end: eol + 4 };
    }
    if (eol + 2 + size + 2 > raw.length) return null;
    pieces.push(raw.subarray(eol + 2, eol + 2 + size));
    p = eol + 2 + size + 2;
  }
}

/** Parses the responses in `raw` one after another. */
function parseResponses(raw: Buffer): { responses: Response[]; rest: Buffer } {
  const responses: Response[] = [];
  let at = 0;
  for (let r = nextResponse(raw, at); r !== null; r = nextResponse(raw, at)) {
    responses.push(r.response);
    at = r.end;
  }
  return { responses, rest: raw.subarray(at) };
}

/** Responses read from a socket as they come, parsed once each. */
class Responses {
  private buf = Buffer.alloc(1 << 16);
  private len = 0;
  private at = 0;
  readonly got: Response[] = [];

  push(d: Buffer): void {
    if (this.len + d.length > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(this.buf.length * 2, this.len + d.length));
      this.buf.copy(bigger, 0, 0, this.len);
      this.buf = bigger;
    }
    d.copy(this.buf, this.len);
    this.len += d.length;
    const raw = this.buf.subarray(0, this.len);
    for (let r = nextResponse(raw, this.at); r !== null; r = nextResponse(raw, this.at)) {
      this.got.push({ head: r.response.head, body: Buffer.from(r.response.body) });
      this.at = r.end;
    }
  }

  /** Bytes after the last whole response. */
  get rest(): number {
    return this.len - this.at;
  }
}

/** Reads `n` responses from `c`; rejects after `ms`, on a reset, or at an end before them. */
function readResponses(c: net.Socket, n: number, ms = 30_000): Promise<Responses> {
  return new Promise((resolve, reject) => {
    const rs = new Responses();
    const timer = setTimeout(() => fail(new Error(`${rs.got.length} answers of ${n} after ${ms} ms`)), ms);
    const finish = (): void => { clearTimeout(timer); c.removeListener('data', onData); c.removeListener('error', fail); c.removeListener('end', onEnd); };
    const fail = (err: Error): void => { finish(); reject(err); };
    const onData = (d: Buffer): void => {
      rs.push(d);
      if (rs.got.length >= n) { finish(); resolve(rs); }
    };
    const onEnd = (): void => fail(new Error(`the connection ended after ${rs.got.length} answers of ${n}`));
    c.on('data', onData);
    c.on('error', fail);
    c.on('end', onEnd);
  });
}

/** Checks that `got` are the answers to `paths`, in order, each whole. */
function checkAnswers(t: Test, got: Response[], paths: string[], what: string): void {
  if (got.length !== paths.length) { t.fail(`${what}: ${got.length} answers to ${paths.length} requests`); return; }
  for (let k = 0; k < paths.length; k++) {
    const [, , i, size] = paths[k].split('/');
    const want = bodyFor(Number(i), Number(size));
    if (!/^HTTP\/1\.1 200 /.test(got[k].head) || !got[k].body.equals(want)) {
      t.fail(`${what}: answer ${k} (${paths[k]}) is not its body: ${got[k].head.slice(0, 80)} / ${got[k].body.subarray(0, 40).toString('latin1')}`);
      return;
    }
  }
  t.pass(`${what}: ${paths.length} answers, whole and in order`);
}

/** Sizes under the 16 KiB from which a body chunk is written straight from the read buffer: these are copied and held. */
function pipelinedPaths(n: number, seed: number, last = ''): string[] {
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const size = 1 + ((i * 7919 + seed) % 15_000);
    paths.push(`/${i % 3 === 2 ? 'chunked' : 'len'}/${i}/${size}`);
  }
  if (last) paths.push(last);
  return paths;
}

function requests(paths: string[], closeLast = false): string {
  return paths.map((p, k) => `GET ${p} HTTP/1.1\r\nhost: a\r\n${closeLast && k === paths.length - 1 ? 'connection: close\r\n' : ''}\r\n`).join('');
}

t.test('pipelined answers to a client that stops reading (every buffer on the way full), beside a busy one: every byte in order, then the next answer after them', async (t) => {
  const s = await setUp(t);
  const port = s.port('app');
  const c = net.connect(port, '127.0.0.1');
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  // about 22 MB of answers: more than the kernel's buffers on the way hold (loopback: about 4 MiB sent, 6 MiB received)
  const paths = pipelinedPaths(3000, 11);
  c.pause();
  c.write(requests(paths));
  // meanwhile another client keeps the worker writing answers of its own: what the kernel did not
  // take of the first client's must not be overwritten by the writes of others
  let reading = true;
  const busy = (async (): Promise<number> => {
    const b = net.connect(port, '127.0.0.1');
    await once(b, 'connect');
    let rounds = 0;
    for (; reading && rounds < 400; rounds++) {
      const mine = pipelinedPaths(20, rounds).map((p) => p.replace('/chunked/', '/len/'));
      b.write(requests(mine));
      const rs = await readResponses(b, mine.length);
      for (let k = 0; k < mine.length; k++) {
        const [, , i, size] = mine[k].split('/');
        if (!rs.got[k].body.equals(bodyFor(Number(i), Number(size)))) throw new Error(`the busy client's answer ${k} of round ${rounds} is not its body`);
      }
    }
    b.destroy();
    return rounds;
  })();
  await new Promise((r) => setTimeout(r, 800));
  // then it reads in bursts: a quarter of a MiB, then nothing for 40 ms, so that its buffers fill again and again
  readInBursts(c, 256 * 1024, 40);
  c.resume();
  const rs = await readResponses(c, paths.length, 60_000);
  reading = false;
  checkAnswers(t, rs.got, paths, 'a client that paused');
  t.equal(rs.rest, 0, 'nothing past the last answer');
  t.ok((await busy) > 0, 'the busy client was answered meanwhile, every answer its own');
  // the connection goes on: one more request, its answer after all of them
  c.write(requests(['/len/9999/5000']));
  checkAnswers(t, (await readResponses(c, 1)).got, ['/len/9999/5000'], 'the next request');
});

t.test('connection: close behind answers that back up: every answer whole, then the end of the connection (no reset)', async (t) => {
  const s = await setUp(t);
  for (const last of ['/len/7777/300', '/chunked/7777/9000']) {
    const c = net.connect(s.port('app'), '127.0.0.1');
    await once(c, 'connect');
    const paths = pipelinedPaths(3000, 5, last);
    c.pause();
    c.write(requests(paths, true));
    await new Promise((r) => setTimeout(r, 600));
    // read in bursts to the end, so that the buffers on the way are still full when the last answer is written
    const parts: Buffer[] = [];
    c.on('data', (d: Buffer) => parts.push(d));
    readInBursts(c, 256 * 1024, 40);
    c.resume();
    const ended = await new Promise<string>((resolve) => {
      c.on('end', () => resolve('end'));
      c.on('error', (err) => resolve(`error ${(err as NodeJS.ErrnoException).code}`));
      setTimeout(() => resolve('no end within 30 s'), 30_000);
    });
    c.destroy();
    t.equal(ended, 'end', `${last}: the connection ended with a FIN`);
    const { responses, rest } = parseResponses(Buffer.concat(parts));
    checkAnswers(t, responses, paths, `${last} last, with connection: close`);
    t.match(responses[responses.length - 1]?.head ?? '', /\r\nconnection: close/i, 'the last answer says close');
    t.equal(rest.length, 0, 'nothing after the last answer');
  }
});

t.test('clients that reset while their answers are being written: each loses its own connection, the worker serves the next', async (t) => {
  const s = await setUp(t);
  const port = s.port('app');
  for (let round = 0; round < 30; round++) {
    const c = net.connect(port, '127.0.0.1');
    await once(c, 'connect');
    c.pause();
    c.write(requests(pipelinedPaths(round % 2 === 0 ? 400 : 20, round)));
    // the answers are being written (and back up) when the reset comes; or come after it
    await new Promise((r) => setTimeout(r, round % 3 === 0 ? 0 : 10 + (round % 5) * 20));
    c.resetAndDestroy();
  }
  // a client after them is answered, on a connection kept alive
  const c = net.connect(port, '127.0.0.1');
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  const paths = pipelinedPaths(10, 3);
  c.write(requests(paths));
  checkAnswers(t, (await readResponses(c, paths.length)).got, paths, 'after the resets');
  c.destroy();
  await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'every connection closed');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_cx_active{listener="app"}'), 0, 'no connection left open');
  t.equal(st.get('sluice_worker_restarts_total') ?? 0, 0, 'no worker died');
});

t.test('a slow upstream: answers that come in pieces, pipelined behind each other and read slowly, whole and in order', async (t) => {
  const s = await setUp(t);
  const c = net.connect(s.port('app'), '127.0.0.1');
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  const paths = ['/slow/1/40000', '/slowchunked/2/9000', '/len/3/10', '/slowchunked/4/3000000', '/slow/5/7', '/chunked/6/100000', '/slow/7/2000000'];
  c.write(requests(paths));
  // a client that stops now and then: a MiB, then 50 ms
  readInBursts(c, 1 << 20, 50);
  const rs = await readResponses(c, paths.length);
  checkAnswers(t, rs.got, paths, 'a slow upstream');
  t.equal(rs.rest, 0, 'nothing past the last answer');
});

t.test('request bodies held with their heads, to an upstream that reads slowly: every body arrives as sent', async (t) => {
  const s = await setUp(t);
  const port = s.port('app');
  const conns = 12;
  const perConn = 8;
  const bodies = Array.from({ length: conns * perConn }, (_, k) => randomBytes(1 + ((k * 4099) % 16_000)));
  const answers = await Promise.all(Array.from({ length: conns }, async (_, ci) => {
    const c = net.connect(port, '127.0.0.1');
    await once(c, 'connect');
    const mine = bodies.slice(ci * perConn, (ci + 1) * perConn);
    // all of one connection's requests in one write: each head and its body arrive in one read
    c.write(Buffer.concat(mine.flatMap((b) => [Buffer.from(`POST /hash HTTP/1.1\r\nhost: a\r\ncontent-length: ${b.length}\r\n\r\n`, 'latin1'), b])));
    const rs = await readResponses(c, perConn);
    c.destroy();
    return rs.got.map((r) => r.body.toString('latin1'));
  }));
  const got = answers.flat();
  const want = bodies.map((b) => `${b.length} ${sha(b)}`);
  t.same(got, want, `${bodies.length} bodies on ${conns} connections, each arrived whole`);
});

t.test('a TLS-less client through node:http keep-alive, many requests: answers stay in step (a sanity check of the common path)', async (t) => {
  const s = await setUp(t);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const paths = pipelinedPaths(400, 17);
  const got = await Promise.all(paths.map((p) => new Promise<Buffer>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: s.port('app'), path: p, agent }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve(Buffer.concat(parts)));
      res.on('error', reject);
    }).on('error', reject);
  })));
  let bad = 0;
  for (let k = 0; k < paths.length; k++) {
    const [, , i, size] = paths[k].split('/');
    if (!got[k].equals(bodyFor(Number(i), Number(size)))) bad++;
  }
  t.equal(bad, 0, `${paths.length} requests on 4 kept-alive connections, each its own answer`);
});
