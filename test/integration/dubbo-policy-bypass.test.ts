/**
 * Ways to get a Dubbo call past a route that denies an interface or a method, tried with
 * hand-written frames against a running Sluice. The provider decodes calls with dubbo-remoting,
 * which, like Java's DecodeableRpcInvocation, lets the `path` attachment override the service
 * path written before the arguments, and records the service it would run and the method.
 */
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { encodeRequest } from '../../src/codecs/dubbo';
import { bytes, frame, hmap, s } from '../codecs/dubbo/fixtures';
import { startSluice, type RunningSluice } from '../helpers/harness';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const remoting: any = require('dubbo-remoting');

const PUBLIC = 'com.example.PublicService';
const ADMIN = 'com.example.AdminService';

/** What the provider was asked to run: `<service>#<method>`. */
const ran: string[] = [];
const provider = net.createServer((sock) => {
  const enc = remoting.encoder({});
  const dec = remoting.decoder({});
  enc.pipe(sock);
  sock.pipe(dec);
  sock.on('error', () => sock.destroy());
  dec.on('error', () => sock.destroy());
  dec.on('heartbeat', (hb: any) => enc.writeHeartbeatAck(hb));
  dec.on('request', (req: any) => {
    ran.push(`${String(req.data.serverSignature).split(':')[0]}#${req.data.methodName}`);
    enc.writeResponse(req, { appResponse: { $class: 'java.lang.String', $: 'ok' }, isError: false });
  });
});

let sluice: RunningSluice;

t.before(async () => {
  provider.listen(0, '127.0.0.1');
  await once(provider, 'listening');
  sluice = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'providers' }],
    routes: [
      { name: 'deny-admin', match: { service: ADMIN }, action: { directResponse: { status: 403, body: 'denied' } } },
      { name: 'deny-delete', match: { method: 'deleteAll' }, action: { directResponse: { status: 403, body: 'denied' } } },
    ],
    clusters: [{ name: 'providers', endpoints: [`127.0.0.1:${(provider.address() as AddressInfo).port}`] }],
  });
});

t.teardown(async () => {
  await sluice.stop();
  provider.close();
});

interface Answer { status: number; body: string }

/** Sends one call frame on a new connection and reads the response frame. */
async function call(f: Buffer): Promise<Answer> {
  const sock = net.connect(sluice.port('app'), '127.0.0.1');
  await once(sock, 'connect');
  sock.on('error', () => {});
  let buf = Buffer.alloc(0);
  const answer = new Promise<Answer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no response within 5 s')), 5000);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        clearTimeout(timer);
        resolve({ status: buf[3], body: buf.subarray(16).toString('latin1') });
      }
    });
  });
  sock.write(f);
  try {
    return await answer;
  } finally {
    sock.destroy();
  }
}

let nextId = 1n;
/** A call body with the leading strings as given (Hessian2 bytes), no arguments. */
const rawCall = (service: Buffer, method: Buffer, attachments: Array<[string, string]> = []) =>
  frame(0xc2, 0, nextId++, bytes(s('2.0.2'), service, s('0.0.0'), method, s(''), hmap(attachments)));

async function notRun(t: Test, what: string, f: Buffer, reason: RegExp): Promise<void> {
  const n = ran.length;
  const a = await call(f);
  t.equal(a.status, 40, `${what}: answered BAD_REQUEST`);
  t.match(a.body, reason, `${what}: why`);
  await new Promise((r) => setTimeout(r, 50));
  t.same(ran.slice(n), [], `${what}: the provider ran nothing`);
}

t.test('the path attachment cannot name another service than the call', async (t) => {
  const n = ran.length;
  t.equal((await call(encodeRequest({ id: 1, service: PUBLIC, method: 'get', attachments: { path: PUBLIC } }))).status, 20, 'agreeing: served');
  t.same(ran.slice(n), [`${PUBLIC}#get`]);
  await notRun(t, 'routed as the public service, run as the denied one',
    encodeRequest({ id: 2, service: PUBLIC, method: 'get', attachments: { path: ADMIN } }), /path attachment/);
  await notRun(t, 'the other way round',
    encodeRequest({ id: 3, service: ADMIN, method: 'get', attachments: { path: PUBLIC } }), /path attachment/);
});

t.test('spellings of a denied interface or method meet the route', async (t) => {
  // Hessian2 strings as Java reads them: chunked ('R' chunks, then a final one), and a two-byte
  // (overlong) UTF-8 form of 'A' (c1 81), which Java's Hessian2Input decodes to 'A' unchecked
  const chunked = (a: string, b: string) => bytes(0x52, 0, a.length, a, s(b));
  const cases: Array<[string, Buffer]> = [
    ['the interface in upper case', rawCall(s(ADMIN.toUpperCase()), s('get'))],
    ['the interface as a chunked string', rawCall(chunked('com.example.', 'AdminService'), s('get'))],
    ['an overlong UTF-8 letter in the interface', rawCall(bytes(ADMIN.length, 'com.example.', 0xc1, 0x81, 'dminService'), s('get'))],
    ['the method as a chunked string', rawCall(s(PUBLIC), chunked('delete', 'All'))],
  ];
  for (const [what, f] of cases) await notRun(t, what, f, /direct_response/);
});
