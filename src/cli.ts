/**
 * sluice start [--config FILE]   run the proxy (embedded default config without a file)
 * sluice validate FILE           check a config; print every error with its path
 * sluice capture-check           init container: does iptables capture work?
 * sluice inject                  add Sluice to Kubernetes manifests
 * sluice certs ca|issue          a test CA and SPIFFE workload certificates (src/tls/test-ca.ts)
 * sluice --version               print the version; sluice <command> --help: one command's usage
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { captureCheck } from './deploy/capture-check';
import { ConfigError, SluiceError } from './errors';
import { injectYaml } from './deploy/inject';
import { parseAddress } from './net/address';
import { defaultConfig, loadConfigFile, type SluiceConfig } from './config/config';
import { Sluice } from './main/sluice';
import { parseAppProbes, type AppProbe } from './main/app-probes';
import { flushLogs, log } from './log';
import { createCa, issueCert } from './tls/test-ca';

/** `sluice inject` wrote its output but passed some workloads through uninjected. */
const INJECT_SKIPPED_EXIT = 3;

/** Each command's usage, as `sluice <command> --help` prints it. */
const COMMAND_USAGE: Record<string, string> = {
  start: `  sluice start [--config FILE] [--health-address ADDR:PORT]
        run the proxy; without --config, the embedded default (capture outbound :15001,
        inbound :15006, admin 127.0.0.1:15000); --health-address also serves GET /ready there,
        and the application probes the inject command rewrote (env SLUICE_APP_PROBES)
`,
  validate: `  sluice validate FILE
        check a config file and print every error with its path
`,
  'capture-check': `  sluice capture-check [--port 15001] [--probe ADDR:PORT] [--proxy-uid 1337] [--timeout-ms 3000]
        check that iptables capture works (run by the init container before the proxy starts)
`,
  inject: `  sluice inject [-f FILE|-] [--image IMAGE] [--config-map NAME]
        add the capture init container and the proxy sidecar to Kubernetes manifests (stdout);
        exit 0: every workload injected (or opted out); 1: input unreadable or not YAML,
        nothing written; ${INJECT_SKIPPED_EXIT}: written, but some workloads could not be injected
        (each named on stderr, passed through unchanged)
`,
  certs: `  sluice certs ca --dir DIR [--trust-domain cluster.local] [--days 365]
        make a test CA (DIR/ca.pem, DIR/ca.key); not for production
  sluice certs issue --ca-dir DIR --spiffe spiffe://TD/ns/NS/sa/SA --out OUT [--days 1]
                     [--not-before ISO-TIME] [--not-after ISO-TIME] [--dns NAME]
        issue a workload certificate: OUT/cert.pem, OUT/key.pem and the CA as OUT/ca.pem
        (the files tls.certFile, tls.keyFile and tls.caFile name); needs the openssl command
`,
};

const USAGE = `usage:
${Object.values(COMMAND_USAGE).join('')}  sluice --version
        print the version
  sluice <command> --help
        print the usage of one command
`;

/** The version in package.json (two levels up from dist/src/cli.js, as in the image). */
function packageVersion(): string {
  const file = path.join(__dirname, '..', '..', 'package.json');
  const pkg: unknown = JSON.parse(readFileSync(file, 'utf8'));
  const version = typeof pkg === 'object' && pkg !== null ? (pkg as { version?: unknown }).version : undefined;
  if (typeof version !== 'string') throw new Error(`${file} has no version`);
  return version;
}

/** Options each command takes; the value says whether it takes an argument. */
const OPTIONS: Record<string, Record<string, boolean>> = {
  start: { '--config': true, '-c': true, '--health-address': true },
  validate: { '--config': true, '-c': true },
  'capture-check': { '--port': true, '--probe': true, '--proxy-uid': true, '--timeout-ms': true },
  inject: { '-f': true, '--file': true, '--image': true, '--config-map': true },
  certs: {
    '--dir': true, '--trust-domain': true, '--days': true, '--ca-dir': true, '--spiffe': true, '--out': true,
    '--not-before': true, '--not-after': true, '--dns': true,
  },
};

interface Flags { opts: Record<string, string>; rest: string[]; error?: string; help?: boolean }

function parseFlags(cmd: string, args: string[]): Flags {
  const known = OPTIONS[cmd] ?? {};
  const opts: Record<string, string> = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    let a = args[i];
    let value: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { value = a.slice(eq + 1); a = a.slice(0, eq); }
    if (value === undefined && (a === '--help' || a === '-h')) return { opts, rest, help: true };
    if (a in known) {
      if (value === undefined) {
        if (i + 1 >= args.length) return { opts, rest, error: `${a} needs a value` };
        value = args[++i];
      }
      opts[a === '-c' ? '--config' : a === '-f' ? '--file' : a] = value;
    } else if (a.startsWith('-') && a !== '-') {
      return { opts, rest, error: `unknown option ${a} for "${cmd}"` };
    } else {
      rest.push(a);
    }
  }
  return { opts, rest };
}

function intOption(flags: Flags, name: string, def: number, min: number, max: number): number {
  const v = flags.opts[name];
  if (v === undefined) return def;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${name}: "${v}" is not a number from ${min} to ${max}`);
  return Number(v);
}

class UsageError extends Error {}

function readInput(file: string): string {
  return readFileSync(file === '-' ? 0 : file, 'utf8');
}

function dateOption(flags: Flags, name: string): Date | undefined {
  const v = flags.opts[name];
  if (v === undefined) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new UsageError(`${name}: "${v}" is not a date and time (e.g. 2026-01-31T12:00:00Z)`);
  return d;
}

function certsCommand(flags: Flags): number {
  const [sub] = flags.rest;
  if (sub === 'ca') {
    const dir = flags.opts['--dir'];
    if (!dir) throw new UsageError('certs ca: --dir is required');
    const r = createCa({ dir, trustDomain: flags.opts['--trust-domain'], days: intOption(flags, '--days', 365, 1, 36500) });
    process.stdout.write(`CA certificate: ${r.certFile}\nCA key: ${r.keyFile} (keep it private; a test CA)\n`);
    return 0;
  }
  if (sub === 'issue') {
    const caDir = flags.opts['--ca-dir'];
    const out = flags.opts['--out'];
    const spiffe = flags.opts['--spiffe'];
    if (!caDir || !out) throw new UsageError('certs issue: --ca-dir and --out are required');
    if (!spiffe && !flags.opts['--dns']) throw new UsageError('certs issue: --spiffe is required');
    const r = issueCert({
      caDir, out, spiffe, dns: flags.opts['--dns'] ? [flags.opts['--dns']] : undefined,
      days: intOption(flags, '--days', 1, 1, 36500), notBefore: dateOption(flags, '--not-before'), notAfter: dateOption(flags, '--not-after'),
    });
    process.stdout.write(`certFile: ${r.certFile}\nkeyFile: ${r.keyFile}\ncaFile: ${r.caFile}\n`);
    return 0;
  }
  throw new UsageError(`certs: say "ca" or "issue"\n${COMMAND_USAGE.certs}`);
}

export async function main(argv: string[]): Promise<number | undefined> {
  const [cmd, ...args] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    if (cmd === 'help' && args[0] !== undefined) {
      if (!(args[0] in COMMAND_USAGE)) {
        process.stderr.write(`sluice: unknown command "${args[0]}"\n${USAGE}`);
        return 2;
      }
      process.stdout.write(`usage:\n${COMMAND_USAGE[args[0]]}`);
      return 0;
    }
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    let version: string;
    try {
      version = packageVersion();
    } catch (err) {
      process.stderr.write(`sluice: cannot read the version: ${(err as Error).message}\n`);
      return 1;
    }
    process.stdout.write(`sluice ${version}\n`);
    return 0;
  }
  if (!(cmd in OPTIONS)) {
    process.stderr.write(`sluice: unknown command "${cmd}"\n${USAGE}`);
    return 2;
  }
  const flags = parseFlags(cmd, args);
  if (flags.help) {
    process.stdout.write(`usage:\n${COMMAND_USAGE[cmd]}`);
    return 0;
  }
  if (flags.error) {
    process.stderr.write(`sluice: ${flags.error}\n${USAGE}`);
    return 2;
  }
  try {
    if (cmd === 'capture-check') {
      const result = await captureCheck({
        port: intOption(flags, '--port', 15001, 1, 65535),
        probe: flags.opts['--probe'],
        proxyUid: intOption(flags, '--proxy-uid', 1337, 0, 0x7fffffff),
        timeoutMs: intOption(flags, '--timeout-ms', 3000, 1, 600_000),
      });
      (result.ok ? process.stdout : process.stderr).write(`sluice capture-check: ${result.message}\n`);
      return result.ok ? 0 : 1;
    }
    if (cmd === 'certs') return certsCommand(flags);
    if (cmd === 'inject') {
      const file = flags.opts['--file'] ?? flags.rest[0] ?? '-';
      let text: string;
      try {
        text = readInput(file);
      } catch (err) {
        process.stderr.write(`sluice inject: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
        return 1;
      }
      const out = injectYaml(text, { image: flags.opts['--image'], configMap: flags.opts['--config-map'] });
      process.stdout.write(out.yaml);
      for (const s of out.skipped) process.stderr.write(`sluice inject: warning: skipped, passed through unchanged: ${s.message}\n`);
      const skipped = out.skipped.length ? `, ${out.skipped.length} skipped` : '';
      process.stderr.write(`sluice inject: ${out.injected} workload(s) injected${skipped}\n`);
      return out.skipped.length ? INJECT_SKIPPED_EXIT : 0;
    }
  } catch (err) {
    if (err instanceof UsageError) { process.stderr.write(`sluice: ${err.message}\n`); return 2; }
    if (err instanceof SluiceError) { process.stderr.write(`sluice ${cmd}: ${err.message}\n`); return 1; }
    throw err;
  }
  if (cmd === 'validate') {
    const file = flags.rest[0] ?? flags.opts['--config'];
    if (!file) { process.stderr.write(`sluice validate: a config file is required\n${USAGE}`); return 2; }
    try {
      loadConfigFile(file);
      process.stdout.write(`${file}: valid\n`);
      return 0;
    } catch (err) {
      if (err instanceof ConfigError) { process.stderr.write(`${err.message}\n`); return 1; }
      throw err;
    }
  }
  if (cmd === 'start') {
    const health = flags.opts['--health-address'];
    if (health !== undefined) {
      try { parseAddress(health); } catch (err) {
        process.stderr.write(`sluice: --health-address: ${(err as Error).message}\n`);
        return 2;
      }
    }
    let appProbes: Map<string, AppProbe> | undefined;
    if (process.env.SLUICE_APP_PROBES) {
      try { appProbes = parseAppProbes(process.env.SLUICE_APP_PROBES); } catch (err) {
        process.stderr.write(`sluice: ${(err as Error).message}\n`);
        return 2;
      }
      if (health === undefined && appProbes.size > 0) {
        process.stderr.write('sluice: SLUICE_APP_PROBES needs --health-address: the application probes are answered there\n');
        return 2;
      }
    }
    let config: SluiceConfig;
    try {
      config = flags.opts['--config'] ? loadConfigFile(flags.opts['--config']) : defaultConfig();
    } catch (err) {
      if (err instanceof ConfigError) { process.stderr.write(`${err.message}\n`); return 1; }
      throw err;
    }
    let sluice: Sluice | undefined;
    let stopRequested = false;
    let stopping = false;
    // Logging never holds the exit: log lines a reader does not take within a second are dropped.
    const exit = (code: number) => { void flushLogs(1000).finally(() => process.exit(code)); };
    // SIGTERM and POST /drain keep serving for drain.periodMs (the orchestrator is still routing
    // traffic here); SIGINT is someone at a terminal: no period.
    let periodMs: number | undefined;
    const stop = () => {
      stopRequested = true;
      if (stopping || !sluice) return; // during start-up: stop as soon as it is up
      stopping = true;
      const { drain } = sluice.currentConfig;
      const period = periodMs ?? drain.periodMs;
      log.info({ periodMs: period, timeoutMs: drain.timeoutMs }, 'draining');
      // a stop that cannot finish (a bug) must not leave a process that neither serves nor exits
      setTimeout(() => { log.error('stop did not finish 5 s after the drain timeout: exiting'); exit(1); }, period + drain.timeoutMs + 5000);
      sluice.stop(drain.timeoutMs, period).then(() => exit(0), (err) => { log.error({ err }, 'stop failed'); exit(1); });
    };
    const interrupt = () => { periodMs ??= 0; stop(); };
    // Installed before start-up (booting the workers takes a moment): a SIGTERM then still
    // means a clean stop with exit code 0, not death by signal.
    process.on('SIGTERM', stop);
    process.on('SIGINT', interrupt);
    try {
      sluice = await Sluice.start({
        config, configPath: flags.opts['--config'], healthAddress: flags.opts['--health-address'], appProbes, debugEndpoints: process.env.SLUICE_DEBUG_ENDPOINTS === '1', onStopRequest: stop,
      });
    } catch (err) {
      process.removeListener('SIGTERM', stop);
      process.removeListener('SIGINT', interrupt);
      process.stderr.write(`sluice: ${(err as Error).message}\n`);
      return 1;
    }
    if (stopRequested) stop();
    return undefined;
  }
  process.stderr.write(`sluice: unknown command "${cmd}"\n${USAGE}`);
  return 2;
}
