/**
 * The HTTP/2 connection codec on its own: a client and a server instance
 * wired back to back (no sockets), so flow control, stream ends, resets and
 * GOAWAY can be driven frame by frame and checked exactly.
 */
import t from 'tap';
import { FrameType, H2Error } from '../../../src/protocols/http2/frames';
import { Http2Connection, type Http2ConnectionHost, type Http2Options, type Http2Stream, type Http2StreamHandler } from '../../../src/protocols/http2/http2-connection';

const OPTS: Http2Options = { maxConcurrentStreams: 10, initialWindow: 65_535, connectionWindow: 65_535, maxHeaderListSize: 16_384, maxHeaderCount: 100 };

interface Events { list: string[]; data: Map<number, number>; trailers: Map<number, string[]> }

function recorder(ev: Events): Http2StreamHandler {
  return {
    onResponse(s, f, status, end) { ev.list.push(`response ${s.id} ${status}${end ? ' end' : ''}`); },
    onData(s, d, end) { ev.data.set(s.id, (ev.data.get(s.id) ?? 0) + d.length); if (end) ev.list.push(`end ${s.id}`); },
    onTrailers(s, f) { ev.trailers.set(s.id, f); ev.list.push(`trailers ${s.id}`); },
    onReset(s, code, remote) { ev.list.push(`reset ${s.id} ${code}${remote ? ' remote' : ''}`); },
    onWritable(s) { ev.list.push(`writable ${s.id}`); },
    onClose(s) { ev.list.push(`close ${s.id}`); },
  };
}

/**
 * A client and a server whose writes go to each other when `pump()` runs.
 * The server consumes nothing by itself: tests call `consumed` to open windows.
 */
function pair(serverOpts: Partial<Http2Options> = {}, clientOpts: Partial<Http2Options> = {}) {
  const toServer: Buffer[] = [];
  const toClient: Buffer[] = [];
  const serverEv: Events = { list: [], data: new Map(), trailers: new Map() };
  const clientEv: Events = { list: [], data: new Map(), trailers: new Map() };
  const ended: string[] = [];
  const serverStreams: Http2Stream[] = [];
  const serverHost: Http2ConnectionHost = {
    write(b) { toClient.push(b); return true; },
    writeMany(l) { toClient.push(...l); return true; },
    onStream(s) { s.handler = recorder(serverEv); serverStreams.push(s); serverEv.list.push(`stream ${s.id} ${s.method} ${s.path}`); },
    onEnd(code, reason) { ended.push(`server ${code} ${reason}`); },
    onGoaway(last, code) { serverEv.list.push(`goaway ${last} ${code}`); },
    onIdle() {},
    onProtocolError(code, reason, stream) { serverEv.list.push(`protocol-error ${code}${stream ? ' stream' : ''}`); },
  };
  const clientHost: Http2ConnectionHost = {
    write(b) { toServer.push(b); return true; },
    writeMany(l) { toServer.push(...l); return true; },
    onStream() { throw new Error('no server push'); },
    onEnd(code, reason) { ended.push(`client ${code} ${reason}`); },
    onGoaway(last, code) { clientEv.list.push(`goaway ${last} ${code}`); },
    onIdle() {},
    onProtocolError(code, reason, stream) { clientEv.list.push(`protocol-error ${code}${stream ? ' stream' : ''}`); },
  };
  const server = new Http2Connection(true, serverHost, { ...OPTS, ...serverOpts });
  const client = new Http2Connection(false, clientHost, { ...OPTS, ...clientOpts });
  const pump = (): void => {
    for (let i = 0; i < 50; i++) {
      server.flush();
      client.flush();
      if (toServer.length === 0 && toClient.length === 0) return;
      while (toServer.length) server.receive(toServer.shift()!);
      while (toClient.length) client.receive(toClient.shift()!);
    }
    throw new Error('connections did not settle');
  };
  return { server, client, serverEv, clientEv, ended, serverStreams, pump, toServer, toClient };
}

const GET = [':method', 'GET', ':scheme', 'http', ':path', '/x', ':authority', 'a.local'];
const POST = [':method', 'POST', ':scheme', 'http', ':path', '/up', ':authority', 'a.local'];

t.test('a request and a response with a body and trailers', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  const s = p.client.request(GET, true, recorder(cev), null)!;
  p.pump();
  t.same(p.serverEv.list, ['stream 1 GET /x']);
  const ss = p.serverStreams[0];
  t.equal(ss.authority, 'a.local');
  p.server.respond(ss, [':status', '200', 'content-type', 'text/plain'], false);
  t.ok(p.server.writeData(ss, Buffer.from('hello'), false));
  p.server.writeTrailers(ss, ['grpc-status', '0']);
  p.pump();
  t.same(cev.list, ['response 1 200', 'trailers 1', 'close 1']);
  t.equal(cev.data.get(1), 5);
  t.same(cev.trailers.get(1), ['grpc-status', '0']);
  t.same(p.serverEv.list, ['stream 1 GET /x', 'close 1'], 'the server stream closed cleanly');
  t.equal(p.server.active, 0);
  t.equal(p.client.active, 0);
  t.ok(s.closed);
});

t.test('send windows: data waits for WINDOW_UPDATE, trailers wait behind it, the writer hears when to go on', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  const s = p.client.request(POST, false, recorder(cev), null)!;
  p.pump();
  const ss = p.serverStreams[0];
  const big = Buffer.alloc(100_000, 1);
  t.notOk(p.client.writeData(s, big, false), 'more than the 65,535-byte window: the writer must wait');
  p.client.writeTrailers(s, ['x-sum', '100000']);
  p.pump();
  t.equal(p.serverEv.data.get(1), 65_535, 'exactly one window arrived');
  t.notOk(p.serverEv.list.includes('trailers 1'), 'trailers wait behind the data');
  p.server.consumed(ss, 65_535);
  p.pump();
  t.equal(p.serverEv.data.get(1), 100_000, 'the rest after the window opened');
  t.ok(p.serverEv.list.includes('trailers 1'), 'then the trailers');
  t.ok(cev.list.includes('writable 1'), 'the writer was told it may write again');
});

t.test('a receiver that does not consume holds the sender to its window; a peer that ignores it gets FLOW_CONTROL_ERROR', async (t) => {
  const p = pair();
  const s = p.client.request(POST, false, recorder({ list: [], data: new Map(), trailers: new Map() }), null)!;
  p.pump();
  // a misbehaving sender: forge the stream window so the client sends past the server's window
  s.sendWindow = 1 << 20;
  (p.client as unknown as { sendWindow: number }).sendWindow = 1 << 20;
  p.client.writeData(s, Buffer.alloc(70_000), false);
  p.pump();
  // the connection window (65,535 too) is exceeded first: a connection error
  t.ok(p.ended.some((e) => e.startsWith(`server ${H2Error.FLOW_CONTROL_ERROR} `)), `FLOW_CONTROL_ERROR: ${p.ended}`);
  t.ok(p.serverEv.list.includes(`reset 1 ${H2Error.FLOW_CONTROL_ERROR}`), `the stream's owner heard: ${p.serverEv.list}`);
});

t.test('GOAWAY: streams past the last id are refused (safe to retry), earlier ones finish', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  p.client.request(GET, true, recorder(cev), null);
  p.pump();
  p.server.shutdown();
  // the client opens another before it sees the GOAWAY
  p.client.request(GET, true, recorder(cev), null);
  p.pump();
  t.ok(cev.list.includes(`reset 3 ${H2Error.REFUSED_STREAM} remote`), `stream 3 refused: ${cev.list}`);
  t.same(p.serverEv.list, ['stream 1 GET /x'], 'the server never saw stream 3');
  t.equal(p.client.request(GET, true, recorder(cev), null), null, 'no new streams after GOAWAY');
  const ss = p.serverStreams[0];
  p.server.respond(ss, [':status', '204'], true);
  p.pump();
  t.ok(cev.list.includes('response 1 204 end'), 'stream 1 finished');
  t.ok(p.ended.includes('server 0 drained'), 'the server ended once its last stream was done');
});

t.test('stopStream: a response sent before the request ended resets the rest with NO_ERROR', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  const s = p.client.request(POST, false, recorder(cev), null)!;
  p.pump();
  const ss = p.serverStreams[0];
  p.server.respond(ss, [':status', '413', 'content-length', '0'], true);
  p.server.stopStream(ss);
  p.pump();
  t.ok(cev.list.includes('response 1 413 end'));
  t.ok(cev.list.includes(`reset 1 ${H2Error.NO_ERROR} remote`), `${cev.list}`);
  t.ok(s.closed);
  t.equal(p.server.active, 0);
});

t.test('RST_STREAM(NO_ERROR) after every byte content-length promised completes a response; before, it is a reset', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  p.client.request(GET, true, recorder(cev), null);
  p.client.request(GET, true, recorder(cev), null);
  p.pump();
  const [a, b] = p.serverStreams;
  p.server.respond(a, [':status', '200', 'content-length', '4'], false);
  p.server.writeData(a, Buffer.from('full'), false);
  p.server.reset(a, H2Error.NO_ERROR);
  p.server.respond(b, [':status', '200', 'content-length', '4'], false);
  p.server.writeData(b, Buffer.from('ha'), false);
  p.server.reset(b, H2Error.NO_ERROR);
  p.pump();
  t.ok(cev.list.includes('end 1') && cev.list.includes('close 1'), `complete: ${cev.list}`);
  t.ok(cev.list.includes(`reset 3 ${H2Error.NO_ERROR} remote`), 'short: a reset');
});

t.test('content-length must match the DATA that came', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  p.client.request(GET, true, recorder(cev), null);
  p.pump();
  p.server.respond(p.serverStreams[0], [':status', '200', 'content-length', '10'], false);
  p.server.writeData(p.serverStreams[0], Buffer.from('short'), true);
  p.pump();
  t.ok(cev.list.includes(`reset 1 ${H2Error.PROTOCOL_ERROR}`), `${cev.list}`);
  t.notOk(cev.list.includes('end 1'), 'never seen as complete');
});

t.test('a lower INITIAL_WINDOW_SIZE from the peer shrinks open streams\' windows (they may go negative)', async (t) => {
  const p = pair();
  const s = p.client.request(POST, false, recorder({ list: [], data: new Map(), trailers: new Map() }), null)!;
  p.pump();
  p.client.writeData(s, Buffer.alloc(60_000), false);
  p.pump();
  // server lowers its window to 1,000: 60,000 already in flight leaves the stream at -59,000 + ...
  const settings = Buffer.from([0, 0, 6, FrameType.SETTINGS, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0x03, 0xe8]);
  p.client.receive(settings);
  t.equal(s.sendWindow, 1_000 - 60_000);
  t.notOk(p.client.writeData(s, Buffer.alloc(10), false), 'nothing may be sent');
});

t.test('connection errors: bad frames end the connection with GOAWAY and the right code', async (t) => {
  const cases: Array<[string, Buffer, number]> = [
    ['PING length 7', Buffer.from([0, 0, 7, FrameType.PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]), H2Error.FRAME_SIZE_ERROR],
    ['DATA on stream 0', Buffer.from([0, 0, 1, FrameType.DATA, 0, 0, 0, 0, 0, 9]), H2Error.PROTOCOL_ERROR],
    ['WINDOW_UPDATE 0', Buffer.from([0, 0, 4, FrameType.WINDOW_UPDATE, 0, 0, 0, 0, 0, 0, 0, 0, 0]), H2Error.PROTOCOL_ERROR],
    ['PUSH_PROMISE', Buffer.from([0, 0, 4, FrameType.PUSH_PROMISE, 4, 0, 0, 0, 1, 0, 0, 0, 2]), H2Error.PROTOCOL_ERROR],
    ['HPACK index 0', Buffer.from([0, 0, 1, FrameType.HEADERS, 5, 0, 0, 0, 1, 0x80]), H2Error.COMPRESSION_ERROR],
  ];
  for (const [what, frame, code] of cases) {
    const p = pair();
    p.pump();
    p.server.receive(frame);
    t.ok(p.ended.some((e) => e.startsWith(`server ${code} `)), `${what}: ${p.ended}`);
    t.ok(p.server.closed);
  }
});

t.test('a response status outside 100-599 is malformed', async (t) => {
  const p = pair();
  const cev: Events = { list: [], data: new Map(), trailers: new Map() };
  p.client.request(GET, true, recorder(cev), null);
  p.pump();
  p.server.respond(p.serverStreams[0], [':status', '600'], true);
  p.pump();
  t.same(cev.list, [`reset 1 ${H2Error.PROTOCOL_ERROR}`], 'the stream is reset, never seen as a response');
  t.ok(p.clientEv.list.includes(`protocol-error ${H2Error.PROTOCOL_ERROR} stream`), 'and counted as a protocol error');
});

t.test('a header block cut off by a bound leaves nothing pending for the header timer', async (t) => {
  const p = pair();
  p.pump();
  const cont = Buffer.from([0, 0, 1, FrameType.CONTINUATION, 0, 0, 0, 0, 1, 0x00]);
  p.server.receive(Buffer.from([0, 0, 1, FrameType.HEADERS, 1, 0, 0, 0, 1, 0x82]));
  t.ok(p.server.headersPendingSince > 0, 'HEADERS without END_HEADERS: a header block is pending');
  p.server.receive(Buffer.concat(Array.from({ length: 600 }, () => cont)));
  t.ok(p.ended.some((e) => e.startsWith(`server ${H2Error.ENHANCE_YOUR_CALM} `)), `600 CONTINUATION frames: ENHANCE_YOUR_CALM (${p.ended})`);
  t.equal(p.server.headersPendingSince, 0, 'nothing pending once the connection ended');
});
