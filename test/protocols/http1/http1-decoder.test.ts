import t from 'tap';
import { Http1Decoder, Http1Head, Http1Limits } from '../../../src/protocols/http1/http1-decoder';
import { ProtocolError } from '../../../src/errors';

type Kind = 'request' | 'response';
type Ev =
  | { ev: 'head'; head: Http1Head }
  | { ev: 'body'; data: string }
  | { ev: 'end'; trailers: string[] | null }
  | { ev: 'error'; code: string; status: number };

interface Opts {
  limits?: Http1Limits;
  /** onMessageEnd return value */
  pauseOnEnd?: boolean;
  /** response decoder: methods announced before pushing */
  expect?: string[];
}

const LIMITS: Http1Limits = { maxHeaderBytes: 8192, maxHeaders: 100 };

function make(kind: Kind, opts: Opts = {}) {
  const events: Ev[] = [];
  let afterError = 0;
  let dead = false;
  const note = (e: Ev) => {
    if (dead) afterError++;
    events.push(e);
  };
  const d = new Http1Decoder(kind, {
    onHead: (head) => note({ ev: 'head', head }),
    onBody: (chunk) => note({ ev: 'body', data: chunk.toString('latin1') }),
    onMessageEnd: (trailers) => {
      note({ ev: 'end', trailers });
      return opts.pauseOnEnd ? false : undefined;
    },
    onError: (err) => {
      if (!(err instanceof ProtocolError)) throw new Error('onError got a non-ProtocolError');
      note({ ev: 'error', code: err.code, status: err.status });
      dead = true;
    },
  }, opts.limits ?? LIMITS);
  for (const m of opts.expect ?? []) d.expectResponseTo(m);
  return { d, events, afterError: () => afterError };
}

/** Merge adjacent body events so different fragmentations compare equal. */
function norm(events: Ev[]): Ev[] {
  const out: Ev[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.ev === 'body' && last && last.ev === 'body') out[out.length - 1] = { ev: 'body', data: last.data + e.data };
    else out.push(e);
  }
  return out;
}

function decode(kind: Kind, input: string | Buffer, opts: Opts & { split?: number; end?: boolean } = {}) {
  const r = make(kind, opts);
  const buf = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  const step = opts.split ?? buf.length;
  for (let i = 0; i < buf.length; i += step) r.d.push(buf.subarray(i, Math.min(buf.length, i + step)));
  let endResult: boolean | undefined;
  if (opts.end) endResult = r.d.end();
  return { ...r, endResult, ev: norm(r.events) };
}

const heads = (ev: Ev[]) => ev.filter((e): e is Extract<Ev, { ev: 'head' }> => e.ev === 'head').map((e) => e.head);
const errors = (ev: Ev[]) => ev.filter((e): e is Extract<Ev, { ev: 'error' }> => e.ev === 'error');
const bodyOf = (ev: Ev[]) => ev.filter((e) => e.ev === 'body').map((e) => (e as { data: string }).data).join('');

// ---------------------------------------------------------------------------------------------

t.test('simple GET', async (t) => {
  const { ev, d } = decode('request',
    'GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \t\r\nAccept: */*\r\nX-Empty:\r\n\r\n');
  t.equal(ev.length, 2);
  t.same(ev[1], { ev: 'end', trailers: null });
  const h = heads(ev)[0];
  t.equal(h.method, 'GET');
  t.equal(h.target, '/index.html?q=1');
  t.equal(h.status, 0);
  t.equal(h.reason, '');
  t.equal(h.versionMinor, 1);
  t.same(h.headers, ['Host', 'example.com', 'User-Agent', 'curl/8', 'Accept', '*/*', 'X-Empty', '']);
  t.equal(h.contentLength, -1);
  t.equal(h.chunked, false);
  t.equal(h.keepAlive, true);
  t.equal(h.upgrade, false);
  t.equal(h.expectContinue, false);
  t.equal(h.host, 'example.com');
  t.same(h.connectionTokens, []);
  t.equal(d.idle, true);
  t.equal(d.bufferedBytes, 0);
  t.equal(d.end(), true);
});

t.test('header names keep case, special headers matched case-insensitively', async (t) => {
  const { ev } = decode('request',
    'POST /u HTTP/1.1\r\nhOsT: h:81\r\ncOnTeNt-LeNgTh: 3\r\nEXPECT: 100-Continue\r\nconnection: Foo, KEEP-ALIVE,,  x-Bar \r\n\r\nabc');
  const h = heads(ev)[0];
  t.same(h.headers, ['hOsT', 'h:81', 'cOnTeNt-LeNgTh', '3', 'EXPECT', '100-Continue', 'connection', 'Foo, KEEP-ALIVE,,  x-Bar']);
  t.equal(h.host, 'h:81');
  t.equal(h.contentLength, 3);
  t.equal(h.expectContinue, true);
  t.same(h.connectionTokens, ['foo', 'keep-alive', 'x-bar']);
  t.equal(bodyOf(ev), 'abc');
  t.equal(ev[ev.length - 1].ev, 'end');
});

t.test('keep-alive semantics', async (t) => {
  const cases: [string, string, boolean, string[]][] = [
    ['1.1', '', true, []],
    ['1.1', 'Connection: close\r\n', false, ['close']],
    ['1.1', 'Connection: keep-alive\r\n', true, ['keep-alive']],
    ['1.1', 'Connection: Upgrade\r\nConnection: CLOSE\r\n', false, ['upgrade', 'close']],
    ['1.0', '', false, []],
    ['1.0', 'Connection: Keep-Alive\r\n', true, ['keep-alive']],
    ['1.0', 'Connection: keep-alive, close\r\n', false, ['keep-alive', 'close']],
    ['1.0', 'Connection: foo\r\n', false, ['foo']],
  ];
  for (const [v, extra, ka, tokens] of cases) {
    const { ev } = decode('request', `GET / HTTP/${v}\r\nHost: a\r\n${extra}\r\n`);
    const h = heads(ev)[0];
    t.equal(h.versionMinor, v === '1.1' ? 1 : 0, `${v} ${extra}`);
    t.equal(h.keepAlive, ka, `request ${v} ${JSON.stringify(extra)} keepAlive=${ka}`);
    t.same(h.connectionTokens, tokens);
    const r = decode('response', `HTTP/${v} 200 OK\r\n${extra}Content-Length: 0\r\n\r\n`);
    t.equal(heads(r.ev)[0].keepAlive, ka, `response ${v} ${JSON.stringify(extra)} keepAlive=${ka}`);
  }
  // HTTP/1.0 without Host is fine
  t.equal(heads(decode('request', 'GET / HTTP/1.0\r\n\r\n').ev)[0].host, '');
});

t.test('request-target forms and OWS around framing values', async (t) => {
  const ok: [string, string][] = [
    ['GET http://example.com/a?b HTTP/1.1', 'http://example.com/a?b'],
    ['GET HTTPS://example.com HTTP/1.1', 'HTTPS://example.com'],
    ['OPTIONS * HTTP/1.1', '*'],
    ['CONNECT example.com:443 HTTP/1.1', 'example.com:443'],
    ['CONNECT [::1]:8443 HTTP/1.1', '[::1]:8443'],
    ['GET //double HTTP/1.1', '//double'],
    ['GET /a%20b;c?d=e&f#frag HTTP/1.1', '/a%20b;c?d=e&f#frag'],
  ];
  for (const [line, target] of ok) {
    const { ev } = decode('request', line + '\r\nHost: a\r\n\r\n');
    t.equal(errors(ev).length, 0, line);
    t.equal(heads(ev)[0]?.target, target);
  }
  const cl = decode('request', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t 2  \r\n\r\nab');
  t.equal(heads(cl.ev)[0].contentLength, 2);
  t.equal(bodyOf(cl.ev), 'ab');
  const te = decode('request', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tCHUNKED \r\n\r\n0\r\n\r\n');
  t.equal(heads(te.ev)[0].chunked, true);
  t.equal(errors(te.ev).length, 0);
});

t.test('input after a message that closes the connection is discarded, never parsed', async (t) => {
  const cases: [Kind, string][] = [
    ['request', 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['request', 'GET / HTTP/1.0\r\n\r\nGET /evil HTTP/1.0\r\n\r\n'],
    ['request', 'POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhiGARBAGE'],
    ['response', 'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['response', 'HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n'],
  ];
  for (const [kind, msg] of cases) {
    for (const split of [undefined, 1]) {
      const r = decode(kind, msg, { split });
      t.same(r.ev.map((e) => e.ev).filter((e) => e !== 'body'), ['head', 'end'], `${JSON.stringify(msg)} split ${split}`);
      t.equal(r.d.bufferedBytes, 0);
      r.d.push(Buffer.from('more'));
      t.equal(r.d.bufferedBytes, 0);
      t.equal(r.d.end(), true);
    }
  }
  // 1xx responses do not end the connection even in HTTP/1.0 keep-alive-less form
  const interim = decode('response', 'HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
  t.equal(heads(interim.ev).length, 2);
});

t.test('leading CRLFs are skipped (up to 4)', async (t) => {
  const { ev } = decode('request', '\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n');
  t.equal(heads(ev)[0].method, 'GET');
  t.equal(errors(ev).length, 0);
});

t.test('Content-Length body split across pushes (zero-copy slices)', async (t) => {
  const head = Buffer.from('PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123');
  const chunks: Buffer[] = [];
  const ends: unknown[] = [];
  const d = new Http1Decoder('request', {
    onHead: () => {}, onBody: (c) => chunks.push(c), onMessageEnd: (tr) => { ends.push(tr); },
    onError: (e) => t.fail(e.message),
  }, LIMITS);
  d.push(head);
  t.equal(chunks.length, 1);
  t.equal(chunks[0].buffer, head.buffer, 'body slice shares memory with the pushed chunk');
  t.equal(chunks[0].byteOffset, head.byteOffset + head.length - 4);
  t.equal(d.idle, false);
  const p2 = Buffer.from('456');
  d.push(p2);
  t.equal(chunks[1].buffer, p2.buffer);
  t.equal(ends.length, 0);
  d.push(Buffer.from('789GET / HTTP/1.0\r\n\r\n'));
  t.equal(Buffer.concat(chunks).toString(), '0123456789');
  t.same(ends, [null, null], 'second (pipelined) request in the same chunk ends too');
  t.equal(d.idle, true);
});

t.test('request without Content-Length has no body', async (t) => {
  const { ev } = decode('request', 'DELETE /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n');
  t.same(heads(ev).map((h) => h.target), ['/x', '/y']);
  t.equal(ev.filter((e) => e.ev === 'body').length, 0);
  t.same(ev.map((e) => e.ev), ['head', 'end', 'head', 'end']);
});

t.test('chunked body with extensions and trailers', async (t) => {
  const msg = 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n' +
    '5;name=val;q="x \\"y\\" ;=\tz"\r\nhello\r\n' +
    '6;ext;e2\r\n world\r\n' +
    '000A\r\n0123456789\r\n' +
    '0;last\r\nX-Checksum: abc \r\nX-Other:\t1\r\n\r\n';
  const { ev } = decode('request', msg);
  const h = heads(ev)[0];
  t.equal(h.chunked, true);
  t.equal(h.contentLength, -1);
  t.equal(bodyOf(ev), 'hello world0123456789');
  t.same(ev[ev.length - 1], { ev: 'end', trailers: ['X-Checksum', 'abc', 'X-Other', '1'] });
  const noTrailers = decode('request', 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  t.same(noTrailers.ev[noTrailers.ev.length - 1], { ev: 'end', trailers: null });
  t.equal(bodyOf(noTrailers.ev), 'abc');
});

const FRAGMENT_SET: { name: string; kind: Kind; msg: string; expect?: string[]; end?: boolean }[] = [
  { name: 'GET', kind: 'request', msg: 'GET /a HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n' },
  { name: 'pipelined', kind: 'request',
    msg: '\r\nGET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' },
  { name: 'chunked+trailers+ext', kind: 'request',
    msg: 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\nWiki\r\n5;x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0;end=1\r\nExpires: never\r\nX-T: v\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'upgrade request', kind: 'request',
    msg: 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' },
  { name: 'response CL', kind: 'response', msg: 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n' },
  { name: 'response chunked+trailers', kind: 'response',
    msg: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGrpc-Status: 0\r\n\r\n' },
  { name: '100 then 200', kind: 'response', msg: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' },
  { name: 'HEAD/204/304', kind: 'response', expect: ['HEAD', 'GET', 'GET'],
    msg: 'HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n' },
  { name: 'read until close', kind: 'response', end: true, msg: 'HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome body bytes' },
  { name: 'status without reason', kind: 'response', msg: 'HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n' },
];

t.test('1 byte at a time (and other splits) gives the same events as all at once', async (t) => {
  for (const c of FRAGMENT_SET) {
    const whole = decode(c.kind, c.msg, { expect: c.expect, end: c.end });
    t.equal(errors(whole.ev).length, 0, `${c.name}: no error`);
    t.ok(whole.ev.some((e) => e.ev === 'end'), `${c.name}: has message end`);
    for (const split of [1, 2, 3, 7, 13]) {
      const frag = decode(c.kind, c.msg, { expect: c.expect, end: c.end, split });
      t.same(frag.ev, whole.ev, `${c.name}: split ${split}`);
      t.equal(frag.endResult, whole.endResult);
    }
  }
});

t.test('pipelined requests with pause/resume via onMessageEnd=false', async (t) => {
  const reqs = 'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: a\r\n\r\n';
  const { d, events } = make('request', { pauseOnEnd: true });
  d.push(Buffer.from(reqs));
  t.same(norm(events).map((e) => e.ev), ['head', 'end']);
  t.equal(heads(events)[0].target, '/1');
  t.ok(d.bufferedBytes > 0, 'remaining requests are buffered');
  t.equal(d.idle, false);
  d.push(Buffer.from('GET /4 HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.equal(events.length, 2, 'push while paused only buffers');
  d.resume();
  t.same(heads(events).map((h) => h.target), ['/1', '/2']);
  t.equal(bodyOf(events), 'hi');
  d.resume();
  d.resume();
  t.same(heads(events).map((h) => h.target), ['/1', '/2', '/3', '/4']);
  t.equal(d.bufferedBytes, 0);
  t.equal(d.idle, true, 'paused between messages with nothing buffered is idle');
  d.resume();
  t.equal(d.idle, true);
  t.equal(d.end(), true);
});

t.test('pause() from onBody (backpressure), bytes buffered, resume delivers in order', async (t) => {
  const got: string[] = [];
  let ended = 0;
  let pauseNext = true;
  const d: Http1Decoder = new Http1Decoder('request', {
    onHead: (h) => got.push('head:' + h.target),
    onBody: (c) => { got.push('body:' + c.toString()); if (pauseNext) { pauseNext = false; d.pause(); } },
    onMessageEnd: () => { ended++; got.push('end'); },
    onError: (e) => t.fail(e.message),
  }, LIMITS);
  d.push(Buffer.from('POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab'));
  t.same(got, ['head:/a', 'body:ab']);
  d.push(Buffer.from('cd'));
  d.push(Buffer.from('GET /b HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.same(got, ['head:/a', 'body:ab']);
  t.equal(d.bufferedBytes, 2 + 28);
  d.resume();
  t.same(got, ['head:/a', 'body:ab', 'body:cd', 'end', 'head:/b', 'end']);
  t.equal(ended, 2);
  // external pause with message end deferred
  d.pause();
  d.push(Buffer.from('GET /c HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.equal(got.length, 6);
  d.resume();
  t.equal(got[got.length - 1], 'end');
});

t.test('pause inside onHead defers onMessageEnd of a bodiless message', async (t) => {
  const got: string[] = [];
  const d: Http1Decoder = new Http1Decoder('request', {
    onHead: () => { got.push('head'); d.pause(); },
    onBody: () => got.push('body'),
    onMessageEnd: () => { got.push('end'); },
    onError: (e) => t.fail(e.message),
  }, LIMITS);
  d.push(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.same(got, ['head']);
  d.resume();
  t.same(got, ['head', 'end']);
});

t.test('responses: HEAD, 204, 304, 1xx, 101 + takeRemainder, read-until-close', async (t) => {
  t.test('HEAD response has no body even with Content-Length', async (t) => {
    const { ev } = decode('response', 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      { expect: ['HEAD', 'GET'] });
    t.same(ev.map((e) => e.ev), ['head', 'end', 'head', 'body', 'end']);
    t.equal(heads(ev)[0].contentLength, 1234);
    t.equal(bodyOf(ev), 'ok');
  });
  t.test('204 / 304 have no body', async (t) => {
    const { ev } = decode('response', 'HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    t.same(ev.map((e) => e.ev), ['head', 'end', 'head', 'end', 'head', 'end']);
    t.same(heads(ev).map((h) => h.status), [204, 304, 200]);
  });
  t.test('100 Continue is its own message, then the final response (HEAD expectation kept)', async (t) => {
    const { ev } = decode('response', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n',
      { expect: ['HEAD'] });
    t.same(ev.map((e) => e.ev), ['head', 'end', 'head', 'end', 'head', 'end']);
    t.same(heads(ev).map((h) => [h.status, h.reason]), [[100, 'Continue'], [103, 'Early Hints'], [200, 'OK']]);
    t.same(heads(ev)[1].headers, ['Link', '</s>']);
  });
  t.test('101 Switching Protocols stops parsing; takeRemainder returns the tunnel bytes', async (t) => {
    const { d, ev } = decode('response', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello');
    t.same(ev.map((e) => e.ev), ['head', 'end']);
    t.equal(heads(ev)[0].upgrade, true);
    t.equal(d.bufferedBytes, 7);
    d.push(Buffer.from('GET / HTTP/1.1\r\n'));
    t.equal(d.takeRemainder().toString('latin1'), '\x81\x05helloGET / HTTP/1.1\r\n');
    t.equal(d.bufferedBytes, 0);
    t.equal(d.takeRemainder().length, 0);
    t.equal(d.idle, false);
  });
  t.test('read-until-close body ends at end()', async (t) => {
    const { d, events } = make('response');
    d.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc'));
    d.push(Buffer.from('def'));
    t.same(norm(events).map((e) => e.ev), ['head', 'body']);
    t.equal(heads(events)[0].keepAlive, false, 'close-delimited message cannot keep the connection');
    t.equal(d.end(), true);
    t.same(norm(events).map((e) => e.ev), ['head', 'body', 'end']);
    t.equal(bodyOf(events), 'abcdef');
    d.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'));
    t.equal(events.length, 4, 'input after end() is ignored');
  });
  t.test('read-until-close while paused: EOF handled after resume', async (t) => {
    const got: string[] = [];
    const d: Http1Decoder = new Http1Decoder('response', {
      onHead: () => got.push('head'),
      onBody: (c) => { got.push(c.toString()); d.pause(); },
      onMessageEnd: () => { got.push('end'); },
      onError: (e) => got.push(e.code),
    }, LIMITS);
    d.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\nab'));
    d.push(Buffer.from('cd'));
    t.equal(d.end(), false, 'deferred');
    t.same(got, ['head', 'ab']);
    d.resume();
    t.same(got, ['head', 'ab', 'cd']);
    d.resume();
    t.same(got, ['head', 'ab', 'cd', 'end']);
  });
  t.test('expectResponseTo is FIFO for pipelined requests', async (t) => {
    const { ev } = decode('response', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz',
      { expect: ['GET', 'HEAD', 'POST'] });
    t.same(ev.map((e) => e.ev), ['head', 'body', 'end', 'head', 'end', 'head', 'body', 'end']);
    t.equal(bodyOf(ev), 'abcz');
  });
});

t.test('request upgrade: body framing as normal, then stop + takeRemainder', async (t) => {
  const { d, ev } = decode('request',
    'POST /up HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabcPRI * HTTP/2.0\r\n');
  const h = heads(ev)[0];
  t.equal(h.upgrade, true);
  t.same(ev.map((e) => e.ev), ['head', 'body', 'end']);
  t.equal(d.takeRemainder().toString(), 'PRI * HTTP/2.0\r\n');
  // Upgrade header alone (without Connection: upgrade) is not an upgrade
  const plain = decode('request', 'GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  t.equal(heads(plain.ev)[0].upgrade, false);
  t.equal(heads(plain.ev).length, 2);
});

// ---------------------------------------------------------------------------------------------

const R = 'request' as const;
const S = 'response' as const;
const H = 'Host: a\r\n';
const REJECT: [string, Kind, string, string, number][] = [
  // start line (request)
  ['method not a token', R, 'G@T / HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['empty method', R, ' / HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['method only', R, 'GET\r\n\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['two SP before target', R, 'GET  / HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['two SP before version', R, 'GET /  HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['HTAB as separator', R, 'GET\t/ HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['SP inside target', R, 'GET /a b HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['NUL in target', R, 'GET /\x00 HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['HTAB in target', R, 'GET /a\tb HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['DEL in target', R, 'GET /\x7f HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['non-ASCII in target', R, 'GET /\xc3\xa9 HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['HTTP/0.9 request line', R, 'GET /x\r\n\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['missing version after SP', R, 'GET / \r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['trailing SP', R, 'GET / HTTP/1.1 \r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['trailing garbage', R, 'GET / HTTP/1.1 x\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['garbage glued to version', R, 'GET / HTTP/1.1x\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['relative target', R, 'GET a2 HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['authority-form without CONNECT', R, 'GET a:443 HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['absolute-form without //', R, 'GET urn:x HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['absolute-form scheme with +', R, 'GET h2+x://a/b HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['asterisk-form without OPTIONS', R, 'GET * HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['CONNECT with origin-form', R, 'CONNECT /a HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['CONNECT without port', R, 'CONNECT a HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['not a version', R, 'GET / FTP\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  ['too many leading CRLFs', R, '\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_REQUEST_LINE', 400],
  // version
  ['HTTP/2.0', R, 'GET / HTTP/2.0\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  ['HTTP/1.2', R, 'GET / HTTP/1.2\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  ['HTTP/0.9', R, 'GET / HTTP/0.9\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  ['lower-case http/1.1', R, 'GET / http/1.1\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  ['HTTP/1.10', R, 'GET / HTTP/1.10\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  ['HTTP/2', R, 'GET / HTTP/2\r\n' + H + '\r\n', 'ERR_HTTP_VERSION', 505],
  // line endings
  ['HTTP/0.9 smuggling (bare LF after target)', R, 'GET /x\nHost: a\r\nContent-Length: 5\r\n\r\nhello', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare LF after request line', R, 'GET / HTTP/1.1\n' + H + '\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare LF after header', R, 'GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare LF ending head', R, 'GET / HTTP/1.1\r\n' + H + '\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['leading bare LF', R, '\nGET / HTTP/1.1\r\n' + H + '\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare CR in request line', R, 'GET / HTTP/1.1\rHost: a\r\n\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare CR in header value', R, 'GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  ['bare CR as end of head', R, 'GET / HTTP/1.1\r\n' + H + '\r\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  // header fields
  ['empty field name', R, 'GET / HTTP/1.1\r\n' + H + ': x\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['field name not a token', R, 'GET / HTTP/1.1\r\n' + H + 'X(y): x\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['non-ASCII field name', R, 'GET / HTTP/1.1\r\n' + H + 'X\xe9: x\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['SP before colon', R, 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['HTAB before colon', R, 'GET / HTTP/1.1\r\n' + H + 'Content-Length\t: 0\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['SP inside name', R, 'GET / HTTP/1.1\r\n' + H + 'X Y: z\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['obs-fold SP', R, 'GET / HTTP/1.1\r\n' + H + 'X: a\r\n b\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['obs-fold HTAB', R, 'GET / HTTP/1.1\r\n' + H + 'X: a\r\n\tb\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['whitespace before first header', R, 'GET / HTTP/1.1\r\n Host: a\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['NUL in value', R, 'GET / HTTP/1.1\r\n' + H + 'X: a\x00b\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['CTL in value', R, 'GET / HTTP/1.1\r\n' + H + 'X: a\x01b\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['DEL in value', R, 'GET / HTTP/1.1\r\n' + H + 'X: a\x7fb\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['ESC in value', R, 'GET / HTTP/1.1\r\n' + H + 'X: \x1b[0m\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['line without colon', R, 'GET / HTTP/1.1\r\n' + H + 'NoColon\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  // Content-Length
  ['CL not digits', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: abc\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL negative', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: -1\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL plus sign', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: +1\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL hex', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 0x10\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL decimal point', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 1.0\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL inner space', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 1 2\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL empty', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: \r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL comma list', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 5, 5\r\n\r\nhello', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL 16 digits', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 1000000000000000\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL trailing HTAB', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 2\t\r\n\r\nab', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['CL > 2^53', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 9007199254740993\r\n\r\n', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['duplicate CL (same value)', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 5\r\ncontent-length: 5\r\n\r\nhello', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  ['duplicate CL (different)', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 'ERR_HTTP_BAD_CONTENT_LENGTH', 400],
  // Transfer-Encoding
  ['TE + CL', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['CL + TE', R, 'POST / HTTP/1.1\r\n' + H + 'Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE in HTTP/1.0', R, 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE gzip', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: gzip\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE identity', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: identity\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE chunked, gzip', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked, gzip\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE chunkedx', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunkedx\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE trailing HTAB', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE empty', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: \r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE twice', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 400],
  ['TE gzip, chunked', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_UNSUPPORTED_TRANSFER_ENCODING', 501],
  ['TE deflate,chunked', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: deflate,chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_UNSUPPORTED_TRANSFER_ENCODING', 501],
  // Host
  ['missing Host', R, 'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n', 'ERR_HTTP_MISSING_HOST', 400],
  ['duplicate Host', R, 'GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n', 'ERR_HTTP_DUPLICATE_HOST', 400],
  ['duplicate Host (same value)', R, 'GET / HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n', 'ERR_HTTP_DUPLICATE_HOST', 400],
  // chunked framing
  ['chunk size not hex', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\nzz\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size empty', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size 0x prefix', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size negative', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n-5\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size 17 hex digits', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size > 2^53-1', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n20000000000000\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk size then garbage', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['SP after chunk size', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['BWS before chunk ext', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5 ;a\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['BWS around = in chunk ext', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a = b\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['empty chunk ext name', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;=b\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['lone ; in chunk ext', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['empty chunk ext value', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['non-token chunk ext value', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a=\xfeb\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['unterminated quoted chunk ext', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a="b\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['garbage after quoted chunk ext', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a="b"c\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['chunk extensions > 16 KiB', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n' + '1;a=b\r\nx\r\n'.repeat(4200), 'ERR_HTTP_BAD_CHUNK', 400],
  ['CTL in chunk extension', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['NUL in chunk extension', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;\x00\r\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bare LF after chunk size', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bare CR after chunk size', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bare LF after extension', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5;x\nhello\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['missing CRLF after data', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bare LF after data', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bad last-chunk line', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0\n\r\n', 'ERR_HTTP_BAD_CHUNK', 400],
  ['bad trailer field', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['obs-fold in trailer', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['Content-Length in trailer', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['Transfer-Encoding in trailer', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0\r\ntransfer-encoding: chunked\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 400],
  ['bare LF in trailer', R, 'POST / HTTP/1.1\r\n' + H + 'Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 400],
  // responses
  ['status 2 digits', S, 'HTTP/1.1 20 OK\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['status 4 digits', S, 'HTTP/1.1 2000 OK\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['status 099', S, 'HTTP/1.1 099 X\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['status 600', S, 'HTTP/1.1 600 X\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['status not digits', S, 'HTTP/1.1 abc OK\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['two SP before status', S, 'HTTP/1.1  200 OK\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['no status', S, 'HTTP/1.1\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['NUL in reason', S, 'HTTP/1.1 200 O\x00K\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['not HTTP', S, 'ICY 200 OK\r\n\r\n', 'ERR_HTTP_BAD_STATUS_LINE', 502],
  ['response HTTP/2.0', S, 'HTTP/2.0 200 OK\r\n\r\n', 'ERR_HTTP_VERSION', 502],
  ['response HTTP/1.2', S, 'HTTP/1.2 200 OK\r\n\r\n', 'ERR_HTTP_VERSION', 502],
  ['response http/1.1', S, 'http/1.1 200 OK\r\n\r\n', 'ERR_HTTP_VERSION', 502],
  ['response bare LF', S, 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n', 'ERR_HTTP_BAD_LINE_ENDING', 502],
  ['response TE + CL', S, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 502],
  ['response TE gzip', S, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 502],
  ['response TE in HTTP/1.0', S, 'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'ERR_HTTP_BAD_TRANSFER_ENCODING', 502],
  ['response TE gzip, chunked', S, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 'ERR_HTTP_UNSUPPORTED_TRANSFER_ENCODING', 502],
  ['response bad chunk', S, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n', 'ERR_HTTP_BAD_CHUNK', 502],
  ['response duplicate CL', S, 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx', 'ERR_HTTP_BAD_CONTENT_LENGTH', 502],
  ['response bad header', S, 'HTTP/1.1 200 OK\r\nX : y\r\n\r\n', 'ERR_HTTP_BAD_HEADER', 502],
];

t.test('rejections (table-driven, whole and 1 byte at a time)', async (t) => {
  for (const [name, kind, msg, code, status] of REJECT) {
    for (const split of [undefined, 1]) {
      const r = decode(kind, msg, { split });
      const errs = errors(r.ev);
      t.same(errs, [{ ev: 'error', code, status }], `${kind} ${name}${split ? ' (1 byte at a time)' : ''}`);
      t.equal(r.ev[r.ev.length - 1].ev, 'error', `${name}: error is the last event`);
      // dead afterwards: further input and end() are ignored
      r.d.push(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
      t.equal(r.d.end(), false);
      t.equal(r.afterError(), 0, `${name}: nothing emitted after onError`);
    }
  }
});

t.test('the HTTP/0.9 smuggling bytes never produce a head or body', async (t) => {
  for (const split of [undefined, 1, 6, 7]) {
    const r = decode('request', 'GET /x\nHost: a\r\nContent-Length: 5\r\n\r\nhello', { split, end: true });
    t.same(r.ev, [{ ev: 'error', code: 'ERR_HTTP_BAD_LINE_ENDING', status: 400 }]);
  }
});

t.test('header limits (431)', async (t) => {
  const msg = 'GET /path HTTP/1.1\r\nHost: example\r\nA: 1\r\nB: 2\r\n\r\n';
  const size = msg.length;
  for (const split of [undefined, 1, 5]) {
    const ok = decode('request', msg, { limits: { maxHeaderBytes: size, maxHeaders: 3 }, split });
    t.equal(errors(ok.ev).length, 0, `exactly at byte and count limits passes (split ${split})`);
    const big = decode('request', msg, { limits: { maxHeaderBytes: size - 1, maxHeaders: 3 }, split });
    t.same(errors(big.ev), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], `one byte over (split ${split})`);
    t.equal(heads(big.ev).length, 0);
    const many = decode('request', msg, { limits: { maxHeaderBytes: 8192, maxHeaders: 2 }, split });
    t.same(errors(many.ev), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], `too many fields (split ${split})`);
  }
  // detected while the head is still incomplete
  const { d, events } = make('request', { limits: { maxHeaderBytes: 1024, maxHeaders: 10 } });
  d.push(Buffer.from('GET /' + 'a'.repeat(600)));
  t.equal(events.length, 0);
  t.equal(d.bufferedBytes, 605);
  d.push(Buffer.from('b'.repeat(600)));
  t.same(norm(events), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], 'fails before the end of the head');
  t.equal(d.bufferedBytes, 0);
  const h2 = make('request', { limits: { maxHeaderBytes: 100, maxHeaders: 10 } });
  h2.d.push(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nX: ' + 'v'.repeat(200)));
  t.same(norm(h2.events), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], 'single chunk, incomplete');
  // trailers count against the limits too
  const tr = 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: ' + 'x'.repeat(100) + '\r\n\r\n';
  const trr = decode('request', tr, { limits: { maxHeaderBytes: 90, maxHeaders: 10 } });
  t.same(errors(trr.ev), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], 'trailer section too large');
  const trc = decode('request', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\n\r\n',
    { limits: { maxHeaderBytes: 8192, maxHeaders: 2 } });
  t.equal(errors(trc.ev).length, 0, '2 trailers with maxHeaders 2');
  const trc3 = decode('request', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n',
    { limits: { maxHeaderBytes: 8192, maxHeaders: 2 } });
  t.same(errors(trc3.ev), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 431 }], 'too many trailers');
  const resp = decode('response', 'HTTP/1.1 200 OK\r\nX: ' + 'y'.repeat(300) + '\r\n\r\n', { limits: { maxHeaderBytes: 100, maxHeaders: 10 } });
  t.same(errors(resp.ev), [{ ev: 'error', code: 'ERR_HTTP_HEADERS_TOO_LARGE', status: 502 }], 'response head too large maps to 502');
});

t.test('end(): clean vs incomplete', async (t) => {
  const incomplete: [Kind, string][] = [
    [R, 'GET / HTTP/1.1\r\nHost: a\r\n'],
    [R, 'GET / HT'],
    [R, 'GET / HTTP/1.1\r\nHost: a\r\n\r'],
    [R, '\r'],
    [R, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel'],
    [R, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n'],
    [R, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello'],
    [R, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n'],
    [R, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n'],
    [S, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab'],
    [S, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'],
    [S, 'HTTP/1.1 200'],
  ];
  for (const [kind, msg] of incomplete) {
    for (const split of [undefined, 1]) {
      const r = decode(kind, msg, { split, end: true });
      t.equal(r.endResult, false, `${JSON.stringify(msg)} end() = false`);
      t.same(errors(r.ev), [{ ev: 'error', code: 'ERR_HTTP_INCOMPLETE', status: kind === R ? 400 : 502 }]);
    }
  }
  t.equal(decode(R, '', { end: true }).endResult, true, 'nothing received');
  t.equal(decode(R, '\r\n', { end: true }).endResult, true, 'stray CRLF only');
  const two = decode(R, 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', { end: true });
  t.equal(two.endResult, true);
  t.equal(errors(two.ev).length, 0);
  const up = decode(S, 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\ndata', { end: true });
  t.equal(up.endResult, true, 'EOF after an upgrade is not an HTTP error');
});

t.test('idle and bufferedBytes', async (t) => {
  const { d } = make('request');
  t.equal(d.idle, true);
  d.push(Buffer.from('GET / HTTP/1.1\r\nHo'));
  t.equal(d.idle, false);
  t.equal(d.bufferedBytes, 2, 'only the incomplete line is held');
  d.push(Buffer.from('st: a\r\n\r\n'));
  t.equal(d.idle, true);
  t.equal(d.bufferedBytes, 0);
});

// ---------------------------------------------------------------------------------------------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('random mutations never throw, always finish, and are fragmentation-independent', async (t) => {
  const rnd = mulberry32(0x5eed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  const interesting = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x3a, 0x3b, 0x2c, 0x30, 0x31, 0x39, 0x61, 0x46, 0x7f, 0x80, 0xff];
  const bases = FRAGMENT_SET.map((c) => ({ ...c, bytes: Buffer.from(c.msg, 'latin1') }));
  let throws = 0;
  let notFinished = 0;
  let fragMismatch = 0;
  let eventsAfterError = 0;
  let accepted = 0;
  let rejected = 0;
  const firstProblems: string[] = [];
  const ITER = 5000;
  for (let it = 0; it < ITER; it++) {
    const base = pick(bases);
    const arr = Array.from(base.bytes);
    const nMut = 1 + Math.floor(rnd() * 3);
    for (let m = 0; m < nMut; m++) {
      const op = rnd();
      const at = Math.floor(rnd() * (arr.length + 1));
      const byte = rnd() < 0.6 ? pick(interesting) : Math.floor(rnd() * 256);
      if (op < 0.4 && at < arr.length) arr[at] = byte;
      else if (op < 0.7) arr.splice(at, 0, byte);
      else if (arr.length > 1) arr.splice(Math.min(at, arr.length - 1), 1);
    }
    const input = Buffer.from(arr);
    const runOnce = (split: number) => {
      const r = make(base.kind, { expect: base.expect, limits: { maxHeaderBytes: 4096, maxHeaders: 50 } });
      for (let i = 0; i < input.length; i += split) r.d.push(input.subarray(i, i + split));
      const endResult = r.d.end();
      if (r.afterError() > 0) eventsAfterError++;
      return { ev: norm(r.events), endResult };
    };
    try {
      const whole = runOnce(input.length);
      const splitN = 1 + Math.floor(rnd() * 9);
      const frag = runOnce(splitN);
      const last = whole.ev[whole.ev.length - 1];
      const finished = whole.endResult || (last !== undefined && (last.ev === 'error' || last.ev === 'end'));
      if (!finished) notFinished++;
      if (last?.ev === 'error') rejected++;
      else accepted++;
      // A line that is invalid *and* never completes is rejected early when it arrives in one piece,
      // but reported as ERR_HTTP_INCOMPLETE at EOF when the invalid byte was held in the line buffer.
      const a = JSON.stringify(whole.ev);
      const b = JSON.stringify(frag.ev);
      if (a !== b) {
        const strip = (ev: Ev[]) => JSON.stringify(ev.filter((e) => e.ev !== 'error'));
        const le = frag.ev[frag.ev.length - 1];
        const tolerated = last?.ev === 'error' && le?.ev === 'error' && le.code === 'ERR_HTTP_INCOMPLETE' &&
          strip(whole.ev) === strip(frag.ev);
        if (!tolerated) {
          fragMismatch++;
          if (firstProblems.length < 3) firstProblems.push(`${JSON.stringify(input.toString('latin1'))} split ${splitN}:\n${a}\n${b}`);
        }
      }
    } catch (err) {
      throws++;
      if (firstProblems.length < 3) firstProblems.push(`${JSON.stringify(input.toString('latin1'))} threw ${(err as Error).stack}`);
    }
  }
  t.equal(throws, 0, 'decoder never throws');
  t.equal(notFinished, 0, 'every run ends in onMessageEnd, onError or a clean end()');
  t.equal(eventsAfterError, 0, 'no events after onError');
  t.equal(fragMismatch, 0, 'same events regardless of fragmentation');
  t.ok(accepted > 100 && rejected > 1000, `mix of accepted (${accepted}) and rejected (${rejected}) inputs`);
  if (firstProblems.length) t.comment(firstProblems.join('\n\n'));
});

// Differential check against Node's own llhttp (strict mode): whatever we accept, llhttp must accept
// too and split into the same messages/bodies. Known, intentional differences: any token is a valid
// method (llhttp only knows a fixed list); bytes after a non-keep-alive message are dropped silently
// (llhttp: HPE_CLOSED_CONNECTION); bytes after a 101 are tunnel data, not HTTP.
t.test('at least as strict as llhttp on mutated messages', async (t) => {
  type LlParser = {
    initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
    execute(b: Buffer): number | Error;
    finish(): number | Error;
    [k: number]: unknown;
  };
  let HTTPParser: { new(): LlParser; REQUEST: number; RESPONSE: number; [k: string]: number } | undefined;
  let METHODS: string[] = [];
  let why = '';
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    HTTPParser = require('_http_common').HTTPParser;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    METHODS = require('http').METHODS;
  } catch (err) { why = `: ${(err as Error).message}`; }
  // Without llhttp there is nothing to compare against: that is a failure, never a silent pass.
  if (typeof HTTPParser !== 'function') {
    t.fail(`Node's internal HTTPParser (llhttp) is not available in Node ${process.version}${why}; the differential check cannot run`);
    return;
  }
  const P = HTTPParser;
  const hooks = ['REQUEST', 'RESPONSE', 'kOnHeaders', 'kOnHeadersComplete', 'kOnBody', 'kOnMessageComplete', 'kOnExecute'];
  const missing = hooks.filter((k) => typeof P[k] !== 'number');
  if (missing.length) {
    t.fail(`Node's HTTPParser in Node ${process.version} lacks ${missing.join(', ')}; the differential check cannot run`);
    return;
  }
  const llhttp = (kind: Kind, buf: Buffer) => {
    const p = new P();
    p.initialize(kind === 'request' ? P.REQUEST : P.RESPONSE, {}, 0, 0);
    const msgs: { body: string; done?: boolean }[] = [];
    p[P.kOnHeadersComplete] = () => { msgs.push({ body: '' }); };
    p[P.kOnBody] = (b: Buffer) => { msgs[msgs.length - 1].body += b.toString('latin1'); };
    p[P.kOnMessageComplete] = () => { msgs[msgs.length - 1].done = true; };
    p[P.kOnHeaders] = () => {};
    p[P.kOnExecute] = () => {};
    let r = p.execute(buf);
    if (r instanceof Error) return { err: (r as Error & { code: string }).code, msgs };
    r = p.finish();
    if (r instanceof Error) return { err: (r as Error & { code: string }).code, msgs };
    return { err: null, msgs };
  };
  // The harness itself must work, or every comparison below means nothing.
  const known = llhttp('request', Buffer.from('POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1'));
  t.same(known, { err: null, msgs: [{ body: 'hello', done: true }, { body: '', done: true }] }, 'llhttp splits a known pipelined pair');
  const rnd = mulberry32(0xc0ffee);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  const interesting = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x3a, 0x3b, 0x3d, 0x22, 0x2c, 0x30, 0x39, 0x61, 0x46, 0x7f, 0x80, 0xff, 0x2f];
  const bases = FRAGMENT_SET.filter((c) => !c.expect && !c.end).map((c) => ({ kind: c.kind, bytes: Buffer.from(c.msg, 'latin1') }));
  let lessStrict = 0;
  let boundaryDiff = 0;
  let compared = 0;
  const problems: string[] = [];
  for (let it = 0; it < 4000; it++) {
    const base = pick(bases);
    const arr = Array.from(base.bytes);
    const nMut = 1 + Math.floor(rnd() * 3);
    for (let m = 0; m < nMut; m++) {
      const op = rnd();
      const at = Math.floor(rnd() * (arr.length + 1));
      const byte = rnd() < 0.6 ? pick(interesting) : Math.floor(rnd() * 256);
      if (op < 0.4 && at < arr.length) arr[at] = byte;
      else if (op < 0.7) arr.splice(at, 0, byte);
      else if (arr.length > 1) arr.splice(Math.min(at, arr.length - 1), 1);
    }
    const input = Buffer.from(arr);
    const r = make(base.kind, { limits: { maxHeaderBytes: 65536, maxHeaders: 1000 } });
    r.d.push(input);
    r.d.end();
    const ours = norm(r.events);
    if (ours.some((e) => e.ev === 'error')) continue;
    const ourHeads = heads(ours);
    const ll = llhttp(base.kind, input);
    if (ll.err) {
      const intended = (ll.err === 'HPE_INVALID_METHOD' && ourHeads.some((h) => !METHODS.includes(h.method))) ||
        ll.err === 'HPE_CLOSED_CONNECTION' ||
        (ll.err === 'HPE_INVALID_EOF_STATE' && ourHeads.some((h) => h.upgrade));
      if (!intended) {
        lessStrict++;
        if (problems.length < 5) problems.push(`llhttp ${ll.err}: ${JSON.stringify(input.toString('latin1'))}`);
      }
      continue;
    }
    compared++;
    const mine = ourHeads.map((_, i) => i).map((i) => {
      // body of message i = body events between head i and the next head
      let n = -1;
      let body = '';
      for (const e of ours) {
        if (e.ev === 'head') n++;
        else if (e.ev === 'body' && n === i) body += e.data;
      }
      return body;
    });
    const theirs = ll.msgs.map((m) => m.body);
    if (JSON.stringify(mine) !== JSON.stringify(theirs)) {
      boundaryDiff++;
      if (problems.length < 5) problems.push(`boundaries differ: ${JSON.stringify(input.toString('latin1'))}`);
    }
  }
  t.equal(lessStrict, 0, 'never accept what llhttp rejects (beyond the documented differences)');
  t.equal(boundaryDiff, 0, 'same message boundaries and bodies when both accept');
  t.ok(compared > 300, `compared ${compared} inputs both parsers accept`);
  if (problems.length) t.comment(problems.join('\n'));
});

t.test('from inside onMessageEnd: takeRemainder and bufferedBytes see the rest of the read being decoded (copied when transient)', async (t) => {
  for (const transient of [false, true]) {
    let taken = '';
    let buffered = -1;
    const d = new Http1Decoder('response', {
      onHead: () => {},
      onBody: () => {},
      onMessageEnd: () => {
        buffered = d.bufferedBytes;
        taken = d.takeRemainder().toString('latin1');
        return false;
      },
      onError: () => t.fail('no error'),
    }, LIMITS);
    d.expectResponseTo('GET');
    // the read buffer of the worker: overwritten by the next read once push returns
    const read = Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nfirst-tunnel-bytes', 'latin1');
    d.push(read, transient);
    read.fill(0x2a);
    t.equal(buffered, 'first-tunnel-bytes'.length, `${transient ? 'transient' : 'owned'}: counted as buffered`);
    t.equal(taken, 'first-tunnel-bytes', `${transient ? 'transient' : 'owned'}: taken whole, nothing left behind`);
    t.equal(d.bufferedBytes, 0);
    t.equal(d.takeRemainder().length, 0);
  }
});

// Every byte value in each place of a field line, whole and 1 byte at a time: which bytes are
// refused, with which code and message, and what an accepted value becomes (OWS trimmed, obs-text kept).
t.test('field lines: every byte in the name, the value and the OWS, accepted or refused as the grammar says', async (t) => {
  const run = (kind: Kind, msg: Buffer, split?: number) => {
    const out: { heads: Http1Head[]; errs: string[] } = { heads: [], errs: [] };
    const d = new Http1Decoder(kind, {
      onHead: (h) => { out.heads.push(h); },
      onBody: () => {},
      onMessageEnd: () => {},
      onError: (e) => { out.errs.push(`${e.code} ${e.status} ${e.message}`); },
    }, LIMITS);
    d.expectResponseTo('GET');
    const step = split ?? msg.length;
    for (let i = 0; i < msg.length; i += step) d.push(msg.subarray(i, Math.min(msg.length, i + step)));
    return out;
  };
  const tchar = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
    "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c));
  const fieldValueByte = (c: number) => c === 0x09 || c === 0x20 || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
  const starts: Record<Kind, string> = { request: 'GET / HTTP/1.1\r\nHost: a\r\n', response: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n' };
  const mk = (kind: Kind, line: number[]) => Buffer.concat([Buffer.from(starts[kind], 'latin1'), Buffer.from(line), Buffer.from('\r\n\r\n', 'latin1')]);
  const b = (s: string) => [...Buffer.from(s, 'latin1')];
  let checked = 0;
  for (const kind of ['request', 'response'] as Kind[]) {
    const errPrefix = (code: string) => `${code} ${kind === 'request' ? 400 : 502} HTTP/1 ${kind}: `;
    const bareCr = errPrefix('ERR_HTTP_BAD_LINE_ENDING') + 'bare CR (CR not followed by LF)';
    const bareLf = errPrefix('ERR_HTTP_BAD_LINE_ENDING') + 'bare LF (lines must end in CRLF)';
    for (let c = 0; c < 256; c++) {
      const x = String.fromCharCode(c);
      // in the value: between visible bytes, first after the OWS, last before CRLF
      for (const [where, line, trimmed] of [
        ['inside', b('X-V: a') .concat([c], b('b')), `a${x}b`],
        ['first', b('X-V: ').concat([c], b('b')), c === 0x09 || c === 0x20 ? 'b' : `${x}b`],
        ['last', b('X-V: a').concat([c]), c === 0x09 || c === 0x20 ? 'a' : `a${x}`],
        ['alone', b('X-V:').concat([c]), c === 0x09 || c === 0x20 ? '' : x],
      ] as [string, number[], string][]) {
        let want: string | null = null;
        if (c === 0x0d) want = bareCr;
        else if (c === 0x0a) want = bareLf;
        else if (!fieldValueByte(c)) want = errPrefix('ERR_HTTP_BAD_HEADER') + 'control character in field value';
        for (const split of [undefined, 1]) {
          const r = run(kind, mk(kind, line), split);
          const label = `${kind} value byte 0x${c.toString(16)} ${where}${split ? ' (1 byte at a time)' : ''}`;
          if (want !== null) {
            if (r.errs.length !== 1 || r.errs[0] !== want || r.heads.length !== 0) t.same(r, { heads: [], errs: [want] }, label);
          } else {
            const h = r.heads[0];
            if (r.errs.length !== 0 || !h || h.headers[h.headers.length - 2] !== 'X-V' || h.headers[h.headers.length - 1] !== trimmed) {
              t.same({ errs: r.errs, headers: h?.headers }, { errs: [], headers: [kind === 'request' ? 'Host' : 'Content-Length', kind === 'request' ? 'a' : '0', 'X-V', trimmed] }, label);
            }
          }
          checked++;
        }
      }
      // in the name: inside it, and as its first byte
      for (const [where, line] of [['inside', b('X').concat([c], b('Y: v'))], ['first', [c].concat(b('XY: v'))]] as [string, number[]][]) {
        let want: string | null = null;
        if (!tchar(c)) {
          // CR or LF first: an empty line (the end of the head) or a bare LF; inside a name: a line without a colon
          if (c === 0x0a) want = where === 'first' ? bareLf : errPrefix('ERR_HTTP_BAD_HEADER') + 'header line without colon';
          else if (c === 0x0d) want = where === 'first' ? null : errPrefix('ERR_HTTP_BAD_HEADER') + 'header line without colon';
          else if (where === 'first' && (c === 0x20 || c === 0x09)) want = errPrefix('ERR_HTTP_BAD_HEADER') + 'obsolete line folding / line starts with whitespace';
          else if (c === 0x20 || c === 0x09) want = errPrefix('ERR_HTTP_BAD_HEADER') + 'whitespace between field name and colon';
          else if (c === 0x3a) want = where === 'first' ? errPrefix('ERR_HTTP_BAD_HEADER') + 'empty field name' : null;
          else want = errPrefix('ERR_HTTP_BAD_HEADER') + 'field name is not a token';
        }
        if (c === 0x0d && where === 'first') continue;
        for (const split of [undefined, 1]) {
          const r = run(kind, mk(kind, line), split);
          const label = `${kind} name byte 0x${c.toString(16)} ${where}${split ? ' (1 byte at a time)' : ''}`;
          if (want !== null) {
            if (r.errs.length !== 1 || r.errs[0] !== want || r.heads.length !== 0) t.same(r, { heads: [], errs: [want] }, label);
          } else if (r.errs.length !== 0 || r.heads.length !== 1) {
            t.same(r.errs, [], label);
          }
          checked++;
        }
      }
    }
  }
  t.ok(checked > 4000, `${checked} field lines checked`);
  // OWS: tabs and spaces on both sides are trimmed, inner ones kept; an all-OWS value is empty
  const h = heads(decode('request', 'GET / HTTP/1.1\r\nHost: a\r\nA:\t \tx \t y\t \r\nB: \t \r\nC:\r\nD:\xe9\xff\x80\r\n\r\n').ev)[0];
  t.same(h.headers, ['Host', 'a', 'A', 'x \t y', 'B', '', 'C', '', 'D', '\xe9\xff\x80']);
});
