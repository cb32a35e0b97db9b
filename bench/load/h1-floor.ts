/**
 * The floor for any HTTP/1.1 proxy built as Sluice is (the main thread accepts natively and hands
 * descriptors to a worker thread, which serves them with Node sockets), beside which issue 13's
 * new-connection row and issue 11's refusal row are read. Nothing but the mechanics: no routing,
 * no filters, no stats, no header rewriting, no checks of what comes in. Only for `--node-floor`.
 *
 *   node dist/bench/load/h1-floor.js PROXY_PORT REFUSE_PORT UPSTREAM_PORT
 *
 *   main thread: the addon's listen + acceptStart on both ports ─▶ one postMessage per batch
 *   worker: new net.Socket({ fd }) reading through one buffer (onread) ─┬─ PROXY_PORT: the request's
 *      bytes to an idle keep-alive upstream connection, the response's bytes back (its end found by
 *      content-length), then the downstream socket destroyed if the request said `Connection: close`
 *                                                                        └─ REFUSE_PORT: a constant 429 per request
 *
 * The request is taken to be one read with no body (wrk's GET), the response to carry
 * content-length. A request's `Connection: close` is renamed before it goes upstream (the upstream
 * connection stays open), and the response's `Connection: keep-alive` becomes `close` (padded with
 * the spaces a field value may end with) for such a request.
 */
import net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ACCEPT_ENTRY_WORDS, loadNative } from '../../src/net/native';

interface Setup { proxyPort: number; refusePort: number; upstreamPort: number }

const REFUSAL = Buffer.from('HTTP/1.1 429 Too Many Requests\r\nretry-after: 60\r\nx-sluice-reason: rate_limited\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nrate limited\n');
const CRLF2 = Buffer.from('\r\n\r\n');
/** The hop-by-hop field a request to close carries (as wrk writes it), renamed before it goes upstream. */
const CLOSE = Buffer.from('Connection: close');
const RENAMED = Buffer.from('X-Hop-Conn');
/** What the upstream says of its keep-alive connection, turned into a close for such a request. */
const KEEP_ALIVE = Buffer.from('Connection: keep-alive');
const CLOSE_VALUE = Buffer.from('close     ');
const CONTENT_LENGTH = /\r\ncontent-length: *(\d+)/i;

function mainThread(setup: Setup): void {
  const addon = loadNative();
  if (!addon) throw new Error('h1-floor: the native addon is not built');
  const worker = new Worker(__filename, { workerData: setup });
  worker.on('error', (err) => { process.stderr.write(`h1-floor worker: ${err.stack ?? err}\n`); process.exit(1); });
  for (const [port, refuse] of [[setup.proxyPort, false], [setup.refusePort, true]] as const) {
    const fd = addon.listen('127.0.0.1', port, 16384);
    const batch = new Int32Array(64 * ACCEPT_ENTRY_WORDS);
    addon.acceptStart(fd, batch, false, (n) => {
      if (n <= 0) return;
      const fds = new Int32Array(n);
      for (let i = 0; i < n; i++) fds[i] = batch[i * ACCEPT_ENTRY_WORDS];
      worker.postMessage({ fds, refuse });
    });
  }
}

function workerThread(setup: Setup): void {
  const buffer = Buffer.allocUnsafe(64 * 1024);
  const idle: Upstream[] = [];

  class Upstream {
    readonly socket: net.Socket;
    down: net.Socket | null = null;
    closeAfter = false;
    left = -1;
    constructor() {
      const self = this;
      this.socket = net.connect({
        port: setup.upstreamPort, host: '127.0.0.1', noDelay: true,
        onread: { buffer, callback(n: number, buf: Buffer) { self.onRead(buf.subarray(0, n)); return true; } },
      } as net.NetConnectOpts);
      this.socket.on('error', () => {});
      this.socket.on('close', () => { this.down?.destroy(); const i = idle.indexOf(this); if (i >= 0) idle.splice(i, 1); });
    }

    send(down: net.Socket, request: Buffer, closeAfter: boolean): void {
      this.down = down;
      this.closeAfter = closeAfter;
      this.left = -1;
      this.socket.write(request);
    }

    private onRead(bytes: Buffer): void {
      const down = this.down;
      if (!down) return;
      if (this.left < 0) {
        const end = bytes.indexOf(CRLF2);
        const m = CONTENT_LENGTH.exec(bytes.toString('latin1', 0, end < 0 ? bytes.length : end));
        this.left = (m ? Number(m[1]) : 0) + end + 4;
      }
      this.left -= bytes.length;
      const out = Buffer.from(bytes);
      if (this.closeAfter) {
        const k = out.indexOf(KEEP_ALIVE);
        if (k >= 0) CLOSE_VALUE.copy(out, k + 12);
      }
      down.write(out);
      if (this.left > 0) return;
      this.down = null;
      idle.push(this);
      if (this.closeAfter) down.destroy();
    }
  }

  function onDownstream(this: net.Socket, n: number, buf: Buffer): boolean {
    const request = Buffer.from(buf.subarray(0, n));
    const c = request.indexOf(CLOSE);
    if (c >= 0) RENAMED.copy(request, c);
    const up = idle.pop() ?? new Upstream();
    up.send(this, request, c >= 0);
    return true;
  }

  function onRefused(this: net.Socket, n: number, buf: Buffer): boolean {
    const bytes = buf.subarray(0, n);
    for (let i = bytes.indexOf(CRLF2); i >= 0; i = bytes.indexOf(CRLF2, i + 4)) this.write(REFUSAL);
    return true;
  }

  parentPort!.on('message', (m: { fds: Int32Array; refuse: boolean }) => {
    const callback = m.refuse ? onRefused : onDownstream;
    for (const fd of m.fds) {
      const s = new net.Socket({ fd, readable: true, writable: true, onread: { buffer, callback } } as net.SocketConstructorOpts);
      s.on('error', () => {});
    }
  });
}

if (isMainThread) {
  const [proxyPort, refusePort, upstreamPort] = process.argv.slice(2).map(Number);
  if (!(proxyPort > 0) || !(refusePort > 0) || !(upstreamPort > 0)) {
    process.stderr.write('usage: h1-floor PROXY_PORT REFUSE_PORT UPSTREAM_PORT\n');
    process.exit(2);
  }
  mainThread({ proxyPort, refusePort, upstreamPort });
} else {
  workerThread(workerData as Setup);
}
