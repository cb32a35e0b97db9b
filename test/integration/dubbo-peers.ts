/**
 * Dubbo peers for integration tests: a consumer built on dubbo-remoting (an independent Hessian2
 * implementation), and a provider on raw sockets that can misbehave on purpose on one connection
 * (stop reading in the middle of a frame, or read and never answer) while its other connections
 * work. Bodies are read and written by dubbo-remoting; only the framing is done here, so the
 * provider can stop at any byte.
 */
import { EventEmitter, once } from 'node:events';
import net, { type AddressInfo } from 'node:net';

// eslint-disable-next-line @typescript-eslint/no-var-requires
export const remoting: any = require('dubbo-remoting');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const protocol: any = require('dubbo-remoting/lib/protocol');

export const SERVICE = 'com.example.TransferService';
export const str = (s: string) => ({ $class: 'java.lang.String', $: s });

export interface Answer {
  status: number;
  value?: unknown;
  error?: string;
  /** The response's attachments, when it carries them (consumers of dubbo version 2.0.2 .. 2.0.99). */
  props?: Record<string, string>;
}

/**
 * A Dubbo consumer: dubbo-remoting's encoder and decoder over one socket. It reads each response's
 * status byte from the raw stream (dubbo-remoting drops it), answers the provider side's heartbeats
 * when `answerHeartbeats`, and records, in order, the READONLY event ("R"), answers and the close.
 */
export class Consumer {
  private readonly waiting = new Map<number, (a: Answer) => void>();
  private readonly statuses = new Map<number, number>();
  private nextId = 1000;
  private raw: Buffer = Buffer.alloc(0);
  private readonly enc = remoting.encoder({});
  private readonly dec = remoting.decoder({});
  /** 'readonly', 'answer <id>', 'heartbeat', 'close', in the order they happened. */
  readonly log: string[] = [];
  readonly events = new EventEmitter();
  readonly: boolean = false;
  closed = false;

  constructor(readonly sock: net.Socket, private readonly answerHeartbeats: boolean) {
    this.enc.pipe(sock);
    sock.on('data', (d: Buffer) => this.tap(d));
    sock.pipe(this.dec);
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      this.log.push('close');
      for (const [, cb] of this.waiting) cb({ status: -1, error: 'connection closed' });
      this.waiting.clear();
      this.events.emit('close');
    });
    this.dec.on('response', (r: any) => {
      const cb = this.waiting.get(r.packetId);
      if (!cb) return;
      this.waiting.delete(r.packetId);
      const status = this.statuses.get(r.packetId) ?? -1;
      this.statuses.delete(r.packetId);
      this.log.push(`answer ${r.packetId}`);
      cb(r.data.error ? { status, error: String(r.data.error.message ?? r.data.error) } : { status, value: r.data.appResponse, ...(r.data.responseProps ? { props: r.data.responseProps } : {}) });
    });
    // dubbo-remoting reports every event request as 'heartbeat'; its data tells them apart
    this.dec.on('heartbeat', (hb: any) => {
      if (hb.data === 'R') {
        // what Dubbo's HeaderExchangeHandler does: the channel is read-only, no new calls on it
        this.readonly = true;
        this.log.push('readonly');
        this.events.emit('readonly');
        return;
      }
      this.log.push('heartbeat');
      if (this.answerHeartbeats) this.enc.writeHeartbeatAck(hb);
    });
  }

  static async connect(port: number, opts: { answerHeartbeats?: boolean; from?: string } = {}): Promise<Consumer> {
    const sock = net.connect({ port, host: '127.0.0.1', ...(opts.from !== undefined ? { localAddress: opts.from } : {}) });
    await once(sock, 'connect');
    return new Consumer(sock, opts.answerHeartbeats ?? true);
  }

  private tap(d: Buffer): void {
    this.raw = this.raw.length ? Buffer.concat([this.raw, d]) : d;
    while (this.raw.length >= 16) {
      const len = 16 + this.raw.readUInt32BE(12);
      if (this.raw.length < len) break;
      if ((this.raw[2] & 0x80) === 0) this.statuses.set(this.raw.readUInt32BE(8), this.raw[3]);
      this.raw = this.raw.subarray(len);
    }
  }

  /**
   * A call; a consumer-side timeout answers status -2 (nothing came back in `timeoutMs`).
   * `signature`: the service and its version (`com.example.TransferService:1.0.0` unless given;
   * without `:version` the call names no version).
   */
  call(method: string, args: unknown[], props: Record<string, string> = {}, timeoutMs = 20_000, signature = `${SERVICE}:1.0.0`): Promise<Answer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiting.delete(id); resolve({ status: -2, error: 'consumer timeout' }); }, timeoutMs);
      this.waiting.set(id, (a) => { clearTimeout(timer); resolve(a); });
      this.enc.writeRequest(id, { serverSignature: signature, methodName: method, args, requestProps: props, timeout: timeoutMs });
    });
  }

  /** Writes bytes of its own (a frame dubbo-remoting would not write) and waits for the answer to `id`. */
  callRaw(frame: Buffer, id: number, timeoutMs = 20_000): Promise<Answer> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiting.delete(id); resolve({ status: -2, error: 'consumer timeout' }); }, timeoutMs);
      this.waiting.set(id, (a) => { clearTimeout(timer); resolve(a); });
      this.sock.write(frame);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

export interface ProviderConn {
  /** 0 for the first connection accepted, 1 for the next, ... */
  readonly index: number;
  readonly sock: net.Socket;
  /** Methods of the calls read, in order. */
  readonly calls: string[];
  heartbeats: number;
  /** Stopped reading (stallOn matched a frame header). */
  stalled: boolean;
  closed: boolean;
}

export interface ProviderOptions {
  /** Stop reading this connection for good when a frame header matches (body length, connection). */
  stallOn?: (bodyLength: number, conn: ProviderConn) => boolean;
  /** Read such calls but never answer them (heartbeats are still answered). */
  silentOn?: (conn: ProviderConn, method: string) => boolean;
  /** Hold a call (answer it later with the function given) instead of answering at once. */
  holdMethod?: string;
}

export interface Provider {
  port: number;
  conns: ProviderConn[];
  /** 'connection', 'stalled', 'call', 'heartbeat', 'close' (each with the ProviderConn). */
  events: EventEmitter;
  /** Answers every held call. */
  release(): void;
  held(): number;
  close(): Promise<void>;
}

/**
 * A provider on raw sockets: splits frames itself, decodes and encodes bodies with dubbo-remoting, and
 * answers each call with "<connection index>:<method>:<first argument>".
 */
export async function rawProvider(opts: ProviderOptions = {}): Promise<Provider> {
  const events = new EventEmitter();
  const conns: ProviderConn[] = [];
  const held: Array<() => void> = [];
  const server = net.createServer((sock) => {
    const conn: ProviderConn = { index: conns.length, sock, calls: [], heartbeats: 0, stalled: false, closed: false };
    conns.push(conn);
    events.emit('connection', conn);
    const enc = remoting.encoder({});
    enc.pipe(sock);
    let buf: Buffer = Buffer.alloc(0);
    sock.on('error', () => sock.destroy());
    sock.on('close', () => { conn.closed = true; events.emit('close', conn); });
    sock.on('data', (d: Buffer) => {
      if (conn.stalled) return;
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 16) {
        const bodyLength = buf.readUInt32BE(12);
        if (opts.stallOn?.(bodyLength, conn)) {
          // stop reading for good, in the middle of the frame: the kernel buffers fill, then the proxy's
          conn.stalled = true;
          sock.pause();
          sock.removeAllListeners('data');
          events.emit('stalled', conn);
          return;
        }
        if (buf.length < 16 + bodyLength) break;
        const frame = buf.subarray(0, 16 + bodyLength);
        buf = buf.subarray(16 + bodyLength);
        const msg = protocol.decode(frame, {});
        if (msg.packetType === 'heartbeat') {
          conn.heartbeats++;
          if ((frame[2] & 0x40) !== 0) enc.writeHeartbeatAck(msg);
          events.emit('heartbeat', conn);
          continue;
        }
        if (msg.packetType !== 'request') continue;
        const method: string = msg.data.methodName;
        conn.calls.push(method);
        events.emit('call', conn, method);
        if ((frame[2] & 0x40) === 0 || opts.silentOn?.(conn, method)) continue;
        const answer = () => enc.writeResponse(msg, { appResponse: str(`${conn.index}:${method}:${String(msg.data.args[0])}`), isError: false });
        if (method === opts.holdMethod) held.push(answer);
        else answer();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    conns,
    events,
    release: () => { for (const a of held.splice(0)) a(); },
    held: () => held.length,
    close: () => new Promise<void>((r) => { for (const c of conns) c.sock.destroy(); server.close(() => r()); }),
  };
}

/** Resolves when `emitter` emits `event` with arguments that pass `pred`; fails after `ms`. */
export function waitEvent<T extends unknown[]>(emitter: EventEmitter, event: string, ms: number, pred: (...args: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { emitter.off(event, on); reject(new Error(`timed out after ${ms} ms waiting for '${event}'`)); }, ms);
    const on = (...args: T) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(args);
    };
    emitter.on(event, on);
  });
}
