/**
 * The response head a client gets, byte for byte, for upstream heads of every layout. A head that
 * comes first in an upstream read and is written the way Sluice writes heads (`Name: value`, one
 * space, no trailing whitespace, `HTTP/1.1`, a reason) is copied out of the read
 * (relayResponseHead); any other goes through the encoder. Both must give the client the same
 * bytes: hop-by-hop fields dropped (any case, anywhere in the head), a Via added or appended to,
 * fields that Connection names dropped, a content-length of Sluice's own, a small body that came
 * in the same read written with the head and not again, and a request's response never mixed
 * with the next one's on the same connections.
 */
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { startSluice } from '../helpers/harness';

const VIA = 'via: 1.1 sluice\r\n';

/** Each case: what the upstream writes for `/<index>` (pieces written apart, 30 ms between), and the head the client must get. */
const CASES: Array<{ name: string; up: string[]; head: string; body: string; method?: string }> = [
  {
    name: 'canonical',
    up: ['HTTP/1.1 200 OK\r\nServer: up\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 OK\r\nServer: up\r\nX-A: 1\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'a body in two reads',
    up: ['HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 10\r\n\r\n01234', '56789'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 10\r\n\r\n`, body: '0123456789',
  },
  {
    name: 'a body of 16 KiB less a byte, with the head',
    up: [`HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 16383\r\n\r\n${'s'.repeat(16383)}`],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 16383\r\n\r\n`, body: 's'.repeat(16383),
  },
  {
    name: 'a body past 16 KiB',
    up: [`HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 20000\r\n\r\n${'b'.repeat(20000)}`],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 20000\r\n\r\n`, body: 'b'.repeat(20000),
  },
  {
    name: 'hop-by-hop in any case, first and last',
    up: ['HTTP/1.1 201 Created\r\nPROXY-CONNECTION: x\r\nDate: d\r\nkeep-ALIVE: 1\r\nTe: y\r\nX-Long: ' + 'v'.repeat(300) + '\r\ncontent-LENGTH: 3\r\nUPGRADE: h2\r\n\r\nabc'],
    head: `HTTP/1.1 201 Created\r\nDate: d\r\nX-Long: ${'v'.repeat(300)}\r\n${VIA}content-length: 3\r\n\r\n`, body: 'abc',
  },
  {
    name: 'whitespace around values',
    up: ['HTTP/1.1 200 OK\r\nX-A:1\r\nX-B:  2  \r\nX-C:\t3\r\nX-D: 4\r\nContent-Length: 1\r\n\r\nz'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n${VIA}content-length: 1\r\n\r\n`, body: 'z',
  },
  {
    name: 'empty values',
    up: ['HTTP/1.1 200 OK\r\nX-E: \r\nX-F:\r\nContent-Length: 0\r\n\r\n'],
    head: `HTTP/1.1 200 OK\r\nX-E: \r\nX-F: \r\n${VIA}content-length: 0\r\n\r\n`, body: '',
  },
  {
    name: 'a Via of the upstream',
    up: ['HTTP/1.1 200 OK\r\nVia: 1.0 up\r\nContent-Length: 2\r\n\r\nok'],
    head: 'HTTP/1.1 200 OK\r\nVia: 1.0 up, 1.1 sluice\r\ncontent-length: 2\r\n\r\n', body: 'ok',
  },
  {
    name: 'Connection naming a field',
    up: ['HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nX-Open: o\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 OK\r\nX-Open: o\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'obs-text and a reason with spaces',
    up: ['HTTP/1.1 404 Not  Found here\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nno'],
    head: `HTTP/1.1 404 Not  Found here\r\nX-Name: caf\xe9\r\n${VIA}content-length: 2\r\n\r\n`, body: 'no',
  },
  {
    name: 'no reason',
    up: ['HTTP/1.1 200\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 \r\nX-A: 1\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'empty lines before the status line',
    up: ['\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'a head in three reads',
    up: ['HTTP/1.1 200 OK\r\nX-A', ': 1\r\nX-B: 2\r\nConte', 'nt-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'an interim response in the same read',
    up: ['HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
  {
    name: 'chunked',
    up: ['HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}transfer-encoding: chunked\r\n\r\n`, body: '2\r\nok\r\n0\r\n\r\n',
  },
  {
    name: 'no content',
    up: ['HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n'],
    head: `HTTP/1.1 204 No Content\r\nX-A: 1\r\n${VIA}\r\n`, body: '',
  },
  {
    name: 'to HEAD',
    method: 'HEAD',
    up: ['HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 7\r\n\r\n'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 7\r\n\r\n`, body: '',
  },
  {
    name: 'an HTTP/1.0 upstream',
    up: ['HTTP/1.0 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok'],
    head: `HTTP/1.1 200 OK\r\nX-A: 1\r\n${VIA}content-length: 2\r\n\r\n`, body: 'ok',
  },
];

/** An upstream that answers `/<index>` with the case's bytes, on keep-alive connections (reads one request head at a time). */
async function rawUpstream(): Promise<net.Server> {
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', async (d: string) => {
      buf += d;
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const line = buf.slice(0, buf.indexOf('\r\n'));
        buf = buf.slice(end + 4);
        const c = CASES[Number(line.split(' ')[1].slice(1))];
        for (let i = 0; i < c.up.length; i++) {
          if (i > 0) await new Promise((r) => setTimeout(r, 30));
          sock.write(Buffer.from(c.up[i], 'latin1'));
        }
      }
    });
    sock.on('error', () => sock.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** Sends `req` on `sock` and reads until `expect` bytes came (or 3 s passed). */
async function exchange(sock: net.Socket, req: string, expect: number): Promise<string> {
  let got = '';
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(finish, 3000);
    function finish() { clearTimeout(timer); sock.off('data', onData); resolve(); }
    function onData(d: Buffer) { got += d.toString('latin1'); if (got.length >= expect) finish(); }
    sock.on('data', onData);
  });
  sock.write(req);
  await done;
  return got;
}

t.test('the client gets the same head bytes whatever the layout of the upstream head', async (t) => {
  const up = await rawUpstream();
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${(up.address() as net.AddressInfo).port}`] }],
  });
  t.teardown(async () => { await s.stop(); up.close(); });
  const client = net.connect(s.port('app'), '127.0.0.1');
  await once(client, 'connect');
  t.teardown(() => client.destroy());
  // twice over: the second round runs on upstream connections that answered before
  for (const round of [1, 2]) {
    for (const [i, c] of CASES.entries()) {
      const want = c.head + c.body;
      const got = await exchange(client, `${c.method ?? 'GET'} /${i} HTTP/1.1\r\nHost: h\r\n\r\n`, want.length);
      t.equal(got, want, `${c.name} (round ${round})`);
    }
  }
});

t.test('response header edits and via "" change the relayed head as they change an encoded one', async (t) => {
  const up = await rawUpstream();
  const s = await startSluice({
    workers: { threads: 1 },
    http: { via: '' },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${(up.address() as net.AddressInfo).port}`] }],
    routes: [
      { name: 'edited', match: { headers: { 'x-edit': { present: true } } }, action: { cluster: 'web' }, responseHeaders: { set: { 'x-served-by': 'sluice' }, remove: ['server'] } },
      { name: 'plain', match: {}, action: { cluster: 'web' } },
    ],
  });
  t.teardown(async () => { await s.stop(); up.close(); });
  const client = net.connect(s.port('app'), '127.0.0.1');
  await once(client, 'connect');
  t.teardown(() => client.destroy());
  const plain = 'HTTP/1.1 200 OK\r\nServer: up\r\nX-A: 1\r\ncontent-length: 2\r\n\r\nok';
  const edited = 'HTTP/1.1 200 OK\r\nX-A: 1\r\nx-served-by: sluice\r\ncontent-length: 2\r\n\r\nok';
  for (let i = 0; i < 3; i++) {
    t.equal(await exchange(client, 'GET /0 HTTP/1.1\r\nHost: h\r\n\r\n', plain.length), plain, 'no Via added');
    t.equal(await exchange(client, 'GET /0 HTTP/1.1\r\nHost: h\r\nX-Edit: 1\r\n\r\n', edited.length), edited, 'edited');
  }
});
