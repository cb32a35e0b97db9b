/**
 * Test fixtures for the Dubbo codec: an independent reference (hessian.js, used directly), a byte
 * assembler for Hessian2 forms hessian.js never writes, and builders of Java-shaped call bodies.
 */
export const hessian = require('hessian.js') as {
  EncoderV2: new () => { write(v: unknown): unknown; writeString(s: string): unknown; writeInt(n: number): unknown; get(): Buffer };
  DecoderV2: new (buf: Buffer) => { read(withType?: boolean): unknown; position(): number };
};

/** hessian.js encoding of a sequence of values on one encoder (class definitions and refs shared). */
export function hjs(...values: unknown[]): Buffer {
  const enc = new hessian.EncoderV2();
  for (const v of values) enc.write(v);
  return enc.get();
}

/** Concatenates bytes: numbers are bytes, strings are latin1, arrays and Buffers as they are. */
export function bytes(...parts: Array<number | string | number[] | Buffer>): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    if (typeof p === 'number') out.push(Buffer.from([p & 0xff]));
    else if (typeof p === 'string') out.push(Buffer.from(p, 'latin1'));
    else out.push(Buffer.from(p));
  }
  return Buffer.concat(out);
}

/** Hessian2 ASCII string, shortest form (as Java's Hessian2Output picks it), up to 65535 chars. */
export function s(str: string): Buffer {
  const n = str.length;
  if (n <= 31) return bytes(n, str);
  if (n <= 1023) return bytes(0x30 + (n >> 8), n & 0xff, str);
  return bytes(0x53, n >> 8, n & 0xff, str);
}

/** Hessian2 int, shortest form. */
export function i(n: number): Buffer {
  if (n >= -16 && n <= 47) return bytes(0x90 + n);
  if (n >= -2048 && n <= 2047) return bytes(0xc8 + (n >> 8), n & 0xff);
  if (n >= -262144 && n <= 262143) return bytes(0xd4 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
  const b = Buffer.alloc(5);
  b[0] = 0x49;
  b.writeInt32BE(n, 1);
  return b;
}

/** A Java HashMap<String, String> as Hessian2Output writes it. */
export function hmap(entries: Array<[string, string | null]>): Buffer {
  return bytes(0x48, ...entries.flatMap(([k, v]) => [s(k), v === null ? bytes(0x4e) : s(v)]), 0x5a);
}

/** A frame with an independently written header. */
export function frame(flag: number, status: number, id: bigint, body: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h[0] = 0xda;
  h[1] = 0xbb;
  h[2] = flag;
  h[3] = status;
  h.writeBigUInt64BE(id, 4);
  h.writeUInt32BE(body.length, 12);
  return Buffer.concat([h, body]);
}

export interface CallParts {
  dubboVersion?: string | null;
  service: string;
  version?: string | null;
  method: string;
  desc: string;
  args: unknown[];
  attachments?: Map<string, unknown> | null;
}

/** A call body written entirely by hessian.js (as dubbo-js does), on one encoder. */
export function hjsCallBody(c: CallParts): Buffer {
  const values: unknown[] = [c.dubboVersion === undefined ? '2.0.2' : c.dubboVersion, c.service,
    c.version === undefined ? '1.0.0' : c.version, c.method, c.desc, ...c.args];
  values.push(c.attachments === null ? null : { $class: 'java.util.HashMap', $: c.attachments ?? new Map() });
  return hjs(...values);
}

/** Full hessian.js decode of a call body with `nArgs` arguments: the reference the lazy view must equal. */
export function hjsDecodeCall(body: Buffer, nArgs: number) {
  const d = new hessian.DecoderV2(body);
  const dubboVersion = d.read() as string | null;
  const service = d.read() as string | null;
  const version = d.read() as string | null;
  const method = d.read() as string | null;
  const desc = d.read() as string | null;
  const args: unknown[] = [];
  for (let k = 0; k < nArgs; k++) args.push(d.read());
  const att = d.position() < body.length ? d.read() : null;
  const attachments = new Map<string, unknown>(att && typeof att === 'object' ? Object.entries(att as object) : []);
  return { dubboVersion, service, version, method, desc, args, attachments };
}

/** Deterministic PRNG (mulberry32) for split points and mutations outside fast-check. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Splits buf into chunks at random points (1..maxChunk bytes each). */
export function split(buf: Buffer, rnd: () => number, maxChunk: number): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < buf.length) {
    const n = 1 + Math.floor(rnd() * maxChunk);
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

/** A POJO in hessian.js form. */
export function pojo(cls: string, fields: Record<string, unknown>): { $class: string; $: Record<string, unknown> } {
  return { $class: cls, $: fields };
}
