/**
 * Question: how does our strict Http1Decoder compare with Node's own llhttp parser on the requests
 * a sidecar sees most?
 *
 *   node dist/bench/micro/http1-decode.bench.js [--quick]
 *
 * Both parse the same bytes on one long-lived parser (a keep-alive connection): a 200-byte GET with
 * six headers, and a chunked POST (three chunks). Each parser turns the head into JS strings, which
 * is what a proxy needs. llhttp is reached through `_http_common.HTTPParser`, as Node's http server
 * uses it (headers handed to JS as a flat array, body as buffer slices). Each task call parses
 * BATCH messages, so timer overhead is negligible; the table reports ns per message.
 */
import { Bench } from 'tinybench';
import { Http1Decoder, type Http1Head } from '../../src/protocols/http1/http1-decoder';

const BATCH = 100;

export const GET_200 = Buffer.from(
  'GET /api/v1/orders/12345?expand=items HTTP/1.1\r\n' +
  'Host: orders.default.svc.cluster.local\r\n' +
  'User-Agent: curl/7.88.1\r\n' +
  'Accept: application/json\r\n' +
  'X-Request-Id: 7f3c9a2e-1b4d\r\n' +
  'type: transfer\r\n' +
  'Connection: keep-alive\r\n' +
  '\r\n', 'latin1');
if (GET_200.length < 190 || GET_200.length > 210) throw new Error(`GET is ${GET_200.length} bytes, meant to be about 200`);

const POST_CHUNKS = ['{"from":"acct-1","to":"ac', 'ct-2","amount":125.50,"currency"', ':"EUR"}'];
export const CHUNKED_POST = Buffer.from(
  'POST /pay/transfer HTTP/1.1\r\n' +
  'Host: api.local\r\n' +
  'Content-Type: application/json\r\n' +
  'Transfer-Encoding: chunked\r\n' +
  'type: transfer\r\n' +
  '\r\n' +
  POST_CHUNKS.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') +
  '0\r\n\r\n', 'latin1');

interface Parser { name: string; parse(buf: Buffer): void; messages(): number; bodyBytes(): number }

function ours(): Parser {
  let n = 0;
  let bodyBytes = 0;
  let last: Http1Head | null = null;
  const d = new Http1Decoder('request', {
    onHead: (h) => { last = h; },
    onBody: (b) => { bodyBytes += b.length; },
    onMessageEnd: () => { n++; },
    onError: (err) => { throw err; },
  }, { maxHeaderBytes: 65536, maxHeaders: 100 });
  return {
    name: 'Http1Decoder (ours)',
    parse: (buf) => { d.push(buf); if (!last) throw new Error('no head'); },
    messages: () => n,
    bodyBytes: () => bodyBytes,
  };
}

type LlParser = {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(b: Buffer): number | Error;
  [k: number]: unknown;
};
type LlCtor = { new(): LlParser; REQUEST: number; kOnHeaders: number; kOnHeadersComplete: number; kOnBody: number; kOnMessageComplete: number; kOnExecute: number };

function llhttp(): Parser | null {
  let P: LlCtor;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    P = require('_http_common').HTTPParser;
  } catch { return null; }
  if (!P) return null;
  const p = new P();
  // maxHeaderSize 0: Node's default (16 KiB); lenient 0: strict, like ours
  p.initialize(P.REQUEST, {}, 0, 0);
  let n = 0;
  let bodyBytes = 0;
  let headers: string[] | null = null;
  p[P.kOnHeaders] = () => {};
  // (versionMajor, versionMinor, headers, method, url, statusCode, statusMessage, upgrade, shouldKeepAlive)
  p[P.kOnHeadersComplete] = (_maj: number, _min: number, h: string[]) => { headers = h; };
  p[P.kOnBody] = (b: Buffer) => { bodyBytes += b.length; };
  p[P.kOnMessageComplete] = () => { n++; };
  p[P.kOnExecute] = () => {};
  return {
    name: 'llhttp (node _http_common)',
    parse: (buf) => {
      const r = p.execute(buf);
      if (r instanceof Error) throw r;
      if (!headers) throw new Error('no head');
    },
    messages: () => n,
    bodyBytes: () => bodyBytes,
  };
}

export interface MicroResult { task: string; nsPerMessage: number; messagesPerSecond: number; rme: number; samples: number }

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true });
  const cases: [string, Buffer][] = [['GET 200 B, 6 headers', GET_200], ['chunked POST, 3 chunks', CHUNKED_POST]];
  const checks: (() => void)[] = [];
  for (const [label, msg] of cases) {
    for (const make of [llhttp, ours]) {
      const parser = make();
      if (!parser) { process.stdout.write(`${label}: llhttp not reachable (require('_http_common') failed); skipped\n`); continue; }
      parser.parse(msg);
      if (parser.messages() !== 1) throw new Error(`${parser.name} did not parse one "${label}" message`);
      const bodyPerMessage = parser.bodyBytes();
      const start = parser.messages();
      let calls = 0;
      bench.add(`${label} | ${parser.name}`, () => {
        calls++;
        for (let i = 0; i < BATCH; i++) parser.parse(msg);
      });
      // every call parsed exactly BATCH messages: the comparison is of complete work
      checks.push(() => {
        const n = parser.messages() - start;
        if (n !== calls * BATCH) throw new Error(`${parser.name}: ${n} messages for ${calls * BATCH} pushed`);
        if (parser.bodyBytes() !== (n + 1) * bodyPerMessage) throw new Error(`${parser.name}: body bytes do not add up`);
      });
    }
  }
  await bench.run();
  for (const c of checks) c();
  const results: MicroResult[] = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return {
      task: t.name,
      nsPerMessage: (r.latency.mean * 1e6) / BATCH,
      messagesPerSecond: (BATCH * 1000) / r.latency.mean,
      rme: r.latency.rme,
      samples: r.latency.df + 1,
    };
  });
  process.stdout.write(`\n## micro: HTTP/1 request decoding (node ${process.version}, batch of ${BATCH} messages per sample)\n`);
  process.stdout.write(`${'task'.padEnd(60)}${'ns/msg'.padStart(10)}${'msg/s'.padStart(14)}${'±%'.padStart(8)}\n`);
  for (const r of results) {
    process.stdout.write(`${r.task.padEnd(60)}${r.nsPerMessage.toFixed(0).padStart(10)}${Math.round(r.messagesPerSecond).toLocaleString('en-US').padStart(14)}${r.rme.toFixed(1).padStart(8)}\n`);
  }
  for (const [label] of cases) {
    const a = results.find((r) => r.task === `${label} | llhttp (node _http_common)`);
    const b = results.find((r) => r.task === `${label} | Http1Decoder (ours)`);
    if (a && b) process.stdout.write(`${label}: ours takes ${(b.nsPerMessage / a.nsPerMessage).toFixed(2)}× llhttp's time\n`);
  }
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
