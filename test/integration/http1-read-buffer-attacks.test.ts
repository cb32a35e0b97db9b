/**
 * HTTP/1 from outside while connections share the worker's read buffer (src/net/direct-read.ts)
 * and proxied writes are held to the end of the turn (src/worker/turn-end.ts): an upstream's 101
 * with the new protocol's first bytes in the same segment, many connections at once with
 * pipelined requests and bodies split anywhere, h2c streams beside HTTP/1 connections with
 * expect-continue, HEAD, half-close, resets mid-body and an upstream closing mid-response, and
 * clients silent past the sniff timeout beside busy ones.
 */
import { once } from 'node:events';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import { h2Upstream, httpUpstream, startSluice, type RunningSluice } from '../helpers/harness';

/** One worker (every connection reads through the same buffer), listener `app` to the upstream on `port`. */
async function sluiceTo(t: Test, port: number, more: Record<string, unknown> = {}): Promise<RunningSluice> {
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${port}`] }],
    ...more,
  });
  t.teardown(() => s.stop());
  return s;
}

function rawServer(onConn: (s: net.Socket) => void): Promise<{ port: number; close(): void }> {
  const srv = net.createServer(onConn);
  srv.listen(0, '127.0.0.1');
  return once(srv, 'listening').then(() => ({ port: (srv.address() as net.AddressInfo).port, close: () => srv.close() }));
}

async function collect(sock: net.Socket, until: (b: Buffer) => boolean, ms = 3000): Promise<Buffer> {
  let got = Buffer.alloc(0);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(got), ms);
    const onData = (d: Buffer) => { got = Buffer.concat([got, d]); if (until(got)) { clearTimeout(timer); sock.removeListener('data', onData); resolve(got); } };
    sock.on('data', onData);
    sock.on('close', () => { clearTimeout(timer); resolve(got); });
  });
}

t.test('an upstream\'s 101 and its first tunnel bytes in one segment: the client gets both, and the tunnel works', async (t) => {
  const up = await rawServer((s) => {
    let head = '';
    s.on('data', (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n') && !head.includes('DONE')) {
        head += 'DONE';
        s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nSERVER-FIRST');
        s.on('data', (e) => s.write(e));
      }
    });
  });
  t.teardown(() => up.close());
  const s = await sluiceTo(t, up.port);
  const c = net.connect(s.port('app'), '127.0.0.1');
  await once(c, 'connect');
  c.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n');
  const got = await collect(c, (b) => b.includes('SERVER-FIRST'), 2000);
  t.match(got.toString('latin1'), /^HTTP\/1.1 101 Switching Protocols\r\n[^]*\r\n\r\nSERVER-FIRST$/, 'the 101, then the bytes the upstream sent right behind it');
  c.write('ping-through-the-tunnel');
  const echoed = await collect(c, (b) => b.includes('ping-through-the-tunnel'), 2000);
  t.equal(echoed.toString('latin1'), 'ping-through-the-tunnel', 'the tunnel carries bytes both ways');
  c.destroy();
});

t.test('many connections at once, pipelined, different bodies, split heads', async (t) => {
  const up = await httpUpstream((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => setTimeout(() => res.end(`${req.url} ${Buffer.concat(parts).toString('latin1')}`), Math.random() * 5));
  });
  t.teardown(() => up.close());
  const s = await sluiceTo(t, up.port);
  const port = s.port('app');
  let bad = 0;
  await Promise.all(Array.from({ length: 60 }, async (_, i) => {
    const c = net.connect({ port, host: '127.0.0.1', noDelay: true });
    await once(c, 'connect');
    let wire = '';
    const want: string[] = [];
    for (let j = 0; j < 5; j++) {
      const body = randomBytes(20 + ((i * 7 + j) % 300)).toString('hex');
      if (j % 2) wire += `POST /c${i}r${j} HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n${(body.length).toString(16)}\r\n${body}\r\n0\r\nx-t: 1\r\n\r\n`;
      else wire += `POST /c${i}r${j} HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
      want.push(`/c${i}r${j} ${body}`);
    }
    const buf = Buffer.from(wire, 'latin1');
    const p = collect(c, (b) => (b.toString('latin1').match(/HTTP\/1.1 200/g) ?? []).length >= 5 && want.every((w) => b.includes(w)), 8000);
    // split in 3 pieces at odd points
    const a = 1 + (i * 13) % (buf.length - 2);
    const b2 = a + Math.floor((buf.length - a) / 2);
    c.write(buf.subarray(0, a));
    await new Promise((r) => setTimeout(r, 3));
    c.write(buf.subarray(a, b2));
    await new Promise((r) => setTimeout(r, 3));
    c.write(buf.subarray(b2));
    const got = (await p).toString('latin1');
    let at = 0;
    for (const w of want) { const k = got.indexOf(w, at); if (k < 0) { bad++; t.fail(`conn ${i}: missing ${w.slice(0, 30)} in ${got.slice(0, 300)}`); break; } at = k; }
    c.destroy();
  }));
  t.equal(bad, 0);
});


t.test('h2c streams and HTTP/1 connections with bodies at once; expect-continue; HEAD; half-close; resets', async (t) => {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const up = await httpUpstream((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => { h.update(d); n += d.length; });
    req.on('end', () => {
      if (req.url === '/half') { res.writeHead(200, { 'content-length': '100' }); res.write('x'.repeat(50)); setTimeout(() => res.socket?.destroy(), 10); return; }
      const body = `${req.url} ${n} ${h.digest('hex')}`;
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  t.teardown(() => up.close());
  const up2 = await h2Upstream((stream, headers) => {
    const h = createHash('sha256');
    let n = 0;
    stream.on('data', (d: Buffer) => { h.update(d); n += d.length; });
    stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end(`${headers[':path']} ${n} ${h.digest('hex')}`); });
  });
  t.teardown(() => up2.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }, { name: 'h2', address: '127.0.0.1:0', cluster: 'h2web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }, { name: 'h2web', endpoints: [`127.0.0.1:${up2.port}`] }],
  });
  t.teardown(() => s.stop());
  const port = s.port('app');
  const bodies = Array.from({ length: 20 }, (_, i) => randomBytes(1000 + i * 37_000));
  const h2 = http2.connect(`http://127.0.0.1:${s.port('h2')}`);
  h2.on('error', () => {});
  const h2calls = bodies.map((b, i) => new Promise<string>((resolve) => {
    const st = h2.request({ ':method': 'POST', ':path': `/h2-${i}` });
    let text = '';
    st.setEncoding('latin1');
    st.on('data', (d: string) => { text += d; });
    st.on('end', () => resolve(text));
    st.on('error', (e) => resolve(String(e)));
    st.end(b);
  }));
  const h1calls = bodies.map((b, i) => new Promise<string>((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    const expect = i % 3 === 0;
    c.write(`POST /h1-${i} HTTP/1.1\r\nHost: a\r\ncontent-length: ${b.length}\r\n${expect ? 'expect: 100-continue\r\n' : ''}\r\n`);
    let got = '';
    let sent = !expect;
    if (!expect) c.write(b);
    if (i % 4 === 1 && !expect) c.end(); // half-close after the request
    c.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (!sent && got.includes('100 Continue')) { sent = true; c.write(b); }
      const m = /\r\n\r\n(\/h1-\d+ \d+ [0-9a-f]{64})$/.exec(got);
      if (m) { resolve(m[1]); c.destroy(); }
    });
    c.on('close', () => resolve(got));
    c.on('error', () => {});
  }));
  // resets mid-body and upstream closing mid-response, meanwhile
  const noise = Array.from({ length: 10 }, async (_, i) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    c.on('error', () => {});
    await once(c, 'connect');
    if (i % 2) {
      c.write(`POST /reset HTTP/1.1\r\nHost: a\r\ncontent-length: 1000000\r\n\r\n${'r'.repeat(30_000)}`);
      await new Promise((r) => setTimeout(r, 5));
      c.resetAndDestroy();
    } else {
      c.write('GET /half HTTP/1.1\r\nHost: a\r\n\r\nHEAD /head HTTP/1.1\r\nHost: a\r\n\r\n');
      c.resume();
      await new Promise((r) => c.on('close', r));
    }
  });
  const head = new Promise<string>((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    c.write('HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /after-head HTTP/1.1\r\nHost: a\r\n\r\n');
    let got = '';
    c.on('data', (d: Buffer) => { got += d.toString('latin1'); if (got.includes('/after-head 0')) { resolve(got); c.destroy(); } });
    c.on('close', () => resolve(got));
  });
  const [r2, r1] = await Promise.all([Promise.all(h2calls), Promise.all(h1calls), Promise.all(noise)]);
  for (let i = 0; i < bodies.length; i++) {
    t.equal(r2[i], `/h2-${i} ${bodies[i].length} ${sha(bodies[i])}`, `h2 ${i}`);
    t.equal(r1[i], `/h1-${i} ${bodies[i].length} ${sha(bodies[i])}`, `h1 ${i}`);
  }
  const hd = await head;
  t.match(hd, /^HTTP\/1.1 200 OK\r\n[^]*content-length: \d+\r\n\r\nHTTP\/1.1 200 OK/);
  h2.close();
});

t.test('an upstream that closes mid-response: the client gets what came, then the close, pipelined or not', async (t) => {
  const up = await httpUpstream((req, res) => {
    req.resume();
    req.on('end', () => { res.socket!.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n' + 'x'.repeat(50)); });
  });
  t.teardown(() => up.close());
  const s = await sluiceTo(t, up.port);
  for (const wire of ['GET /half HTTP/1.1\r\nHost: a\r\n\r\n', 'GET /half HTTP/1.1\r\nHost: a\r\n\r\nHEAD /head HTTP/1.1\r\nHost: a\r\n\r\n']) {
    const c = net.connect({ port: s.port('app'), host: '127.0.0.1' });
    c.on('error', () => {});
    c.write(wire);
    const got = await collect(c, () => false, 3000);
    t.match(got.toString('latin1'), /^HTTP\/1.1 200 OK\r\n[^]*content-length: 100\r\n\r\nx{50}$/, `${JSON.stringify(wire)}: the head and the 50 bytes that came`);
    t.ok(c.destroyed || c.readableEnded, 'then the connection closed');
    c.destroy();
  }
});

t.test('a client silent past the sniff timeout, then HTTP/1 with a body, beside busy connections', async (t) => {
  const up = await httpUpstream((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => res.end(`${req.url} ${Buffer.concat(parts).toString('latin1')}`));
  });
  t.teardown(() => up.close());
  const s = await sluiceTo(t, up.port, { tcp: { sniffTimeoutMs: 100 } });
  const port = s.port('app');
  const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const c = net.connect({ port, host: '127.0.0.1', noDelay: true });
    c.on('error', () => {});
    await once(c, 'connect');
    const body = `body-${i}-`.repeat(50 + i * 100);
    const wire = Buffer.from(`POST /s${i} HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    const p = collect(c, (b) => b.includes(`/s${i} ${body}`), 4000);
    if (i % 2 === 0) await new Promise((r) => setTimeout(r, 250)); // past the sniff timeout
    if (i % 4 === 0) { c.write(wire.subarray(0, 3)); await new Promise((r) => setTimeout(r, 30)); c.write(wire.subarray(3)); } else c.write(wire);
    const got = (await p).toString('latin1');
    c.destroy();
    return got.endsWith(`/s${i} ${body}`) ? 'ok' : `conn ${i}: ${got.slice(0, 200)}`;
  }));
  t.same(results.filter((r) => r !== 'ok'), []);
});

for (const [what, extra] of [['the start of another', 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nSMUG'], ['a whole other', 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nSMUGGLED!']]) {
t.test(`an upstream that sends ${what} response behind the one asked for: that connection is not reused, the next callers get their own answers`, async (t) => {
  let n = 0;
  const up = await rawServer((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        n++;
        // the answer, then the start of one nobody asked for, in the same segment
        if (n === 1) s.write(`HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none${extra}`);
        else s.write(`HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nanswer-${n % 10}`);
      }
    });
  });
  t.teardown(() => up.close());
  const s = await sluiceTo(t, up.port);
  const ask = async (path: string): Promise<string> => {
    const c = net.connect({ port: s.port('app'), host: '127.0.0.1' });
    c.on('error', () => {});
    c.write(`GET ${path} HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n`);
    const got = (await collect(c, () => false, 3000)).toString('latin1');
    c.destroy();
    return `${got.split('\r\n')[0]} ${got.slice(got.indexOf('\r\n\r\n') + 4)}`;
  };
  t.equal(await ask('/1'), 'HTTP/1.1 200 OK one');
  for (const path of ['/2', '/3', '/4']) {
    t.match(await ask(path), /^HTTP\/1.1 200 OK answer-\d$/, `${path}: an answer to its own request, nothing of the first`);
  }
});
}
