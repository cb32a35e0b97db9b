/**
 * Capture self-check, run by the init container right after the rules are
 * installed and before the proxy starts: listen on the outbound capture port,
 * connect to a probe destination as an ordinary (non-proxy) user, and check that
 * the connection arrives here with the probe as its original destination. If it
 * does not, traffic would bypass the proxy: say so and fail, so the pod does not
 * start half-protected.
 *
 * The default probe is this host's own first global IPv4 address on an unused
 * port: if capture is broken the connection stays on the host and is refused.
 */
import net from 'node:net';
import os from 'node:os';
import { loadNative } from '../net/native';
import { parseAddress } from '../net/address';

export interface CaptureCheckOptions {
  port: number;
  probe?: string;
  proxyUid: number;
  timeoutMs: number;
}

export interface CaptureCheckResult {
  ok: boolean;
  message: string;
}

function ownAddress(): string | null {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return null;
}

export async function captureCheck(opts: CaptureCheckOptions): Promise<CaptureCheckResult> {
  const native = loadNative();
  if (!native) return { ok: false, message: 'the native addon is not available: original destinations cannot be read' };
  if (process.getuid?.() === opts.proxyUid) {
    return { ok: false, message: `running as the proxy uid ${opts.proxyUid}, whose traffic is exempt from capture: run the check as another user` };
  }
  let probe: { host: string; port: number };
  if (opts.probe) {
    probe = parseAddress(opts.probe);
  } else {
    const own = ownAddress();
    if (!own) return { ok: false, message: 'no global IPv4 address to probe; pass --probe ADDR:PORT' };
    probe = { host: own, port: 15999 };
  }
  const server = net.createServer({ pauseOnConnect: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '0.0.0.0', port: opts.port }, () => resolve());
    });
  } catch (err) {
    return { ok: false, message: `cannot listen on the capture port ${opts.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  try {
    const arrived = new Promise<{ address: string; port: number } | null>((resolve) => {
      server.once('connection', (sock) => {
        const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
        let dst: { address: string; port: number } | null = null;
        try { dst = fd >= 0 ? native.originalDst(fd) : null; } catch { dst = null; }
        sock.destroy();
        resolve(dst);
      });
    });
    const client = net.connect({ host: probe.host, port: probe.port });
    const outcome = await Promise.race([
      arrived.then((dst) => ({ kind: 'arrived' as const, dst })),
      new Promise<{ kind: 'error'; err: string }>((r) => client.once('error', (e: NodeJS.ErrnoException) => r({ kind: 'error', err: e.code ?? e.message }))),
      new Promise<{ kind: 'timeout' }>((r) => setTimeout(() => r({ kind: 'timeout' }), opts.timeoutMs).unref()),
    ]);
    client.destroy();
    const where = `${probe.host}:${probe.port}`;
    if (outcome.kind === 'arrived') {
      if (outcome.dst && outcome.dst.address === probe.host && outcome.dst.port === probe.port) {
        return { ok: true, message: `capture works: a connection to ${where} arrived at :${opts.port} with its original destination` };
      }
      return { ok: false, message: `a connection to ${where} arrived at :${opts.port} but its original destination reads ${outcome.dst ? `${outcome.dst.address}:${outcome.dst.port}` : 'as none'}` };
    }
    if (outcome.kind === 'error') return { ok: false, message: `capture is not working: the probe connection to ${where} was not redirected to :${opts.port} (${outcome.err})` };
    return { ok: false, message: `capture is not working: the probe connection to ${where} did not arrive at :${opts.port} within ${opts.timeoutMs} ms` };
  } finally {
    server.close();
  }
}
