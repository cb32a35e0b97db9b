/**
 * Ways to get a Dubbo call past a route that denies an interface or a method, tried with
 * hand-written frames against a running Sluice. The provider reads each call the way Java Dubbo
 * 2.7's DecodeableRpcInvocation and DubboProtocol.getInvoker do (with hessian.js, independent of
 * Sluice's reader): as many arguments as ReflectUtils.DESC_PATTERN finds in the descriptor, then
 * the attachments, whose `path` overrides the service path written before the arguments; and it
 * records the service it would run and the method.
 */
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { encodeRequest, encodeResponse } from '../../src/protocols/dubbo';
import { bytes, frame, hessian, hmap, i, s } from '../protocols/dubbo/fixtures';
import { startSluice, type RunningSluice } from '../helpers/harness';

const PUBLIC = 'com.example.PublicService';
const ADMIN = 'com.example.AdminService';

const IDENT = '[_$a-zA-Z][_$a-zA-Z0-9]*';
const CLASS_DESC = `L${IDENT}(?:\\/${IDENT})*;`;
/** ReflectUtils.DESC_PATTERN, used with find(): what does not match is skipped. */
const DESC_PATTERN = new RegExp(`[VZBCDFIJS]|${CLASS_DESC}|\\[+(?:[VZBCDFIJS]|${CLASS_DESC})`, 'g');

/** What the provider was asked to run: `<service>#<method>`. */
const ran: string[] = [];
const provider = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('error', () => sock.destroy());
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
      const f = buf.subarray(0, 16 + buf.readUInt32BE(12));
      buf = buf.subarray(f.length);
      if ((f[2] & 0x20) !== 0) continue; // events: heartbeats are Sluice's business here
      const dec = new hessian.DecoderV2(f.subarray(16));
      dec.read(); // dubbo version
      let path = dec.read() as string;
      dec.read(); // version
      const method = dec.read() as string;
      const desc = String(dec.read());
      for (let n = desc.match(DESC_PATTERN)?.length ?? 0; n > 0; n--) dec.read();
      const attachments = dec.read() as Record<string, unknown> | null;
      if (attachments && typeof attachments.path === 'string') path = attachments.path;
      ran.push(`${path}#${method}`);
      sock.write(encodeResponse({ id: f.readBigUInt64BE(4), value: 'ok' }));
    }
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

t.test('arguments are counted as Java counts them, so the attachments are the ones the provider reads', async (t) => {
  // Java finds `I` and `Ljava/util/Map;` in this descriptor and reads two arguments; counted as one
  // class name, the second argument (a map saying path=PUBLIC) would pass for the attachments,
  // while the provider reads the map behind it, which says path=ADMIN
  const body = bytes(s('2.0.2'), s(PUBLIC), s('0.0.0'), s('get'), s('Lx.I.Ljava/util/Map;'),
    i(0), hmap([['path', PUBLIC]]), hmap([['path', ADMIN]]));
  await notRun(t, 'a descriptor Java reads otherwise', frame(0xc2, 0, nextId++, body), /parameter types descriptor/);
});
