/**
 * HTTP/1 connections read through one buffer per worker (src/net/direct-read.ts): every read of
 * every socket of the worker lands in the same memory, so whatever outlives a read must have been
 * copied. These tests send bytes a user would send and check every byte that comes out: bodies
 * several times the buffer's size to an upstream that reads slowly (its writes are held by libuv
 * while other connections read), the same downloaded by a client that reads slowly, many
 * connections at once with different bodies, a client that sends a byte at a time, and
 * pipelined requests split at every byte offset.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import t, { type Test } from 'tap';
import { httpUpstream, startSluice, type RunningSluice, type Upstream } from '../helpers/harness';

const MiB = 1 << 20;

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Reads a request body slowly: a pause every `every` bytes, so its sender's writes back up. */
function readSlowly(req: http.IncomingMessage, every: number, done: (body: Buffer) => void): void {
  const parts: Buffer[] = [];
  let since = 0;
  req.on('data', (d: Buffer) => {
    parts.push(d);
    since += d.length;
    if (since >= every) {
      since = 0;
      req.pause();
      setTimeout(() => req.resume(), 5);
    }
  });
  req.on('end', () => done(Buffer.concat(parts)));
}

/** Downloads bodies of random bytes (by size in the path) and takes uploads, answering their hash. */
const downloads = new Map<number, Buffer>();
function bodyOf(size: number): Buffer {
  let b = downloads.get(size);
  if (!b) { b = randomBytes(size); downloads.set(size, b); }
  return b;
}

async function setUp(t: Test): Promise<{ s: RunningSluice; up: Upstream }> {
  const up = await httpUpstream((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/hash')) {
      readSlowly(req, 256 * 1024, (body) => res.end(`${body.length} ${sha(body)}`));
      return;
    }
    if (url.startsWith('/download/')) {
      const body = bodyOf(Number(url.slice('/download/'.length)));
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
      return;
    }
    // echo: method, target and body, so that each pipelined answer says which request it is
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => res.end(`${req.method} ${url} ${Buffer.concat(parts).toString('latin1')}`));
  });
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(() => s.stop());
  return { s, up };
}

function upload(port: number, body: Buffer, chunked: boolean, path = '/hash', method = 'POST'): Promise<string> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = chunked ? {} : { 'content-length': String(body.length) };
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve(`${res.statusCode} ${text}`));
    });
    req.on('error', reject);
    if (chunked) {
      // in pieces of odd sizes, so chunk boundaries fall anywhere in Sluice's reads
      let at = 0;
      let n = 1;
      const next = (): void => {
        while (at < body.length) {
          const size = Math.min(body.length - at, 1000 + ((n++ * 7919) % 90_000));
          const ok = req.write(body.subarray(at, at + size));
          at += size;
          if (!ok) { req.once('drain', next); return; }
        }
        req.end();
      };
      next();
    } else {
      req.end(body);
    }
  });
}

/** Sends the head, then the body once the head has had time to be routed (the upstream connection is ready when the body comes). */
function uploadAfterHead(port: number, body: Buffer, path: string, method: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { 'content-length': String(body.length) } }, (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve(`${res.statusCode} ${text}`));
    });
    req.on('error', reject);
    req.flushHeaders();
    setTimeout(() => req.end(body), 30);
  });
}

/** Downloads `size` bytes, reading slowly (a pause every 512 KiB, long enough for every buffer on the way to fill). */
function download(port: number, size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `/download/${size}`, agent: false }, (res) => {
      const parts: Buffer[] = [];
      let since = 0;
      res.on('data', (d: Buffer) => {
        parts.push(d);
        since += d.length;
        if (since >= 512 * 1024) { since = 0; res.pause(); setTimeout(() => res.resume(), 40); }
      });
      res.on('end', () => resolve(Buffer.concat(parts)));
      res.on('error', reject);
    }).on('error', reject);
  });
}

t.test('uploads and downloads many times the read buffer, several at once, to and from slow readers: every byte arrives', async (t) => {
  const { s } = await setUp(t);
  const port = s.port('app');
  const bodies = [randomBytes(3 * MiB + 17), randomBytes(2 * MiB + 4093), randomBytes(5 * MiB), randomBytes(MiB + 1), randomBytes(9 * MiB)];
  const sizes = [12 * MiB + 3, 9 * MiB, 1];
  const [ups, downs] = await Promise.all([
    Promise.all(bodies.map((b, i) => upload(port, b, i % 2 === 1))),
    Promise.all(sizes.map((n) => download(port, n))),
  ]);
  for (let i = 0; i < bodies.length; i++) {
    t.equal(ups[i], `200 ${bodies[i].length} ${sha(bodies[i])}`, `upload ${i} (${i % 2 === 1 ? 'chunked' : 'content-length'}, ${bodies[i].length} bytes) arrived whole`);
  }
  for (let i = 0; i < sizes.length; i++) {
    t.equal(downs[i].length, sizes[i], `download ${i}: length`);
    t.ok(downs[i].equals(bodyOf(sizes[i])), `download ${i}: every byte as the upstream sent it`);
  }
});

t.test('bodies kept past the read (a retry\'s copy, a mirror\'s) and many transfers at once: every copy is the body sent', async (t) => {
  // large chunks are written straight from the read buffer (src/net/lent-write.ts); what the
  // exchange keeps of them must be its own copy, or the next read overwrites it
  const primary: string[] = [];
  const shadow: string[] = [];
  let refused = 0;
  const hashing = (into: string[], slow: boolean): http.RequestListener => (req, res) => {
    const done = (body: Buffer): void => { into.push(sha(body)); res.end(`${body.length} ${sha(body)}`); };
    if (slow) { readSlowly(req, 128 * 1024, done); return; }
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => done(Buffer.concat(parts)));
  };
  // answers 503 once the body is in: the retry sends the body again from the copy the exchange kept
  const bad = await httpUpstream((req, res) => {
    req.resume();
    req.on('end', () => { refused++; res.writeHead(503, { 'content-length': '0' }); res.end(); });
  });
  const good = await httpUpstream(hashing(primary, true));
  const mirror = await httpUpstream(hashing(shadow, false));
  t.teardown(() => Promise.all([bad.close(), good.close(), mirror.close()]));
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'flaky' }],
    routes: [
      { name: 'retried', match: { path: { prefix: '/retried' } }, action: { cluster: 'flaky' }, retry: { on: ['503'], attempts: 2, idempotent: true } },
      { name: 'mirrored', match: { path: { prefix: '/mirrored' } }, action: { cluster: 'good' }, mirror: { cluster: 'shadow' } },
      { name: 'plain', match: { path: { prefix: '/' } }, action: { cluster: 'good' } },
    ],
    clusters: [
      { name: 'flaky', protocol: 'http1', endpoints: [`127.0.0.1:${bad.port}`, `127.0.0.1:${good.port}`] },
      { name: 'good', protocol: 'http1', endpoints: [`127.0.0.1:${good.port}`] },
      { name: 'shadow', protocol: 'http1', endpoints: [`127.0.0.1:${mirror.port}`] },
    ],
  });
  t.teardown(() => s.stop());
  const port = s.port('app');
  // bodies that fit the 64 KiB a retry keeps, read in chunks above the 16 KiB written at once
  const small = Array.from({ length: 6 }, (_, i) => randomBytes(40_000 + i * 4000));
  const mirrored = [randomBytes(3 * MiB + 5), randomBytes(2 * MiB)];
  const many = Array.from({ length: 16 }, (_, i) => randomBytes(MiB + i * 4099));
  const retriedInTurn = async (): Promise<string[]> => {
    const out: string[] = [];
    // one after another on a kept-alive client connection: the body reaches an attempt that is ready, not the early queue
    for (const b of small) out.push(await uploadAfterHead(port, b, '/retried', 'PUT'));
    return out;
  };
  const [retried, copied, plain] = await Promise.all([
    retriedInTurn(),
    Promise.all(mirrored.map((b) => upload(port, b, false, '/mirrored'))),
    Promise.all(many.map((b) => upload(port, b, false, '/plain'))),
  ]);
  for (let i = 0; i < small.length; i++) t.equal(retried[i], `200 ${small[i].length} ${sha(small[i])}`, `retried upload ${i} arrived whole`);
  t.ok(refused > 0, `some uploads were sent twice (${refused} refused first)`);
  for (let i = 0; i < mirrored.length; i++) {
    t.equal(copied[i], `200 ${mirrored[i].length} ${sha(mirrored[i])}`, `mirrored upload ${i} arrived whole`);
    t.ok(shadow.includes(sha(mirrored[i])), `the mirror got upload ${i} whole`);
  }
  let whole = 0;
  for (let i = 0; i < many.length; i++) if (plain[i] === `200 ${many[i].length} ${sha(many[i])}`) whole++;
  t.equal(whole, many.length, 'every one of 16 concurrent uploads arrived whole');
});

/** Sends `parts` on a new connection, each after the previous one left (no Nagle), and reads until `expect` answers came or the connection closed. */
async function exchange(port: number, parts: Buffer[], expect: number, gapMs: number): Promise<string[]> {
  const sock = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await once(sock, 'connect');
  let got = Buffer.alloc(0);
  const answers: string[] = [];
  const done = new Promise<void>((resolve) => {
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      for (;;) {
        const he = got.indexOf('\r\n\r\n');
        if (he < 0) break;
        const head = got.subarray(0, he).toString('latin1');
        const m = /\r\ncontent-length: (\d+)/i.exec(head);
        const len = m ? Number(m[1]) : 0;
        if (got.length < he + 4 + len) break;
        answers.push(`${head.split(' ')[1]} ${got.subarray(he + 4, he + 4 + len).toString('latin1')}`);
        got = got.subarray(he + 4 + len);
      }
      if (answers.length >= expect) resolve();
    });
    sock.on('close', () => resolve());
    sock.on('error', () => resolve());
  });
  for (const p of parts) {
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    sock.write(p);
  }
  await done;
  sock.destroy();
  return answers;
}

t.test('a client that sends its request a byte at a time is answered as if it had sent it at once', async (t) => {
  const { s } = await setUp(t);
  const req = Buffer.from('POST /slow?q=1 HTTP/1.1\r\nHost: example.test\r\ncontent-length: 11\r\nx-long-header: ' + 'v'.repeat(300) + '\r\n\r\nhello world', 'latin1');
  const parts: Buffer[] = [];
  for (let i = 0; i < req.length; i++) parts.push(req.subarray(i, i + 1));
  const answers = await exchange(s.port('app'), parts, 1, 1);
  t.same(answers, ['200 POST /slow?q=1 hello world']);
});

t.test('pipelined requests split at every byte offset: each answered once, in order, with its own body', async (t) => {
  const { s } = await setUp(t);
  const port = s.port('app');
  const wire = Buffer.from(
    'GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n'
    + 'POST /two HTTP/1.1\r\nHost: a.test\r\ncontent-length: 13\r\n\r\nbody-of-two!!'
    + 'POST /three HTTP/1.1\r\nHost: a.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nthree\r\n3\r\n-ch\r\n0\r\n\r\n'
    + 'GET /four HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'latin1',
  );
  const want = ['200 GET /one ', '200 POST /two body-of-two!!', '200 POST /three three-ch', '200 GET /four '];
  t.same(await exchange(port, [wire], 4, 0), want, 'all in one write');
  let wrong = 0;
  for (let cut = 1; cut < wire.length; cut++) {
    const answers = await exchange(port, [wire.subarray(0, cut), wire.subarray(cut)], 4, 2);
    if (JSON.stringify(answers) !== JSON.stringify(want)) {
      wrong++;
      if (wrong <= 3) t.same(answers, want, `split at byte ${cut}`);
    }
  }
  t.equal(wrong, 0, `every one of ${wire.length - 1} split points answered right`);
});
