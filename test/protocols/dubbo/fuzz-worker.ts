/**
 * Fuzz runs for the Dubbo codec, executed in a worker thread by dubbo-fuzz.test.ts so that the test can
 * bound them: a watchdog ends a worker that stops reporting progress (a hang), and resourceLimits end one
 * that grows its heap past the limit. Each property feeds bytes to the frame decoder and the lazy views
 * and fails on anything but DubboProtocolError (delivered through onError, or thrown by a view method).
 */
import { parentPort, workerData } from 'node:worker_threads';
import fc from 'fast-check';
import {
  DubboFrame, DubboFrameDecoder, DubboProtocolError, DubboRequest, DubboResponse, Hessian2Reader, dubboLimits,
  encodeErrorResponse, encodeHeartbeatRequest, encodeHeartbeatResponse, encodeRequest, encodeResponse, localReply,
} from '../../../src/protocols/dubbo';
import { bytes, frame, hjsCallBody, hmap, i, pojo, s } from './fixtures';

export type Suite = 'random-bytes' | 'mutated-streams' | 'mutated-bodies';
export interface FuzzJob { suite: Suite; numRuns: number; seed: number }
export interface FuzzStats {
  runs: number;
  frames: number;
  errors: Record<string, number>;
  viewCalls: number;
  viewErrors: number;
  attachmentsRead: number;
  argumentsDecoded: number;
  maxBuffered: number;
  heapUsedMb: number;
}
export type FuzzMessage =
  | { type: 'progress'; runs: number }
  | { type: 'done'; stats: FuzzStats; failure: string | null };

const stats: FuzzStats = {
  runs: 0, frames: 0, errors: {}, viewCalls: 0, viewErrors: 0, attachmentsRead: 0, argumentsDecoded: 0, maxBuffered: 0, heapUsedMb: 0,
};

const LIMITS = dubboLimits({ maxBodyBytes: 64 * 1024 });

/** Calls fn; a DubboProtocolError is counted, anything else fails the property. */
function guarded<T>(fn: () => T): T | undefined {
  stats.viewCalls++;
  try {
    return fn();
  } catch (e) {
    if (e instanceof DubboProtocolError) {
      stats.viewErrors++;
      stats.errors[e.code] = (stats.errors[e.code] ?? 0) + 1;
      return undefined;
    }
    throw e;
  }
}

function exerciseFrame(f: DubboFrame): void {
  if (f.isRequest && !f.isEvent) {
    const v = guarded(() => DubboRequest.fromFrame(f));
    if (!v) return;
    exerciseRequest(v);
  } else if (!f.isRequest) {
    const r = guarded(() => DubboResponse.fromFrame(f));
    if (!r) return;
    guarded(() => r.errorMessage());
    guarded(() => r.responseType());
    guarded(() => r.isException());
    guarded(() => r.value());
    guarded(() => r.exception());
    const err = r.scanAttachments();
    if (err !== null && !(err instanceof DubboProtocolError)) throw new Error('scanAttachments returned a non-error');
    guarded(() => r.attachment('dubbo'));
  }
}

function exerciseRequest(v: DubboRequest): void {
  void [v.service, v.version, v.method, v.paramTypes, v.dubboVersion];
  const err = v.scanAttachments(); // must return, never throw
  if (err === null) {
    stats.attachmentsRead++;
    if (v.attachments().size < 0) throw new Error('unreachable');
    void v.group; // must not throw after a clean scan
    void v.attachment('type');
  } else {
    if (!(err instanceof DubboProtocolError)) throw new Error('scanAttachments returned a non-error');
    guarded(() => v.group);
  }
  guarded(() => v.parameterTypeNames());
  guarded(() => v.argumentCount());
  if (guarded(() => v.arguments()) !== undefined) stats.argumentsDecoded++;
}

/** Pushes chunks into a fresh decoder and checks its contract; returns the frames. */
function feed(chunks: Buffer[]): DubboFrame[] {
  const frames: DubboFrame[] = [];
  let errored = false;
  const d = new DubboFrameDecoder({
    onFrame: (f) => {
      if (errored) throw new Error('frame after an error');
      if (f.raw.length !== 16 + f.bodyLength || f.raw[0] !== 0xda || f.raw[1] !== 0xbb) throw new Error('inconsistent frame');
      if (f.bodyLength > LIMITS.maxBodyBytes) throw new Error('frame over the limit');
      frames.push(f);
    },
    onError: (e) => {
      if (!(e instanceof DubboProtocolError)) throw new Error(`onError got ${String(e)}`);
      if (errored) throw new Error('second error');
      errored = true;
      stats.errors[e.code] = (stats.errors[e.code] ?? 0) + 1;
    },
  }, LIMITS);
  let pushed = 0;
  for (const c of chunks) {
    d.push(c);
    pushed += c.length;
    if (d.bufferedBytes > pushed) throw new Error('holds more than it was given');
    stats.maxBuffered = Math.max(stats.maxBuffered, d.bufferedBytes);
  }
  // frames are exact, consecutive slices of the stream
  const stream = Buffer.concat(chunks);
  let off = 0;
  for (const f of frames) {
    if (!stream.subarray(off, off + f.raw.length).equals(f.raw)) throw new Error('frame is not the next slice of the stream');
    off += f.raw.length;
  }
  stats.frames += frames.length;
  return frames;
}

function chunksOf(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  for (const n of sizes) {
    if (off >= buf.length) break;
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  if (off < buf.length) out.push(buf.subarray(off));
  return out;
}

// ---- corpus of valid frames ---------------------------------------------------------------------

const user = (n: string) => pojo('org.example.User', { name: n, age: 7, tags: ['a'], boss: null });
const BODIES: Buffer[] = [
  hjsCallBody({ service: 'org.example.Demo', method: 'hello', desc: 'Ljava/lang/String;', args: ['world'], attachments: new Map([['group', 'g'], ['type', 'transfer']]) }),
  hjsCallBody({ service: 'org.example.Demo', method: 'many', desc: 'IJDZLjava/util/Date;[B', args: [-300000, { $class: 'long', $: 2 ** 40 }, { $class: 'double', $: 1.25 }, true, new Date(1700000000000), Buffer.alloc(40, 9)], attachments: new Map([['timeout', 3000]]) }),
  hjsCallBody({ service: 'org.example.Demo', method: 'pojos', desc: 'Lorg/example/User;Lorg/example/User;Ljava/util/List;Ljava/util/Map;', args: [user('a'), user('b'), [user('c'), 'x'.repeat(40)], { k: [1, 2, { z: null }] }], attachments: new Map([['group', 'G']]) }),
  hjsCallBody({ service: 'org.example.Demo', method: 'text', desc: 'Ljava/lang/String;Ljava/lang/String;', args: ['中文😀'.repeat(20), 'y'.repeat(1100)], attachments: new Map([['u', 'é']]) }),
  bytes(s('2.0.2'), s('a.B'), 0x4e, s('m'), s('Ljava/util/List;Ljava/util/Map;'), 0x57, i(1), 0x55, s('x.L'), 0x5a, 0x5a,
    0x4d, s('java.util.TreeMap'), s('k'), 0x51, i(0), 0x5a, hmap([['group', 'g'], ['n', null]])),
  bytes(s('2.0.2'), s('a.B'), s('1'), s('m'), s('Lx/E;'), 0x43, s('x.E'), i(2), s('in'), s('v'), 0x60,
    0x43, s('x.I'), i(1), s('w'), 0x61, 0x52, 0x00, 0x02, 'ab', 0x01, 'c', 0x41, 0x00, 0x01, 7, 0x21, 8, hmap([['k', 'v']])),
];
const STREAMS: Buffer[] = [
  ...BODIES.map((b, k) => frame(0xc2, 0, BigInt(k + 1), b)),
  encodeRequest({ id: 9, service: 'svc', method: 'm', paramTypes: 'Ljava/lang/String;I', args: ['a', 1], attachments: { group: 'g' } }),
  encodeResponse({ id: 1, value: user('r'), attachments: { k: 'v' } }),
  encodeResponse({ id: 2, value: [1, 'two'], requestDubboVersion: '2.0.0' }),
  encodeResponse({ id: 3, exception: { $class: 'java.lang.RuntimeException', $: { detailMessage: 'boom' } } }),
  encodeResponse({ id: 4, value: null }),
  encodeErrorResponse(5, 70, 'failed'),
  localReply(6, 40, 'refused'),
  encodeHeartbeatRequest(7),
  encodeHeartbeatResponse(7),
];

// ---- arbitraries ----------------------------------------------------------------------------------

type Mutation =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'set'; at: number; v: number }
  | { k: 'insert'; at: number; data: Uint8Array }
  | { k: 'delete'; at: number; n: number }
  | { k: 'truncate'; at: number }
  | { k: 'dupe'; at: number; n: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x43, 0x48, 0x4d, 0x4f, 0x51, 0x52, 0x55, 0x56, 0x57, 0x58, 0x5a, 0x60, 0x70, 0x79, 0x4e)) }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ k: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('dupe' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 32 }) }),
);

function mutate(buf: Buffer, muts: Mutation[], from = 0): Buffer {
  let b = Buffer.from(buf);
  for (const m of muts) {
    const span = b.length - from;
    if (span <= 0) break;
    const at = from + (m.at % span);
    switch (m.k) {
      case 'flip': b[at] ^= 1 << m.bit; break;
      case 'set': b[at] = m.v; break;
      case 'insert': b = Buffer.concat([b.subarray(0, at), m.data, b.subarray(at)]); break;
      case 'delete': b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]); break;
      case 'truncate': b = b.subarray(0, at); break;
      case 'dupe': b = Buffer.concat([b.subarray(0, at + m.n), b.subarray(at)]); break;
    }
  }
  return b;
}

const splits = fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 12 });

function property(suite: Suite): fc.IProperty<never> {
  const tick = () => {
    stats.runs++;
    if (stats.runs % 250 === 0) parentPort!.postMessage({ type: 'progress', runs: stats.runs } satisfies FuzzMessage);
  };
  if (suite === 'random-bytes') {
    // random bytes; half of the time behind a plausible header (right magic, Hessian2, length = rest)
    return fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), fc.integer({ min: 0, max: 255 }), splits, (data, plausible, flag, sizes) => {
      tick();
      let buf = Buffer.from(data);
      if (plausible) {
        const h = Buffer.alloc(16);
        h[0] = 0xda; h[1] = 0xbb; h[2] = (flag & 0xe0) | 2; h[3] = 20;
        h.writeUInt32BE(buf.length, 12);
        buf = Buffer.concat([h, buf]);
      }
      for (const f of feed(chunksOf(buf, sizes))) exerciseFrame(f);
      // the reader and the request view straight on the bytes
      guarded(() => {
        const r = new Hessian2Reader(Buffer.from(data));
        for (let k = 0; k < 8 && !r.atEnd(); k++) r.skipValue();
      });
      const v = guarded(() => DubboRequest.fromBody(Buffer.from(data)));
      if (v) exerciseRequest(v);
    }) as unknown as fc.IProperty<never>;
  }
  if (suite === 'mutated-streams') {
    // one to three valid frames back to back, mutated anywhere (headers included), pushed in pieces
    return fc.property(fc.array(fc.integer({ min: 0, max: STREAMS.length - 1 }), { minLength: 1, maxLength: 3 }), fc.array(mutation, { maxLength: 4 }), splits, (picks, muts, sizes) => {
      tick();
      const stream = mutate(Buffer.concat(picks.map((k) => STREAMS[k])), muts);
      for (const f of feed(chunksOf(stream, sizes))) exerciseFrame(f);
    }) as unknown as fc.IProperty<never>;
  }
  // mutated bodies behind a consistent header: every frame reaches the views
  return fc.property(fc.integer({ min: 0, max: STREAMS.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 5 }), splits, (pick, muts, sizes) => {
    tick();
    const orig = STREAMS[pick];
    const body = mutate(orig.subarray(16), muts);
    const raw = Buffer.concat([orig.subarray(0, 16), body]);
    raw.writeUInt32BE(body.length, 12);
    const frames = feed(chunksOf(raw, sizes));
    if (frames.length !== 1) throw new Error(`expected the one frame back, got ${frames.length}`);
    exerciseFrame(frames[0]);
  }) as unknown as fc.IProperty<never>;
}

if (parentPort) {
  const job = workerData as FuzzJob;
  const details = fc.check(property(job.suite), { numRuns: job.numRuns, seed: job.seed, endOnFailure: true });
  stats.heapUsedMb = Math.round(process.memoryUsage().heapUsed / 2 ** 20);
  const failure = details.failed ? fc.defaultReportMessage(details) ?? 'failed' : null;
  parentPort.postMessage({ type: 'done', stats, failure } satisfies FuzzMessage);
}
