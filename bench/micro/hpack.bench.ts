/**
 * Question: what does HPACK cost per header block on the proxy's hot path, and does the
 * table-driven Huffman decoder pay for itself against the bit-at-a-time tree walk (the old way)?
 *
 *   node dist/bench/micro/hpack.bench.js [--quick]
 *
 * Blocks (each checked to decode to its list before timing):
 *   - h2load request, steady state: the second and later requests of an h2load connection, every
 *     field a dynamic or static table hit (nghttp2 indexes them all on the first request)
 *   - curl request, steady state: the same for curl's six fields
 *   - proxied request, Huffman literals: a request whose variable fields (long :path, x-request-id,
 *     traceparent, content-length) come as Huffman-coded literals without indexing, the rest indexed
 *   - first request of a connection: Huffman literals with incremental indexing into a fresh
 *     decoder (the decoder's construction included)
 * Encoding: a typical proxied request (ten fields, x-request-id changing) on a warm encoder, and the
 * same request on a fresh encoder. Huffman alone: one set of strings through our byte-table
 * decoder and through a bit-at-a-time walk of the code tree built from the same table.
 * Each task call handles BATCH blocks; the table reports ns per block, wall clock and CPU time.
 */
import os from 'node:os';
import { Bench } from 'tinybench';
import { HpackDecoder, HpackEncoder } from '../../src/protocols/http2/hpack';
import { EOS, HUFFMAN_CODES, HUFFMAN_LENGTHS, huffmanDecode, huffmanEncode } from '../../src/protocols/http2/huffman';
import { commit, cpuNow } from '../lib/run-info';

const BATCH = 100;

// ---- blocks ---------------------------------------------------------------------------------------

function int(flags: number, prefixBits: number, value: number): number[] {
  const max = 2 ** prefixBits - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
  return out;
}
const huff = (s: string): number[] => { const h = huffmanEncode(s); return [...int(0x80, 7, h.length), ...h]; };
/** Literal with a static name index, Huffman value; `indexing`: 01 (incremental) or 0000 (without). */
const lit = (nameIdx: number, value: string, indexing: boolean) =>
  indexing ? [...int(0x40, 6, nameIdx), ...huff(value)] : [...int(0x00, 4, nameIdx), ...huff(value)];
const litName = (name: string, value: string, indexing: boolean) => [indexing ? 0x40 : 0x00, ...huff(name), ...huff(value)];

const H2LOAD = [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', '127.0.0.1:8080', 'user-agent', 'h2load nghttp2/1.59.0'];
const CURL = [':method', 'GET', ':scheme', 'http', ':authority', 'orders.default.svc.cluster.local', ':path', '/api/v1/orders/12345',
  'user-agent', 'curl/8.5.0', 'accept', '*/*'];

/** First block as nghttp2 writes it (Huffman, incremental indexing) and a steady-state block. */
function firstAndSteady(list: string[]): [Buffer, Buffer] {
  const first: number[] = [];
  const e = new HpackEncoder();
  for (let i = 0; i < list.length; i += 2) {
    const one = e.encode([list[i], list[i + 1]]);
    // our encoder writes raw strings; rewrite literal fields with Huffman strings, as nghttp2 does
    if (one[0] & 0x80) { first.push(...one); continue; }
    const staticIdx: Record<string, number> = { ':authority': 1, ':path': 4, 'user-agent': 58, accept: 19 };
    const idx = staticIdx[list[i]];
    first.push(...(idx ? lit(idx, list[i + 1], true) : litName(list[i], list[i + 1], true)));
  }
  const steady = e.encode(list);
  return [Buffer.from(first), steady];
}

const [H2LOAD_FIRST, H2LOAD_STEADY] = firstAndSteady(H2LOAD);
const [CURL_FIRST, CURL_STEADY] = firstAndSteady(CURL);

const PROXIED_PATH = '/api/v1/orders/12345?expand=items&page=3&size=50&sort=created%2Cdesc';
const REQUEST_ID = '7f3c9a2e-1b4d-4c1a-9d2e-0a1b2c3d4e5f';
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
/** Indexed hits for the stable fields (after CURL_FIRST), Huffman literals for the variable ones. */
const HUFFMAN_LITERALS = Buffer.from([
  0x82, 0x86, ...int(0x80, 7, 62 + 3), // :method GET, :scheme http, :authority (dynamic)
  ...int(0x00, 4, 4), ...huff(PROXIED_PATH), // :path, without indexing
  ...int(0x80, 7, 62 + 1), ...int(0x80, 7, 62 + 0), // user-agent, accept (dynamic)
  ...litName('x-request-id', REQUEST_ID, false),
  ...litName('traceparent', TRACEPARENT, false),
  ...int(0x00, 4, 28), ...huff('1024'), // content-length
  ...litName('type', 'transfer', false),
]);
const HUFFMAN_LITERALS_LIST = [':method', 'GET', ':scheme', 'http', ':authority', 'orders.default.svc.cluster.local', ':path', PROXIED_PATH,
  'user-agent', 'curl/8.5.0', 'accept', '*/*', 'x-request-id', REQUEST_ID, 'traceparent', TRACEPARENT, 'content-length', '1024', 'type', 'transfer'];

/** Proxied requests to encode: ten fields, x-request-id different each time. */
const ENCODE_LISTS = Array.from({ length: 16 }, (_, k) => [
  ':method', 'POST', ':scheme', 'http', ':authority', 'orders.default.svc.cluster.local', ':path', '/pay/transfer',
  'content-type', 'application/json', 'user-agent', 'grpc-java-netty/1.60.0', 'x-request-id', `${k.toString(16).padStart(8, '0')}-1b4d-4c1a-9d2e-0a1b2c3d4e5f`,
  'type', 'transfer', 'accept-encoding', 'gzip, deflate', 'content-length', String(100 + k),
]);

// ---- baseline: bit-at-a-time Huffman tree walk -----------------------------------------------------

const TREE = (() => {
  // child[node * 2 + bit]: > 0 a node, < 0 the leaf of symbol -(v + 1)
  const child = new Int32Array(1024);
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    let node = 0;
    for (let i = HUFFMAN_LENGTHS[sym] - 1; i >= 0; i--) {
      const slot = node * 2 + ((HUFFMAN_CODES[sym] >>> i) & 1);
      if (i === 0) child[slot] = -(sym + 1);
      else node = child[slot] > 0 ? child[slot] : (child[slot] = nodes++);
    }
  }
  return child;
})();
const treeOut = Buffer.alloc(8192);

function treeWalkDecode(src: Uint8Array, start: number, end: number): string | null {
  let node = 0;
  let n = 0;
  let depth = 0;
  let ones = true;
  for (let i = start; i < end; i++) {
    const b = src[i];
    for (let bit = 7; bit >= 0; bit--) {
      const v = (b >>> bit) & 1;
      const c = TREE[node * 2 + v];
      depth++;
      ones &&= v === 1;
      if (c < 0) {
        if (c === -(EOS + 1)) return null;
        treeOut[n++] = -c - 1;
        node = 0;
        depth = 0;
        ones = true;
      } else {
        node = c;
      }
    }
  }
  if (depth > 7 || !ones) return null;
  return treeOut.toString('latin1', 0, n);
}

const HUFF_STRINGS = ['orders.default.svc.cluster.local', PROXIED_PATH, REQUEST_ID, TRACEPARENT, 'curl/8.5.0', 'application/json', 'Mon, 21 Oct 2013 20:13:21 GMT']
  .map((s) => [s, huffmanEncode(s)] as const);

// ---- run ---------------------------------------------------------------------------------------------

let sink = 0;

function steadyDecoder(first: Buffer): HpackDecoder {
  const d = new HpackDecoder();
  d.decode(first);
  return d;
}

function tasks(): Array<[string, () => void]> {
  const h2load = steadyDecoder(H2LOAD_FIRST);
  const curl = steadyDecoder(CURL_FIRST);
  const lits = steadyDecoder(CURL_FIRST);
  const warm = new HpackEncoder();
  for (const l of ENCODE_LISTS) warm.encode(l);
  let k = 0;
  return [
    [`decode: h2load request, steady (${H2LOAD_STEADY.length} B)`, () => { sink += h2load.decode(H2LOAD_STEADY)!.length; }],
    [`decode: curl request, steady (${CURL_STEADY.length} B)`, () => { sink += curl.decode(CURL_STEADY)!.length; }],
    [`decode: Huffman literals (${HUFFMAN_LITERALS.length} B)`, () => { sink += lits.decode(HUFFMAN_LITERALS)!.length; }],
    [`decode: curl first request, new decoder (${CURL_FIRST.length} B)`, () => { sink += new HpackDecoder().decode(CURL_FIRST)!.length; }],
    ['encode: proxied request, warm encoder', () => { sink += warm.encode(ENCODE_LISTS[k++ & 15]).length; }],
    ['encode: proxied request, new encoder', () => { sink += new HpackEncoder().encode(ENCODE_LISTS[k++ & 15]).length; }],
    ['Huffman: 7 strings, byte table (ours)', () => { for (const [, b] of HUFF_STRINGS) sink += huffmanDecode(b, 0, b.length)!.length; }],
    ['Huffman: 7 strings, bit-at-a-time tree walk', () => { for (const [, b] of HUFF_STRINGS) sink += treeWalkDecode(b, 0, b.length)!.length; }],
  ];
}

function checkFixtures(): void {
  const same = (a: string[] | null, b: string[], what: string) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${what}: decodes to ${JSON.stringify(a)}`);
  };
  same(steadyDecoder(H2LOAD_FIRST).decode(H2LOAD_STEADY), H2LOAD, 'h2load steady');
  same(new HpackDecoder().decode(H2LOAD_FIRST), H2LOAD, 'h2load first');
  same(steadyDecoder(CURL_FIRST).decode(CURL_STEADY), CURL, 'curl steady');
  same(steadyDecoder(CURL_FIRST).decode(HUFFMAN_LITERALS), HUFFMAN_LITERALS_LIST, 'Huffman literals');
  if (H2LOAD_STEADY.length !== 5 || CURL_STEADY.length !== 6) throw new Error('steady blocks are not all indexed');
  for (const [s, b] of HUFF_STRINGS) {
    if (huffmanDecode(b, 0, b.length) !== s || treeWalkDecode(b, 0, b.length) !== s) throw new Error(`Huffman ${s}`);
  }
  const d = new HpackDecoder();
  const e = new HpackEncoder();
  for (const l of ENCODE_LISTS) same(d.decode(e.encode(l)), l, 'encode');
}

async function run(quick: boolean, cpuClock: boolean) {
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true, ...(cpuClock ? { now: cpuNow } : {}) });
  for (const [name, fn] of tasks()) {
    bench.add(name, () => {
      for (let i = 0; i < BATCH; i++) fn();
    });
  }
  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, ns: (r.latency.mean * 1e6) / BATCH, rme: r.latency.rme, samples: r.latency.df + 1 };
  });
}

export interface MicroResult { task: string; nsPerOp: number; cpuNsPerOp: number; opsPerSecond: number; rme: number; samples: number }

export async function main(argv: string[] = []): Promise<MicroResult[]> {
  const quick = argv.includes('--quick');
  checkFixtures();
  const wall = await run(quick, false);
  const cpu = await run(quick, true);
  const results: MicroResult[] = wall.map((w, k) => ({
    task: w.task, nsPerOp: w.ns, cpuNsPerOp: cpu[k].ns, opsPerSecond: 1e9 / w.ns, rme: w.rme, samples: w.samples,
  }));
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out('\n## micro: HPACK header blocks');
  out(`node ${process.version}  CPUs ${os.availableParallelism()}  commit ${commit()}  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  out(`batch of ${BATCH} per sample; ns per block (Huffman rows: per set of 7 strings), wall clock and CPU time`);
  out(`${'task'.padEnd(52)}${'wall ns'.padStart(10)}${'±%'.padStart(7)}${'CPU ns'.padStart(10)}${'ops/s'.padStart(14)}`);
  for (const r of results) {
    out(`${r.task.padEnd(52)}${r.nsPerOp.toFixed(0).padStart(10)}${r.rme.toFixed(1).padStart(7)}${r.cpuNsPerOp.toFixed(0).padStart(10)}${Math.round(r.opsPerSecond).toLocaleString('en-US').padStart(14)}`);
  }
  const ours = results.find((r) => r.task.startsWith('Huffman: 7 strings, byte table'));
  const walk = results.find((r) => r.task.startsWith('Huffman: 7 strings, bit-at-a-time'));
  if (ours && walk) out(`Huffman: the byte table takes ${(ours.cpuNsPerOp / walk.cpuNsPerOp).toFixed(2)}× the tree walk's CPU time`);
  if (sink === 0.5) out('');
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
